package secured_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/fresh"
	"github.com/cloister-dev/cloister/trusted/secured"
	"github.com/cloister-dev/cloister/wire"
)

// standIn answers Checkpoint and FreshRead as the coordinator group does
// (MAC checked, answers signed), and can forge its signatures: what a
// hostile host would answer, which the real coordinator never does.
type standIn struct {
	t    testing.TB
	priv ed25519.PrivateKey
	fkey []byte

	mu   sync.Mutex
	regs map[string]provision.Register
	// forge, when set, makes answers to Checkpoint and FreshRead carry a
	// bad signature (a host forging them).
	forge bool
}

func newStandIn(t testing.TB, b *bus.Bus) *standIn {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	g := &standIn{t: t, priv: priv, fkey: bytes.Repeat([]byte{0xf0}, 32), regs: map[string]provision.Register{}}
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
	handle(provision.AddressCheckpoint, g.checkpoint)
	handle(provision.AddressFreshRead, g.read)
	return g
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

// TestRegistryChecksAnswers: answers the grant's coordinator key did not
// sign are refused; 503 and 409 map to the tracker's errors.
func TestRegistryChecksAnswers(t *testing.T) {
	b, err := bus.New()
	if err != nil {
		t.Fatal(err)
	}
	g := newStandIn(t, b)
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

// copyTree replaces to with a copy of from (the host keeping, or putting
// back, a copy of a state directory).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if err := os.RemoveAll(to); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}

// startOn hosts app like world.start, on a state directory that outlives
// the instance (the host's copy, which the test rolls back).
func (w *world) startOn(name string, app *trusted.App, mrenclave []byte, dir string) (stop func(), err error) {
	t := w.t
	var id attest.SimIdentity
	copy(id.MREnclave[:], mrenclave)
	id.Debug = true
	fs, err := enclave.NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, err := enclave.New(enclave.Config{Name: name, Backend: enclave.NewInProc(app.Serve), Bus: w.bus, Store: fs,
		Issuer: w.root.Issuer(id), Simulation: w.root, Logger: w.logger, StartTimeout: 20 * time.Second, RestartBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		fs.Close()
		return nil, err
	}
	var cons []*bus.Consumer
	for _, a := range e.Addresses() {
		c, err := w.bus.Consumer(a, e)
		if err != nil {
			t.Fatal(err)
		}
		cons = append(cons, c)
	}
	w.enclave[name] = e
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, c := range cons {
			c.Unregister(ctx)
		}
		e.Stop(ctx)
		fs.Close()
	}
	t.Cleanup(stop)
	return stop, nil
}

// TestFreshnessWithTheCoordinator: the real coordinator, with a manifest
// that declares freshness (checkpoint 0s), grants alpha freshness; alpha
// restarted from an older copy of its state directory is refused (Init
// fails with both counters, logged); restarted from the current copy it
// refuses the publishes captured before, and a client's session handshake,
// as replays.
func TestFreshnessWithTheCoordinator(t *testing.T) {
	w := newWorldWith(t, true, "freshness: {replicas: 1, checkpoint: 0s}\n")
	seen := &counters{runs: map[string]int{}, last: map[string]string{}}
	dir := filepath.Join(t.TempDir(), "alpha")
	stop, err := w.startOn("alpha", alphaApp("alpha", seen), idAlpha, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.start("beta", betaApp(), idBeta); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var captured [][]byte
	if _, err := w.bus.Consumer("sec.news", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		mu.Lock()
		captured = append(captured, bytes.Clone(m.Body()))
		mu.Unlock()
	})); err != nil {
		t.Fatal(err)
	}
	tell := func(n int) {
		t.Helper()
		w.request("beta.tell", []byte(fmt.Sprint("reading ", n)))
		testenv.WaitFor(t.Context(), t, "alpha handled the publish", func() bool { c, _ := seen.get("sec.news"); return c == n })
	}
	tell(1)
	if got := string(w.request("beta.ask", []byte("q"))); got != "yes|echo: q" { // a secured request: its reply waits for a checkpoint
		t.Fatalf("beta.ask: %q", got)
	}
	// A client's first message of a session carries its handshake.
	pub, info := w.channel("alpha")
	cs, err := secure.NewClientSession(pub, info, secure.Credential{Name: "sensor-1", Key: sensorKey}, secure.ClientSessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, handshake, err := cs.Seal([]byte("once"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.try("sec.client", handshake); err != nil {
		t.Fatal(err)
	}
	stop()
	old := filepath.Join(t.TempDir(), "old")
	copyTree(t, dir, old)

	if stop, err = w.startOn("alpha", alphaApp("alpha", seen), idAlpha, dir); err != nil {
		t.Fatal(err)
	}
	tell(2)
	stop()
	current := filepath.Join(t.TempDir(), "current")
	copyTree(t, dir, current)

	copyTree(t, old, dir)
	_, err = w.startOn("alpha", alphaApp("alpha", seen), idAlpha, dir)
	if err == nil || !strings.Contains(err.Error(), "rolled back") || !strings.Contains(err.Error(), "registered counter") {
		t.Fatalf("alpha restarted from rolled-back state: %v", err)
	}
	t.Logf("refused: %v", err)
	if !strings.Contains(w.logs.String(), "refusing to start from rolled-back state") {
		t.Fatal("the refusal is not logged")
	}
	var st provision.ReplicaStatus
	if err := provision.Decode(w.request(provision.ReplicaAddress(0, provision.ReplicaStatusOp), nil), &st); err != nil {
		t.Fatal(err)
	}
	if st.Rollbacks != 1 {
		t.Fatalf("the coordinator counted %d rollbacks, want the refused state", st.Rollbacks)
	}

	// Rolling back any single blob (the index, a replay window, the
	// handshake record) or dropping one is refused too.
	blobs, err := os.ReadDir(current)
	if err != nil {
		t.Fatal(err)
	}
	tried := 0
	for _, f := range blobs {
		if f.Name() == "journal" || f.IsDir() {
			continue
		}
		was, errOld := os.ReadFile(filepath.Join(old, f.Name()))
		now, err := os.ReadFile(filepath.Join(current, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if errOld == nil && bytes.Equal(was, now) {
			continue
		}
		copyTree(t, current, dir)
		if errOld == nil {
			err = os.WriteFile(filepath.Join(dir, f.Name()), was, 0o600)
		} else {
			err = os.Remove(filepath.Join(dir, f.Name()))
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.startOn("alpha", alphaApp("alpha", seen), idAlpha, dir); err == nil || !strings.Contains(err.Error(), "rolled back") {
			t.Fatalf("alpha restarted with %s rolled back: %v", f.Name(), err)
		}
		tried++
	}
	if tried < 2 { // the index, and the window of sec.news
		t.Fatalf("only %d blobs changed between the copies", tried)
	}

	copyTree(t, current, dir)
	if _, err = w.startOn("alpha", alphaApp("alpha", seen), idAlpha, dir); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	replays := slices.Clone(captured)
	mu.Unlock()
	if len(replays) != 2 {
		t.Fatalf("captured %d publishes", len(replays))
	}
	for _, env := range replays {
		if err := w.bus.Publish(context.Background(), "sec.news", env); err != nil {
			t.Fatal(err)
		}
	}
	var re *bus.ReplyError
	if _, err := w.try("sec.client", handshake); !errors.As(err, &re) || re.Code != wire.CodeSessionUnknown {
		t.Fatalf("a client handshake replayed after the restart: %v", err)
	}
	if n, _ := seen.get("sec.client"); n != 1 {
		t.Fatalf("the client handler ran %d times for one message", n)
	}
	testenv.WaitFor(t.Context(), t, "both replays refused", func() bool { return w.rejections("alpha")["sec.news"][secured.ReasonReplay] == 2 })
	if n, _ := seen.get("sec.news"); n != 2 {
		t.Fatalf("alpha's handler ran %d times for 2 readings and 2 replays", n)
	}
	if c := w.rejections("alpha")[secured.FreshnessAddress]; c[secured.CountCheckpoints] == 0 {
		t.Fatalf("freshness counters: %v", c)
	}
}

// storeApp is alpha with protected-storage handlers only: alpha.put
// writes 1 KiB under the key header, alpha.get reads it (no storage cache,
// so every Get asks the host and checks the blob's version).
func storeApp() *trusted.App {
	app := trusted.New(trusted.Options{Layer: secured.Layer(secured.Options{Service: "alpha", JoinTimeout: 10 * time.Second}),
		Workers: 40, StoreCacheEntries: -1})
	value := bytes.Repeat([]byte{7}, 1024)
	app.HandleFunc("alpha.put", func(ctx context.Context, c *trusted.Call) {
		if err := c.Put(ctx, c.Header("key"), value); err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(nil, nil)
	})
	app.HandleFunc("alpha.get", func(ctx context.Context, c *trusted.Call) {
		if _, _, err := c.Get(ctx, c.Header("key")); err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(nil, nil)
	})
	return app
}

// BenchmarkFreshnessStore is the cost of freshness on protected storage,
// with the real coordinator (one replica) and the host's file store (one
// fsync per batch): requests that Put 1 KiB, then requests that Get it
// from the host, 32 in flight, without freshness and with checkpoint
// intervals 0 and 1 s, alternating in one run.
func BenchmarkFreshnessStore(b *testing.B) {
	variants := []struct{ name, section string }{{"off", ""},
		{"interval-0", "freshness: {replicas: 1, checkpoint: 0s}\n"}, {"interval-1s", "freshness: {replicas: 1, checkpoint: 1s}\n"}}
	worlds := make([]*world, len(variants))
	for i, v := range variants {
		worlds[i] = newWorldWith(b, true, v.section)
		if err := worlds[i].start("alpha", storeApp(), idAlpha); err != nil {
			b.Fatal(err)
		}
	}
	run := func(w *world, address string, n int) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 32 {
			wg.Go(func() {
				for i := next.Add(1); i <= int64(n); i = next.Add(1) {
					if _, err := w.try(address, nil, "key", strconv.FormatInt(i%64, 10)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	for _, w := range worlds {
		run(w, "alpha.put", 200)
	}
	b.ResetTimer()
	put, get := make([]time.Duration, len(worlds)), make([]time.Duration, len(worlds))
	for done := 0; done < b.N; done += 500 {
		n := min(500, b.N-done)
		for i, w := range worlds {
			put[i] += run(w, "alpha.put", n)
			get[i] += run(w, "alpha.get", n)
		}
	}
	b.StopTimer()
	for i, v := range variants {
		b.ReportMetric(float64(put[i].Nanoseconds())/float64(b.N), v.name+"-put-ns/req")
		b.ReportMetric(float64(get[i].Nanoseconds())/float64(b.N), v.name+"-get-ns/req")
		if c := worlds[i].rejections("alpha")[secured.FreshnessAddress]; c != nil {
			b.ReportMetric(float64(c[secured.CountCheckpoints])/float64(b.N+200), v.name+"-checkpoints/put")
		}
	}
}

// BenchmarkFreshnessSecuredRequest is the cost of freshness on a secured
// hop: beta asks alpha on a secured address (1 KiB, 32 in flight), whose
// replay window changes with every request, without freshness and with
// checkpoint intervals 0 and 1 s, alternating in one run.
func BenchmarkFreshnessSecuredRequest(b *testing.B) {
	variants := []struct{ name, section string }{{"off", ""},
		{"interval-0", "freshness: {replicas: 1, checkpoint: 0s}\n"}, {"interval-1s", "freshness: {replicas: 1, checkpoint: 1s}\n"}}
	worlds := make([]*world, len(variants))
	for i, v := range variants {
		w := newWorldWith(b, true, v.section)
		if err := w.start("alpha", alphaApp("alpha", &counters{runs: map[string]int{}, last: map[string]string{}}), idAlpha); err != nil {
			b.Fatal(err)
		}
		if err := w.start("beta", betaApp(), idBeta); err != nil {
			b.Fatal(err)
		}
		worlds[i] = w
	}
	run := func(w *world, n int) time.Duration {
		start := time.Now()
		w.request("beta.bench", nil, "to", "sec.bench", "n", strconv.Itoa(n))
		return time.Since(start)
	}
	for _, w := range worlds {
		run(w, 200)
	}
	b.ResetTimer()
	took := make([]time.Duration, len(worlds))
	for done := 0; done < b.N; done += 500 {
		n := min(500, b.N-done)
		for i, w := range worlds {
			took[i] += run(w, n)
		}
	}
	b.StopTimer()
	for i, v := range variants {
		b.ReportMetric(float64(took[i].Nanoseconds())/float64(b.N), v.name+"-ns/req")
		if c := worlds[i].rejections("alpha")[secured.FreshnessAddress]; c != nil {
			b.ReportMetric(float64(c[secured.CountCheckpoints])/float64(b.N+200), v.name+"-checkpoints/req")
		}
	}
}
