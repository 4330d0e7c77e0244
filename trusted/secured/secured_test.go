package secured_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/coordinator"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/internal/syncbuf"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/secured"
	"github.com/cloister-dev/cloister/wire"
)

// clientOf names the client of a client-session call ("" for others).
func clientOf(c *trusted.Call) string {
	name, _ := secured.Client(c)
	return name
}

// The secured-address tests run the real coordinator and two trusted
// services, all on the inproc backend, on one in-process bus. The
// coordinator verifies simulated evidence signed by a platform key made for
// the test.

var (
	idAlpha = bytes.Repeat([]byte{0xaa}, 32)
	idBeta  = bytes.Repeat([]byte{0xbb}, 32)
	idRogue = bytes.Repeat([]byte{0xcc}, 32)
	// sensorKey is the credential of the manifest's client "sensor-1".
	sensorKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x5e}, ed25519.SeedSize))
)

func testManifest(owner ed25519.PublicKey, allowSim bool) string {
	return fmt.Sprintf(`
version: 1
owner:
  public_key: %s
policy:
  allow_simulation: %t
services:
  alpha:
    identities: [{mrenclave: %x}]
    debug: true
    secrets:
      token: {generate: 32}
  beta:
    identities: [{mrenclave: %x}]
    debug: true
  tester: {}
clients:
  sensor-1: {public_key: %s}
addresses:
  sec.echo:     {secured: true, consume: [alpha], send: [beta]}
  sec.news:     {secured: true, consume: [alpha], publish: [beta]}
  sec.client:   {clients: true, consume: [alpha]}
  alpha.count:  {consume: [alpha], send: [tester]}
  alpha.secret: {consume: [alpha], send: [tester]}
  alpha.put:    {consume: [alpha], send: [tester]}
  alpha.get:    {consume: [alpha], send: [tester]}
  beta.ask:     {consume: [beta], send: [tester]}
  beta.tell:    {consume: [beta], send: [tester]}
  beta.stray:   {consume: [beta], send: [tester]}
  beta.bench:   {consume: [beta], send: [tester]}
  plain.echo:   {consume: [alpha], send: [beta]}
  sec.bench:    {secured: true, consume: [alpha], send: [beta]}
`, base64.StdEncoding.EncodeToString(owner), allowSim, idAlpha, idBeta,
		base64.StdEncoding.EncodeToString(sensorKey.Public().(ed25519.PublicKey)))
}

// counters counts handler runs of alpha's secured addresses.
type counters struct {
	mu   sync.Mutex
	runs map[string]int
	last map[string]string
}

func (c *counters) saw(address, body string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.runs[address]++
	c.last[address] = body
}

// first reports whether it is called for key the first time.
func (c *counters) first(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.runs[key]++
	return c.runs[key] == 1
}

func (c *counters) get(address string) (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[address], c.last[address]
}

func alphaApp(service string, seen *counters) *trusted.App {
	app := trusted.New(trusted.Options{Layer: secured.Layer(secured.Options{Service: service, JoinTimeout: 10 * time.Second}), Workers: 40})
	app.HandleFunc("sec.echo", func(ctx context.Context, c *trusted.Call) {
		seen.saw(c.Address(), string(c.Body()))
		if !secured.Sealed(c) {
			c.Fail(500, "not secured")
			return
		}
		c.Reply(map[string]string{"echoed": "yes"}, append([]byte("echo: "), c.Body()...))
	})
	app.HandleFunc("sec.news", func(ctx context.Context, c *trusted.Call) {
		seen.saw(c.Address(), string(c.Body()))
	})
	app.HandleFunc("sec.client", func(ctx context.Context, c *trusted.Call) {
		seen.saw(c.Address(), clientOf(c)+": "+string(c.Body()))
		if string(c.Body()) == "fail once" && seen.first(c.Address()+"/failed") {
			c.Fail(503, "storage unavailable")
			return
		}
		if c.ExpectsReply() {
			c.Reply(nil, append([]byte("client echo: "+clientOf(c)+": "), c.Body()...))
		}
	})
	echo := func(ctx context.Context, c *trusted.Call) { c.Reply(nil, append([]byte("echo: "), c.Body()...)) }
	app.HandleFunc("plain.echo", echo)
	app.HandleFunc("sec.bench", echo)
	app.HandleFunc("alpha.count", func(ctx context.Context, c *trusted.Call) {
		n, _ := seen.get(c.Header("address"))
		c.Reply(map[string]string{"epoch": strconv.Itoa(int(secured.Epoch(c.Runtime)))}, []byte(strconv.Itoa(n)))
	})
	app.HandleFunc("alpha.secret", func(ctx context.Context, c *trusted.Call) {
		s, ok := secured.Secret(c.Runtime, "token")
		if !ok {
			c.Fail(404, "no secret")
			return
		}
		c.Reply(nil, []byte(strconv.Itoa(len(s))))
	})
	return app
}

func betaApp() *trusted.App {
	app := trusted.New(trusted.Options{Layer: secured.Layer(secured.Options{Service: "beta", JoinTimeout: 10 * time.Second}), Workers: 40})
	app.HandleFunc("beta.ask", func(ctx context.Context, c *trusted.Call) {
		r, err := c.Request(ctx, "sec.echo", map[string]string{"q": "1"}, c.Body(), 5*time.Second)
		if err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(nil, []byte(r.Headers["echoed"]+"|"+string(r.Body)))
	})
	app.HandleFunc("beta.tell", func(ctx context.Context, c *trusted.Call) {
		if err := c.Publish(ctx, "sec.news", nil, c.Body()); err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(nil, []byte("told"))
	})
	app.HandleFunc("beta.bench", func(ctx context.Context, c *trusted.Call) {
		n, _ := strconv.Atoi(c.Header("n"))
		body := make([]byte, 1024)
		var wg sync.WaitGroup
		var left atomic.Int64
		left.Store(int64(n))
		var failed atomic.Int64
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for left.Add(-1) >= 0 {
					if _, err := c.Request(ctx, c.Header("to"), nil, body, 5*time.Second); err != nil {
						failed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if failed.Load() > 0 {
			c.Fail(500, fmt.Sprintf("%d requests failed", failed.Load()))
			return
		}
		c.Reply(nil, nil)
	})
	app.HandleFunc("beta.stray", func(ctx context.Context, c *trusted.Call) {
		// beta may send to sec.echo but not publish on it, nor send to
		// sec.news.
		e1 := c.Publish(ctx, "sec.echo", nil, c.Body())
		e2 := c.Send(ctx, "sec.news", nil, c.Body())
		if errors.Is(e1, secured.ErrNotAllowed) && errors.Is(e2, secured.ErrNotAllowed) {
			c.Reply(nil, []byte("refused"))
			return
		}
		c.Fail(500, fmt.Sprintf("not refused: %v / %v", e1, e2))
	})
	return app
}

// logSink keeps every host log line.
type logSink = syncbuf.Buffer

type world struct {
	t       testing.TB
	bus     *bus.Bus
	root    *attest.SimulationRoot // signs every enclave's evidence, roots its seal keys
	owner   ed25519.PrivateKey
	hash    [32]byte
	logs    *logSink
	logger  *slog.Logger
	enclave map[string]*enclave.Enclave
	deaf    map[string]bool // enclaves that do not hear epoch notices
}

func newWorld(t testing.TB, allowSim bool) *world { return newWorldWith(t, allowSim, "") }

// newWorldWith is newWorld with more manifest sections (before the rest).
func newWorldWith(t testing.TB, allowSim bool, sections string) *world {
	t.Helper()
	w := &world{t: t, logs: &logSink{}, enclave: map[string]*enclave.Enclave{}, deaf: map[string]bool{}}
	w.logger = slog.New(slog.NewTextHandler(io.MultiWriter(w.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := bus.New(bus.WithLogger(w.logger))
	if err != nil {
		t.Fatal(err)
	}
	w.bus = b
	if w.root, err = attest.NewEphemeralSimulationRoot(); err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	w.owner = priv
	w.start("coordinator", coordinator.NewApp(coordinator.Options{SimPlatformKeys: []*ecdsa.PublicKey{w.root.PlatformPublicKey()}}, trusted.Options{}), bytes.Repeat([]byte{0x11}, 32))
	m, err := manifestyaml.Parse([]byte(sections + testManifest(pub, allowSim)))
	if err != nil {
		t.Fatal(err)
	}
	st := w.request(provision.AddressManifestSet, mustEncode(t, provision.ManifestSet{Manifest: m.Canonical()}))
	var status provision.Status
	if err := provision.Decode(st, &status); err != nil {
		t.Fatal(err)
	}
	h, _ := hex.DecodeString(status.ManifestHash)
	copy(w.hash[:], h)
	return w
}

// connect is the client sensor-1, pinned to the world's first manifest,
// trusting the world's coordinator and simulation root.
func (w *world) connect(ctx context.Context) (*client.Client, error) {
	var coord [32]byte
	copy(coord[:], bytes.Repeat([]byte{0x11}, 32))
	return client.Connect(ctx, w.bus, client.Options{
		CoordinatorPolicy: attest.Policy{MREnclaves: [][32]byte{coord}, AllowDebug: true},
		ManifestHash:      w.hash, AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{w.root.PlatformPublicKey()}, Logger: w.logger,
		Credential: secure.Credential{Name: "sensor-1", Key: sensorKey},
	})
}

// channel returns service's client-channel key, as the coordinator
// serves it, and the channel's info.
func (w *world) channel(service string) (*secure.PublicKey, []byte) {
	w.t.Helper()
	var sk provision.ServiceKeyResponse
	if err := provision.Decode(w.request(provision.AddressServiceKey, mustEncode(w.t, provision.ServiceKeyRequest{Service: service})), &sk); err != nil {
		w.t.Fatal(err)
	}
	pub, err := secure.ParsePublicKey(sk.PublicKey)
	if err != nil {
		w.t.Fatal(err)
	}
	return pub, secure.ChannelInfo(service, w.hash)
}

func mustEncode(t testing.TB, v any) []byte {
	b, err := provision.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// start hosts app on the bus as an inproc enclave claiming mrenclave.
func (w *world) start(name string, app *trusted.App, mrenclave []byte) error {
	t := w.t
	t.Helper()
	var id attest.SimIdentity
	copy(id.MREnclave[:], mrenclave)
	id.Debug = true
	iss := w.root.Issuer(id)
	store, err := enclave.NewFileStore(tempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	e, err := enclave.New(enclave.Config{Name: name, Backend: enclave.NewInProc(app.Serve), Bus: w.bus, Store: store,
		Issuer: iss, Simulation: w.root, Logger: w.logger, StartTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		return err
	}
	for _, a := range e.Addresses() {
		if a == provision.AddressEpoch && w.deaf[name] {
			continue
		}
		if _, err := w.bus.Consumer(a, e); err != nil {
			t.Fatal(err)
		}
	}
	w.enclave[name] = e
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Stop(ctx)
	})
	return nil
}

func (w *world) request(address string, body []byte, headers ...string) []byte {
	w.t.Helper()
	m, err := w.try(address, body, headers...)
	if err != nil {
		w.t.Fatalf("request %s: %v", address, err)
	}
	return m.Body()
}

func (w *world) try(address string, body []byte, headers ...string) (*bus.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := []bus.DeliveryOption{bus.Timeout(10 * time.Second)}
	if len(headers) > 0 {
		h := bus.Headers{}
		for i := 0; i+1 < len(headers); i += 2 {
			h[headers[i]] = headers[i+1]
		}
		opts = append(opts, bus.WithHeaders(h))
	}
	return w.bus.Request(ctx, address, body, opts...)
}

// count asks alpha how often the handler of address ran, and its epoch.
func (w *world) count(address string) (int, string) {
	w.t.Helper()
	m, err := w.try("alpha.count", nil, "address", address)
	if err != nil {
		w.t.Fatal(err)
	}
	n, _ := strconv.Atoi(string(m.Body()))
	return n, m.Headers()["epoch"]
}

// rejections reads alpha's rejection counters through the host's health.
func (w *world) rejections(name string) map[string]map[string]uint64 {
	w.t.Helper()
	r, err := w.enclave[name].Rejections(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

func newMarker() string {
	var b [12]byte
	rand.Read(b[:])
	return "MARKER-" + hex.EncodeToString(b[:])
}

func TestSecuredAddresses(t *testing.T) {
	w := newWorld(t, true)
	seen := &counters{runs: map[string]int{}, last: map[string]string{}}
	if err := w.start("alpha", alphaApp("alpha", seen), idAlpha); err != nil {
		t.Fatal(err)
	}
	if err := w.start("beta", betaApp(), idBeta); err != nil {
		t.Fatal(err)
	}

	// Capture every secured payload the bus carries.
	var captured sync.Map // address → [][]byte
	var capMu sync.Mutex
	capture := func(address string) {
		if _, err := w.bus.Consumer(address, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
			capMu.Lock()
			defer capMu.Unlock()
			v, _ := captured.Load(address)
			l, _ := v.([][]byte)
			captured.Store(address, append(l, bytes.Clone(m.Body())))
		})); err != nil {
			t.Fatal(err)
		}
	}
	capture("sec.news") // a publish reaches every consumer

	marker := newMarker()
	// Request-reply between the two enclaves on a secured address.
	got := string(w.request("beta.ask", []byte(marker)))
	if got != "yes|echo: "+marker {
		t.Fatalf("beta.ask: %q", got)
	}
	if n, last := seen.get("sec.echo"); n != 1 || last != marker {
		t.Fatalf("alpha's handler saw %d messages, last %q", n, last)
	}
	// A publish between them.
	if got := string(w.request("beta.tell", []byte(marker+"-news"))); got != "told" {
		t.Fatal(got)
	}
	testenv.WaitFor(w.t.Context(), w.t, "the publish", func() bool { n, _ := w.count("sec.news"); return n == 1 })
	capMu.Lock()
	v, _ := captured.Load("sec.news")
	news := v.([][]byte)
	capMu.Unlock()
	if len(news) != 1 || bytes.Contains(news[0], []byte(marker)) {
		t.Fatalf("captured publish: %d messages, marker in clear: %v", len(news), bytes.Contains(news[0], []byte(marker)))
	}
	env := news[0]

	// Secrets reach the handler.
	if got := string(w.request("alpha.secret", nil)); got != "32" {
		t.Fatalf("secret length %q", got)
	}
	// Rights are enforced inside the enclave.
	if got := string(w.request("beta.stray", []byte(marker))); got != "refused" {
		t.Fatal(got)
	}

	// Forged, replayed, tampered and mislabelled messages: each rejected
	// and counted, and the handler never runs.
	ctx := context.Background()
	if err := w.bus.Publish(ctx, "sec.news", env); err != nil { // replay
		t.Fatal(err)
	}
	// A bit flipped in flight in the ciphertext of a fresh envelope.
	var tamper atomic.Bool
	w.bus.AddOutboundInterceptor(func(ctx context.Context, ev *bus.Event) error {
		if ev.Envelope.Address == "sec.news" && tamper.CompareAndSwap(true, false) {
			b := bytes.Clone(ev.Envelope.Body)
			b[len(b)-20] ^= 0x04
			ev.Envelope.Body = b
		}
		return nil
	})
	tamper.Store(true)
	if got := string(w.request("beta.tell", []byte(marker+"-tampered"))); got != "told" {
		t.Fatal(got)
	}
	if err := w.bus.Publish(ctx, "sec.news", []byte("plaintext from a regular service")); err != nil {
		t.Fatal(err)
	}
	_, err := w.try("sec.echo", env) // a genuine publish envelope delivered as a request
	var re *bus.ReplyError
	if !errors.As(err, &re) || re.Code != wire.CodeRejected || !strings.Contains(re.Message, "auth") && !strings.Contains(re.Message, "wrong-kind") {
		t.Fatalf("publish envelope as a request: %v", err)
	}
	_, err = w.try("sec.echo", []byte("forged"))
	if !errors.As(err, &re) || re.Code != wire.CodeRejected || !strings.Contains(re.Message, "malformed") {
		t.Fatalf("forged request: %v", err)
	}
	testenv.WaitFor(w.t.Context(), w.t, "the rejections", func() bool {
		r := w.rejections("alpha")["sec.news"]
		return r[secured.ReasonReplay] == 1 && r[secured.ReasonAuth] == 1 && r[secured.ReasonMalformed] == 1
	})
	if r := w.rejections("alpha")["sec.echo"]; r[secured.ReasonMalformed] != 1 || r[secured.ReasonAuth]+r[secured.ReasonWrongKind] != 1 {
		t.Fatalf("sec.echo rejections %v", r)
	}
	if n, _ := w.count("sec.news"); n != 1 {
		t.Fatalf("the sec.news handler ran %d times", n)
	}
	if n, _ := w.count("sec.echo"); n != 1 {
		t.Fatalf("the sec.echo handler ran %d times", n)
	}

	// Client channel: a client seals to alpha's attested channel key.
	pub, info := w.channel("alpha")
	cs, err := secure.NewClientSession(pub, info, secure.Credential{Name: "sensor-1", Key: sensorKey}, secure.ClientSessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seq, req, err := cs.Seal([]byte(marker + "-client"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := w.try("sec.client", req)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(m.Body(), []byte(marker)) {
		t.Fatal("client reply in clear")
	}
	pt, err := cs.OpenReply(seq, m.Body())
	if err != nil || string(pt) != "client echo: sensor-1: "+marker+"-client" {
		t.Fatalf("client reply %q, %v", pt, err)
	}
	if _, err := w.try("sec.client", req); !errors.As(err, &re) || re.Code != wire.CodeAlreadyHandled { // replayed client request
		t.Fatalf("replayed client request: %v", err)
	}
	if _, err := w.try("sec.client", []byte(marker)); !errors.As(err, &re) || re.Code != wire.CodeRejected {
		t.Fatalf("plaintext on a client address: %v", err)
	}
	// A failed handler releases its message: the same bytes retried are
	// handled, not refused as a replay.
	seq, req, _ = cs.Seal([]byte("fail once"))
	if _, err := w.try("sec.client", req); !errors.As(err, &re) || re.Code != 503 {
		t.Fatalf("first try: %v", err)
	}
	if m, err = w.try("sec.client", req); err != nil {
		t.Fatalf("retry after a failure: %v", err)
	}
	if pt, err := cs.OpenReply(seq, m.Body()); err != nil || string(pt) != "client echo: sensor-1: fail once" {
		t.Fatalf("retry's reply %q %v", pt, err)
	}
	// Forgeries: a one-shot v1 request (no credential), a client the
	// manifest does not name, and sensor-1's name with another key.
	_, v1, _ := secure.SealRequest(pub, info, []byte("forged v1"))
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	for _, cred := range []secure.Credential{{Name: "sensor-9", Key: stranger}, {Name: "sensor-1", Key: stranger}} {
		fs, err := secure.NewClientSession(pub, info, cred, secure.ClientSessionOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, forged, _ := fs.Seal([]byte("forged reading"))
		if _, err := w.try("sec.client", forged); !errors.As(err, &re) || re.Code != wire.CodeRejected || !strings.Contains(re.Message, "unauthenticated") {
			t.Fatalf("forged client %s: %v", cred.Name, err)
		}
	}
	if _, err := w.try("sec.client", v1); !errors.As(err, &re) || re.Code != wire.CodeRejected {
		t.Fatalf("v1 request: %v", err)
	}
	// A message of a session the enclave does not hold.
	gone, _ := secure.NewClientSession(pub, info, secure.Credential{Name: "sensor-1", Key: sensorKey}, secure.ClientSessionOptions{})
	gone.Seal([]byte("handshake, never delivered"))
	_, lost, _ := gone.Seal([]byte("data"))
	if _, err := w.try("sec.client", lost); !errors.As(err, &re) || re.Code != wire.CodeSessionUnknown {
		t.Fatalf("unknown session: %v", err)
	}
	// A one-way client send (a sensor), in the same session.
	_, sent, _ := cs.Seal([]byte("sensor"))
	if err := w.bus.Send(ctx, "sec.client", sent); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(w.t.Context(), w.t, "the sensor's send", func() bool { _, last := seen.get("sec.client"); return last == "sensor-1: sensor" })
	r := w.rejections("alpha")["sec.client"]
	if r[secured.ReasonReplay] != 1 || r[secured.ReasonPlaintext] != 1 || r[secured.ReasonUnauthenticated] != 3 || r[secured.ReasonSessionUnknown] != 1 {
		t.Fatalf("sec.client rejections %v", r)
	}
	if n, _ := w.count("sec.client"); n != 4 {
		t.Fatalf("the sec.client handler ran %d times, want 4", n)
	}

	// A forged epoch notice (the host cannot sign as the coordinator) is
	// ignored: no re-join, the epoch stays.
	forged := mustEncode(t, provision.EpochNotice{Epoch: 7, ManifestHash: w.hash[:], Signature: make([]byte, ed25519.SignatureSize)})
	if err := w.bus.Publish(ctx, provision.AddressEpoch, forged); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(w.t.Context(), w.t, "the forged notice ignored", func() bool { return strings.Contains(w.logs.String(), "did not sign") })
	if _, e := w.count("sec.news"); e != "1" {
		t.Fatalf("epoch %s after a forged notice", e)
	}

	// Rotation: the owner starts epoch 2 with no grace; the services re-join
	// and go on; the captured epoch-1 envelope is now refused as retired.
	next, grace := uint32(2), "0s"
	sig := ed25519.Sign(w.owner, provision.RotateMessage(w.hash[:], next, grace))
	w.request(provision.AddressRotate, mustEncode(t, provision.RotateRequest{NextEpoch: next, Grace: grace, Signature: sig}))
	testenv.WaitFor(w.t.Context(), w.t, "alpha's re-join", func() bool { _, e := w.count("sec.news"); return e == "2" })
	testenv.WaitFor(w.t.Context(), w.t, "beta's re-join", func() bool {
		m, err := w.try("beta.ask", []byte(marker))
		return err == nil && string(m.Body()) == "yes|echo: "+marker
	})
	if err := w.bus.Publish(ctx, "sec.news", env); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(w.t.Context(), w.t, "the old-epoch rejection", func() bool {
		return w.rejections("alpha")["sec.news"][secured.ReasonEpochRetired] == 1
	})

	// The host's logs never hold a payload.
	if logs := w.logs.String(); strings.Contains(logs, marker) {
		t.Fatalf("marker in the host's logs:\n%s", logs)
	}
}

func TestJoinRefused(t *testing.T) {
	w := newWorld(t, true)
	// Not a measurement the manifest lists for alpha.
	err := w.start("rogue", alphaApp("alpha", &counters{runs: map[string]int{}, last: map[string]string{}}), idRogue)
	if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "not among the identities") {
		t.Fatalf("rogue image: %v", err)
	}
	if !strings.Contains(w.logs.String(), "not among the identities") {
		t.Fatal("the refusal is not in the host's logs")
	}
}

func TestJoinRefusedSimulation(t *testing.T) {
	w := newWorld(t, false)
	err := w.start("alpha", alphaApp("alpha", &counters{runs: map[string]int{}, last: map[string]string{}}), idAlpha)
	if err == nil || !strings.Contains(err.Error(), "simulat") {
		t.Fatalf("simulated evidence under a manifest that forbids it: %v", err)
	}
}

// BenchmarkSecuredRequestInProc is the secured-address overhead inside the
// trusted runtime alone: beta asks alpha, both inproc on one in-process
// bus, 1 KiB, 32 in flight; plain and secured alternate in one run.
func BenchmarkSecuredRequestInProc(b *testing.B) {
	w := newWorld(b, true)
	seen := &counters{runs: map[string]int{}, last: map[string]string{}}
	if err := w.start("alpha", alphaApp("alpha", seen), idAlpha); err != nil {
		b.Fatal(err)
	}
	if err := w.start("beta", betaApp(), idBeta); err != nil {
		b.Fatal(err)
	}
	run := func(to string, n int) time.Duration {
		start := time.Now()
		w.request("beta.bench", nil, "to", to, "n", strconv.Itoa(n))
		return time.Since(start)
	}
	run("plain.echo", 500)
	run("sec.bench", 500)
	b.ResetTimer()
	var plain, secured time.Duration
	for done := 0; done < b.N; done += 500 {
		n := min(500, b.N-done)
		plain += run("plain.echo", n)
		secured += run("sec.bench", n)
	}
	b.ReportMetric(float64(plain.Nanoseconds())/float64(b.N), "plain-ns/req")
	b.ReportMetric(float64(secured.Nanoseconds())/float64(b.N), "secured-ns/req")
	b.ReportMetric(float64(plain)/float64(secured), "secured/plain")
}

// TestRejoinOnNewerEpoch: an enclave that missed the epoch notice re-joins
// when an envelope of the newer epoch reaches it, and the traffic goes on.
func TestRejoinOnNewerEpoch(t *testing.T) {
	w := newWorld(t, true)
	w.deaf = map[string]bool{"alpha": true}
	seen := &counters{runs: map[string]int{}, last: map[string]string{}}
	if err := w.start("alpha", alphaApp("alpha", seen), idAlpha); err != nil {
		t.Fatal(err)
	}
	if err := w.start("beta", betaApp(), idBeta); err != nil {
		t.Fatal(err)
	}
	if got := string(w.request("beta.ask", []byte("before"))); got != "yes|echo: before" {
		t.Fatal(got)
	}
	grace := "1h"
	sig := ed25519.Sign(w.owner, provision.RotateMessage(w.hash[:], 2, grace))
	w.request(provision.AddressRotate, mustEncode(t, provision.RotateRequest{NextEpoch: 2, Grace: grace, Signature: sig}))
	// Beta hears the notice and seals under epoch 2; alpha did not hear it,
	// refuses the first such envelope as of an unknown epoch, and re-joins.
	testenv.WaitFor(w.t.Context(), w.t, "alpha to re-join after an envelope of epoch 2", func() bool {
		w.try("beta.ask", []byte("during")) // refused until alpha re-joined
		_, e := w.count("sec.news")
		return e == "2"
	})
	if r := w.rejections("alpha")["sec.echo"]; r[secured.ReasonUnknownEpoch] == 0 {
		t.Fatalf("alpha's rejections %v: want an unknown epoch", r)
	}
	if got := string(w.request("beta.ask", []byte("after"))); got != "yes|echo: after" {
		t.Fatal(got)
	}
}

// tempDir is a temporary directory removed after the test, best effort:
// the host may still finish a store write of an enclave that just stopped.
func tempDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "trusted-secured-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Many clients against a small session table, through the runtime and the
// client SDK: sessions are forgotten while their clients stream, the SDK
// opens new ones, and every request is handled exactly once.
func TestSessionEvictionThroughTheRuntime(t *testing.T) {
	w := newWorld(t, true)
	var mu sync.Mutex
	handled := map[string]int{}
	app := trusted.New(trusted.Options{Workers: 8, Layer: secured.Layer(secured.Options{Service: "alpha", JoinTimeout: 10 * time.Second,
		Sessions: secure.SessionOptions{MaxSessions: 3}})})
	app.HandleFunc("sec.client", func(ctx context.Context, c *trusted.Call) {
		mu.Lock()
		handled[clientOf(c)+"/"+string(c.Body())]++
		mu.Unlock()
		c.Reply(nil, append([]byte("ok "), c.Body()...))
	})
	if err := w.start("alpha", app, idAlpha); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := w.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const clients, each = 10, 10
	var wg sync.WaitGroup
	// Every client opens its session before any sends its second request,
	// so that more sessions are open than the table keeps, however the
	// goroutines are scheduled.
	var opened sync.WaitGroup
	opened.Add(clients)
	for i := range clients {
		c := cl.As(secure.Credential{Name: "sensor-1", Key: sensorKey}) // its own sessions
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				body := fmt.Sprintf("c%d-r%d", i, j)
				out, err := c.Request(ctx, "sec.client", "alpha", []byte(body))
				if j == 0 {
					opened.Done()
					opened.Wait()
				}
				if err != nil || string(out) != "ok "+body {
					t.Errorf("%s: %q %v", body, out, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != clients*each {
		t.Fatalf("%d requests handled, want %d", len(handled), clients*each)
	}
	for k, n := range handled {
		if n != 1 {
			t.Fatalf("%s handled %d times", k, n)
		}
	}
	if r := w.rejections("alpha")["sec.client"]; r[secured.ReasonSessionUnknown] == 0 {
		t.Fatalf("no session was forgotten (rejections %v): the table did not bound them", r)
	}
	if cl.SessionsOpened() <= clients {
		t.Fatalf("%d sessions for %d clients: none was reopened", cl.SessionsOpened(), clients)
	}
}

// TestRejoinOnManifestUpdate: after an owner-signed manifest update, the
// coordinator's signed notice makes a joined enclave join again, so that
// a client which followed the update to the new manifest reaches it.
func TestRejoinOnManifestUpdate(t *testing.T) {
	w := newWorld(t, true)
	app := trusted.New(trusted.Options{Workers: 4, Layer: secured.Layer(secured.Options{Service: "alpha", JoinTimeout: 10 * time.Second})})
	app.HandleFunc("sec.client", func(ctx context.Context, c *trusted.Call) {
		c.Reply(nil, append([]byte("ok "), c.Body()...))
	})
	if err := w.start("alpha", app, idAlpha); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := w.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cl.Request(ctx, "sec.client", "alpha", []byte("v1")); err != nil || string(out) != "ok v1" {
		t.Fatalf("before the update: %q %v", out, err)
	}

	cur, err := manifestyaml.Parse([]byte(testManifest(w.owner.Public().(ed25519.PublicKey), true)))
	if err != nil {
		t.Fatal(err)
	}
	next, err := manifestyaml.Parse([]byte(strings.Replace(testManifest(w.owner.Public().(ed25519.PublicKey), true), "version: 1", "version: 2", 1)))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := manifest.SignUpdate(w.owner, cur, next)
	if err != nil {
		t.Fatal(err)
	}
	w.request(provision.AddressManifestUpdate, mustEncode(t, provision.ManifestUpdate{Manifest: next.Canonical(), Signature: sig}))

	// A client pinned to version 1 follows the signed update and reaches
	// alpha under version 2 once alpha holds a grant of it.
	updated, err := w.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if updated.ManifestHash() != next.Hash() {
		t.Fatalf("the client pins %x, not the update %x", updated.ManifestHash(), next.Hash())
	}
	testenv.WaitFor(ctx, t, "alpha to serve a client of the updated manifest", func() error {
		out, err := updated.Request(ctx, "sec.client", "alpha", []byte("v2"))
		if err == nil && string(out) != "ok v2" {
			return fmt.Errorf("answer %q", out)
		}
		return err
	})
}
