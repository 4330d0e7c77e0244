package secured_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/internal/syncbuf"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/fresh"
	"github.com/cloister-dev/cloister/trusted/secured"
	"github.com/cloister-dev/cloister/wire"
)

// standIn stands in for the coordinator group on the bus, for the
// runtime's side of freshness: it grants service "meter" (it checks no
// evidence: the coordinator's own tests do), with freshness, and keeps the
// registers, answering Checkpoint and FreshRead as the group does (MAC
// checked, answers signed with the key the grant names).
type standIn struct {
	t        testing.TB
	priv     ed25519.PrivateKey
	fkey     []byte
	addrKey  []byte
	interval string

	mu   sync.Mutex
	regs map[string]provision.Register
	// forge, when set, makes answers to Checkpoint and FreshRead carry a
	// bad signature (a host forging them).
	forge bool
}

const meterSecured = "meter.readings"

func newStandIn(t testing.TB, b *bus.Bus, interval string) *standIn {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	g := &standIn{t: t, priv: priv, fkey: bytes.Repeat([]byte{0xf0}, 32), addrKey: bytes.Repeat([]byte{0xad}, 32),
		interval: interval, regs: map[string]provision.Register{}}
	handle := func(address string, f func(body []byte) (any, int, string)) {
		if _, err := b.Consumer(address, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
			v, code, msg := f(m.Body())
			if code != 0 {
				m.Fail(code, msg)
				return
			}
			body, err := provision.Encode(v)
			if err != nil {
				t.Error(err)
			}
			m.Reply(body)
		})); err != nil {
			t.Fatal(err)
		}
	}
	handle(provision.AddressChallenge, func([]byte) (any, int, string) {
		n := make([]byte, provision.NonceSize)
		rand.Read(n)
		return provision.Challenge{Nonce: n}, 0, ""
	})
	handle(provision.AddressJoin, g.join)
	handle(provision.AddressCheckpoint, g.checkpoint)
	handle(provision.AddressFreshRead, g.read)
	return g
}

func (g *standIn) join(body []byte) (any, int, string) {
	var req provision.JoinRequest
	if err := provision.Decode(body, &req); err != nil {
		return nil, provision.CodeBadRequest, err.Error()
	}
	pub, err := secure.ParsePublicKey(req.PublicKey)
	if err != nil {
		return nil, provision.CodeBadRequest, err.Error()
	}
	hash := sha256.Sum256([]byte("stand-in manifest"))
	grant := provision.Grant{Service: req.Service, ManifestHash: hash[:], ManifestVersion: 1, Epoch: 1,
		Addresses: []provision.AddressGrant{
			{Address: meterSecured, Secured: true, Consume: true, Keys: []provision.EpochKey{{Epoch: 1, Key: g.addrKey}}},
			{Address: "meter.total", Consume: true},
		},
		CoordinatorKey: g.priv.Public().(ed25519.PublicKey),
		Freshness:      &provision.FreshnessGrant{Key: g.fkey, Checkpoint: g.interval, Group: bytes.Repeat([]byte{0x99}, 32)},
	}
	plain, _ := provision.Encode(grant)
	sealed, err := secure.SealTo(pub, provision.GrantInfo(req.Service, req.Nonce), plain)
	if err != nil {
		return nil, provision.CodeInternal, err.Error()
	}
	return provision.JoinResponse{Grant: sealed}, 0, ""
}

func (g *standIn) checkpoint(body []byte) (any, int, string) {
	var c provision.Checkpoint
	if err := provision.Decode(body, &c); err != nil {
		return nil, provision.CodeBadRequest, err.Error()
	}
	subject := provision.ServiceSubject(c.Service, c.Instance)
	if !provision.CheckFreshnessMAC(g.fkey, provision.CheckpointMessage(subject, c.Counter, c.Digest, c.Nonce), c.MAC) {
		return nil, provision.CodeUnauthorized, "bad MAC"
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.regs[subject]
	if c.Counter < r.Counter || (c.Counter == r.Counter && !bytes.Equal(c.Digest, r.Digest)) {
		return nil, provision.CodeConflict, "stale or forked checkpoint for " + subject
	}
	g.regs[subject] = provision.Register{Subject: subject, Counter: c.Counter, Digest: c.Digest}
	return g.sign(subject, c.Counter, c.Digest, c.Nonce), 0, ""
}

func (g *standIn) read(body []byte) (any, int, string) {
	var f provision.FreshRead
	if err := provision.Decode(body, &f); err != nil {
		return nil, provision.CodeBadRequest, err.Error()
	}
	subject := provision.ServiceSubject(f.Service, f.Instance)
	if !provision.CheckFreshnessMAC(g.fkey, provision.FreshReadMessage(subject, f.Nonce), f.MAC) {
		return nil, provision.CodeUnauthorized, "bad MAC"
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.regs[subject]
	return g.sign(subject, r.Counter, r.Digest, f.Nonce), 0, ""
}

// sign answers under g.mu.
func (g *standIn) sign(subject string, counter uint64, digest, nonce []byte) provision.Registered {
	sig := ed25519.Sign(g.priv, provision.RegisteredMessage(subject, counter, digest, nonce))
	if g.forge {
		sig[0] ^= 1
	}
	return provision.Registered{Subject: subject, Counter: counter, Digest: digest, Nonce: nonce, Signature: sig}
}

// meterApp counts the readings it was sent in protected storage.
func meterApp() *trusted.App {
	app := trusted.New(trusted.Options{Layer: secured.Layer(secured.Options{Service: "meter", JoinTimeout: 10 * time.Second}), Workers: 8})
	var mu sync.Mutex
	add := func(ctx context.Context, c *trusted.Call) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		v, _, err := c.Get(ctx, "total")
		if err != nil {
			return 0, err
		}
		n, _ := strconv.Atoi(string(v))
		n += len(c.Body())
		return n, c.Put(ctx, "total", []byte(strconv.Itoa(n)))
	}
	app.HandleFunc(meterSecured, func(ctx context.Context, c *trusted.Call) {
		n, err := add(ctx, c)
		if err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(nil, []byte(strconv.Itoa(n)))
	})
	app.HandleFunc("meter.total", func(ctx context.Context, c *trusted.Call) {
		v, _, err := c.Get(ctx, "total")
		if err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(nil, v)
	})
	return app
}

type meterRig struct {
	t      *testing.T
	bus    *bus.Bus
	root   *attest.SimulationRoot
	dir    string
	logs   *syncbuf.Buffer
	logger *slog.Logger
	e      *enclave.Enclave
	fs     *enclave.FileStore
	cons   []*bus.Consumer
}

func newMeterRig(t *testing.T) *meterRig {
	r := &meterRig{t: t, dir: t.TempDir(), logs: &syncbuf.Buffer{}}
	r.logger = slog.New(slog.NewTextHandler(io.MultiWriter(r.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	if r.bus, err = bus.New(bus.WithLogger(r.logger)); err != nil {
		t.Fatal(err)
	}
	if r.root, err = attest.NewEphemeralSimulationRoot(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *meterRig) start() error {
	fs, err := enclave.NewFileStore(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	e, err := enclave.New(enclave.Config{Name: "meter", Backend: enclave.NewInProc(meterApp().Serve), Bus: r.bus, Store: fs,
		Simulation: r.root, Logger: r.logger, StartTimeout: 20 * time.Second, RestartBackoff: time.Hour})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		fs.Close()
		return err
	}
	for _, a := range e.Addresses() {
		c, err := r.bus.Consumer(a, e)
		if err != nil {
			r.t.Fatal(err)
		}
		r.cons = append(r.cons, c)
	}
	r.e, r.fs = e, fs
	r.t.Cleanup(r.stop)
	return nil
}

func (r *meterRig) stop() {
	if r.e == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range r.cons {
		c.Unregister(ctx)
	}
	r.cons = nil
	r.e.Stop(ctx)
	r.fs.Close()
	r.e = nil
}

func (r *meterRig) send(body []byte) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := r.bus.Request(ctx, meterSecured, body, bus.Timeout(20*time.Second))
	if err != nil {
		return "", err
	}
	return string(m.Body()), nil
}

// reading seals a reading for meter.readings (as a sender holding the
// address key does) and returns the envelope; the reply is sealed, so the
// test reads the total through meter.total.
func reading(t *testing.T, g *standIn, s **secure.Sealer, body string) []byte {
	t.Helper()
	if *s == nil {
		k := secure.AddressKey{Address: meterSecured, Epoch: 1}
		copy(k.Key[:], g.addrKey)
		var err error
		if *s, err = secure.NewSealer(k); err != nil {
			t.Fatal(err)
		}
	}
	env, _, err := (*s).Seal(wire.KindRequest, nil, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func (r *meterRig) total() string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := r.bus.Request(ctx, "meter.total", nil, bus.Timeout(20*time.Second))
	if err != nil {
		r.t.Fatal(err)
	}
	return string(m.Body())
}

// TestFreshnessRefusesRollbackAndReplay: a service whose grant carries
// freshness (interval 0) registers its state; restarted from an older copy
// of its state directory it refuses to start, naming the counters; from
// the current copy it starts, and readings captured before are refused as
// replays — the replay windows are part of every checkpoint.
func TestFreshnessRefusesRollbackAndReplay(t *testing.T) {
	r := newMeterRig(t)
	g := newStandIn(t, r.bus, "0s")
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	var sealer *secure.Sealer
	first := reading(t, g, &sealer, "aaa")
	if _, err := r.send(first); err != nil {
		t.Fatal(err)
	}
	if got := r.total(); got != "3" {
		t.Fatalf("total %q", got)
	}
	old := filepath.Join(t.TempDir(), "old")
	r.stop()
	copyTree(t, r.dir, old)

	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	second := reading(t, g, &sealer, "bbbb")
	if _, err := r.send(second); err != nil {
		t.Fatal(err)
	}
	if got := r.total(); got != "7" {
		t.Fatalf("total %q", got)
	}
	r.stop()
	current := filepath.Join(t.TempDir(), "current")
	copyTree(t, r.dir, current)

	// The host restores the older state: refused.
	copyTree(t, old, r.dir)
	err := r.start()
	if err == nil || !strings.Contains(err.Error(), "rolled back") || !strings.Contains(err.Error(), "registered counter") {
		t.Fatalf("start from rolled-back state: %v", err)
	}
	if !strings.Contains(r.logs.String(), "refusing to start from rolled-back state") {
		t.Fatal("refusal not logged")
	}

	// The current state starts; the captured readings are replays.
	copyTree(t, current, r.dir)
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	for _, env := range [][]byte{first, second} {
		_, err := r.send(env)
		var re *bus.ReplyError
		if !errors.As(err, &re) || !strings.Contains(re.Message, secured.ReasonReplay) {
			t.Fatalf("replayed reading: %v", err)
		}
	}
	if got := r.total(); got != "7" {
		t.Fatalf("total after replays %q", got)
	}
	rej, err := r.e.Rejections(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rej[meterSecured][secured.ReasonReplay] != 2 || rej[secured.FreshnessAddress][secured.CountCheckpoints] == 0 {
		t.Fatalf("rejections: %v", rej)
	}
}

// TestRegistryChecksAnswers: answers the grant's coordinator key did not
// sign are refused; 503 and 409 map to the tracker's errors.
func TestRegistryChecksAnswers(t *testing.T) {
	b, err := bus.New()
	if err != nil {
		t.Fatal(err)
	}
	g := newStandIn(t, b, "0s")
	reg := &secured.Registry{Requester: busRequester{b}, Service: "meter", Instance: 0, Key: g.fkey,
		CoordinatorKey: g.priv.Public().(ed25519.PublicKey)}
	ctx := context.Background()
	if err := reg.Register(ctx, 1, bytes.Repeat([]byte{1}, 32)); err != nil {
		t.Fatal(err)
	}
	if c, d, err := reg.Registered(ctx); err != nil || c != 1 || !bytes.Equal(d, bytes.Repeat([]byte{1}, 32)) {
		t.Fatalf("registered: %d %x %v", c, d, err)
	}
	if err := reg.Register(ctx, 1, bytes.Repeat([]byte{2}, 32)); !errors.Is(err, fresh.ErrConflict) {
		t.Fatalf("a fork's checkpoint: %v", err)
	}
	g.mu.Lock()
	g.forge = true
	g.mu.Unlock()
	if _, _, err := reg.Registered(ctx); !errors.Is(err, secured.ErrBadRegistered) {
		t.Fatalf("forged answer: %v", err)
	}
	bad := *reg
	bad.Key = bytes.Repeat([]byte{0}, 32)
	if _, _, err := bad.Registered(ctx); err == nil || errors.Is(err, fresh.ErrUnavailable) {
		t.Fatalf("a read with the wrong key: %v", err)
	}
}

// busRequester requests on the bus directly (what the host does for the
// runtime's Request OCALL).
type busRequester struct{ b *bus.Bus }

func (r busRequester) Request(ctx context.Context, address string, headers map[string]string, body []byte, timeout time.Duration) (*trusted.Response, error) {
	m, err := r.b.Request(ctx, address, body, bus.Timeout(timeout))
	if err != nil {
		var re *bus.ReplyError
		if errors.As(err, &re) && re.Failure == bus.FailureRecipient {
			return nil, &trusted.RequestError{Address: address, Failure: wire.FailureRecipient, Code: re.Code, Message: re.Message}
		}
		return nil, err
	}
	return &trusted.Response{Body: m.Body()}, nil
}

func (r busRequester) Evidence(ctx context.Context, reportData [64]byte) (*trusted.Evidence, error) {
	return nil, trusted.ErrNoEvidence
}

// copyTree copies a state directory (the host keeping an old copy).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	os.RemoveAll(to)
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			copyTree(t, filepath.Join(from, e.Name()), filepath.Join(to, e.Name()))
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
