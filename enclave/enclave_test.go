package enclave

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/internal/testapp"
	"github.com/cloister-dev/cloister/internal/testenv"
)

// harness is an enclave hosted on a bus, its consumers registered the way a
// node registers them.
type harness struct {
	e        *Enclave
	bus      *bus.Bus
	logs     *logBuffer
	stateDir string
}

type harnessOpts struct {
	allow   []string
	backoff time.Duration
	env     []string
	// acks, if set, makes every send on the bus carry an Ack that reports
	// here, as a durable address's sends do.
	acks chan error
	// store, if set, wraps the harness's FileStore.
	store func(*FileStore) Store
	// config, if set, adjusts the enclave's configuration.
	config func(*Config)
}

// ackingTransport is an in-process transport whose sends carry an Ack, as
// the deliveries of a durable address do.
type ackingTransport struct {
	bus.Transport
	acks chan error
}

func (t *ackingTransport) Subscribe(address string, opts bus.SubscribeOptions, deliver bus.DeliverFunc) (bus.Subscription, error) {
	return t.Transport.Subscribe(address, opts, func(d *bus.Delivery) {
		if d.Kind == bus.KindSend {
			d.Ack = func(err error) { t.acks <- err }
		}
		deliver(d)
	})
}

func backendFor(t testing.TB, name string) Backend {
	switch name {
	case "inproc":
		return NewInProc(testapp.New(8).Serve)
	case "process": // shared memory, the default
		return NewProcess(ProcessOptions{})
	case "process-pipe":
		return NewProcess(ProcessOptions{Transport: TransportPipe})
	case "process-pipes-only-image": // shared memory offered, not taken
		return NewProcess(ProcessOptions{})
	}
	t.Fatalf("no backend %q", name)
	return nil
}

func newHarness(t testing.TB, backend string, o harnessOpts) *harness {
	t.Helper()
	h := &harness{logs: &logBuffer{}, stateDir: t.TempDir()}
	busOpts := []bus.Option{bus.WithLogger(debugLogger(h.logs))}
	if o.acks != nil {
		busOpts = append(busOpts, bus.WithTransport(&ackingTransport{Transport: bus.NewLocalNetwork().Attach(), acks: o.acks}))
	}
	b, err := bus.New(busOpts...)
	if err != nil {
		t.Fatal(err)
	}
	h.bus = b
	fs, err := NewFileStore(h.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	var store Store = fs
	if o.store != nil {
		store = o.store(fs)
	}
	h.e, err = newWith(Config{Simulation: testRoot, Name: "test-enclave", Image: testImage, Backend: backendFor(t, backend), Bus: b,
		Store: store, Logger: debugLogger(h.logs), Allow: o.allow, RestartBackoff: o.backoff, Env: o.env}, o.config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if want := wantTransport[backend]; h.e.Transport() != want {
		t.Fatalf("backend %s: transport %q, want %q", backend, h.e.Transport(), want)
	}
	for _, a := range h.e.Addresses() {
		if _, err := b.Consumer(a, h.e, bus.Inline()); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.e.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		b.Close(ctx)
	})
	return h
}

// newWith is New with cfg adjusted by f (if set).
func newWith(cfg Config, f func(*Config)) (*Enclave, error) {
	if f != nil {
		f(&cfg)
	}
	return New(cfg)
}

func (h *harness) request(t testing.TB, address string, body any, opts ...bus.DeliveryOption) (*bus.Message, error) {
	t.Helper()
	opts = append([]bus.DeliveryOption{bus.Timeout(20 * time.Second)}, opts...)
	return h.bus.Request(context.Background(), address, body, opts...)
}

// wantTransport is the transport each test backend must end up on.
var wantTransport = map[string]string{"inproc": "inproc", "process": "shm", "process-pipe": "pipe", "process-pipes-only-image": "pipe"}

// forBackends runs f on the inproc backend and on the process backend over
// both transports.
func forBackends(t *testing.T, f func(t *testing.T, backend string)) {
	for _, b := range []string{"inproc", "process", "process-pipe"} {
		t.Run(b, func(t *testing.T) { f(t, b) })
	}
}

// forTransports runs f on the process backend over shared memory and over
// pipes.
func forTransports(t *testing.T, f func(t *testing.T, backend string)) {
	for _, b := range []string{"process", "process-pipe"} {
		t.Run(b, func(t *testing.T) { f(t, b) })
	}
}

func TestAdapterRequestReply(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		h := newHarness(t, backend, harnessOpts{})
		m, err := h.request(t, "test.echo", []byte("hello"), bus.Header("x-user", "alice"))
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Body()) != "hello" || m.Header("x-user") != "alice" {
			t.Fatalf("echo: %q %v", m.Body(), m.Headers())
		}
		// A string body keeps its codec across the boundary.
		m, err = h.request(t, "test.echo", "text")
		if err != nil {
			t.Fatal(err)
		}
		var s string
		if err := m.Decode(&s); err != nil || s != "text" || m.Header(bus.HeaderCodec) != bus.CodecString {
			t.Fatalf("string echo: %q %v %v", s, err, m.Headers())
		}
		// JSON from the enclave decodes as JSON.
		m, err = h.request(t, "test.json", nil)
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ N int }
		if err := m.Decode(&v); err != nil || v.N != 42 {
			t.Fatalf("json: %+v %v", v, err)
		}
	})
}

func TestImageProcessors(t *testing.T) {
	// trusted.Main gives an image one processor unless GOMAXPROCS says
	// otherwise (the host's own GOMAXPROCS is not passed on).
	for _, c := range []struct {
		env  []string
		want string
	}{{nil, "1"}, {[]string{"GOMAXPROCS=3"}, "3"}} {
		h := newHarness(t, "process", harnessOpts{env: c.env})
		m, err := h.request(t, "test.procs", nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Body()) != c.want {
			t.Errorf("env %q: GOMAXPROCS %s, want %s", c.env, m.Body(), c.want)
		}
	}
}

func TestDurableSendsCompleteWithTheEnclavesHandler(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		acks := make(chan error, 10)
		h := newHarness(t, backend, harnessOpts{acks: acks, backoff: time.Hour})
		nextAck := func(what string) error {
			t.Helper()
			select {
			case err := <-acks:
				return err
			case <-time.After(20 * time.Second):
				t.Fatalf("%s: the send was never completed", what)
				return nil
			}
		}
		ctx := context.Background()
		// Handled: acknowledged once the enclave's handler returned.
		if err := h.bus.Send(ctx, "test.echo", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := nextAck("handled send"); err != nil {
			t.Fatalf("handled send completed with %v, want nil", err)
		}
		// A panicking handler hands the message back.
		if err := h.bus.Send(ctx, "test.panic", nil); err != nil {
			t.Fatal(err)
		}
		if err := nextAck("panicking send"); err == nil || !strings.Contains(err.Error(), "panic") {
			t.Fatalf("panicking handler completed with %v, want a panic error", err)
		}
		// A handler still running when the enclave dies hands it back too.
		if backend == "inproc" {
			return
		}
		if err := h.bus.Send(ctx, "test.block", nil); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for h.e.InFlight() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		pid := h.e.PID()
		if pid <= 0 {
			t.Fatalf("no enclave process to kill (pid %d)", pid)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := nextAck("send in flight at a crash"); err == nil || !strings.Contains(err.Error(), "went down") {
			t.Fatalf("send in flight when the enclave died completed with %v, want it handed back", err)
		}
		// While it is down (its restart is an hour away), a durable send
		// is handed back too, not dropped.
		deadline = time.Now().Add(20 * time.Second)
		for h.e.State() == StateUp && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if err := h.bus.Send(ctx, "test.echo", nil); err != nil {
			t.Fatal(err)
		}
		if err := nextAck("send while the enclave is down"); err == nil || !strings.Contains(err.Error(), "restarting") {
			t.Fatalf("send while the enclave was down completed with %v, want it handed back", err)
		}
	})
}

func TestAdapterFailures(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		h := newHarness(t, backend, harnessOpts{})
		_, err := h.request(t, "test.fail", nil)
		var re *bus.ReplyError
		if !errors.As(err, &re) || !errors.Is(err, bus.ErrRecipientFailure) || re.Code != 418 || re.Message != "I am a teapot" {
			t.Fatalf("fail: %v", err)
		}
		_, err = h.request(t, "test.panic", nil)
		if !errors.As(err, &re) || re.Code != CodeInternal || !contains(re.Message, "test-enclave/0") || !contains(re.Message, "boom") {
			t.Fatalf("panic: %v", err)
		}
		// The enclave keeps serving.
		if _, err := h.request(t, "test.empty", nil); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAdapterOCALLs(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		h := newHarness(t, backend, harnessOpts{})
		b := h.bus
		// Request OCALL to a regular service.
		b.Consumer("regular.svc", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
			m.Reply(append([]byte("pong to "), m.Body()...))
		}))
		m, err := h.request(t, "test.request", []byte("ping"), bus.Header("to", "regular.svc"))
		if err != nil || string(m.Body()) != "got: pong to ping" {
			t.Fatalf("request OCALL: %v %q", err, bodyOf(m))
		}
		// A failed request OCALL comes back typed.
		_, err = h.request(t, "test.request", nil, bus.Header("to", "nobody.home"))
		if err == nil || !contains(err.Error(), "no-handlers") {
			t.Fatalf("request to nobody: %v", err)
		}
		// Send and Publish OCALLs.
		got := make(chan *bus.Message, 2)
		b.Consumer("sink", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) { got <- m }))
		b.Consumer("sink.all", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) { got <- m }))
		if _, err := h.request(t, "test.send", []byte("data"), bus.Header("to", "sink")); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			select {
			case m := <-got:
				if string(m.Body()) != "data" {
					t.Fatalf("sent body %q", m.Body())
				}
				if m.Address() == "sink" && m.Header("from") != "enclave" {
					t.Fatalf("send headers %v", m.Headers())
				}
			case <-time.After(20 * time.Second):
				t.Fatal("no message from the enclave")
			}
		}
		// Log OCALL: into the host's logger with the enclave's name.
		if _, err := h.request(t, "test.log", []byte("marker-123")); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t.Context(), t, "the enclave's log record", func() bool {
			for _, l := range strings.Split(h.logs.String(), "\n") {
				if contains(l, "hello from inside") && contains(l, "marker-123") && contains(l, "enclave=test-enclave") {
					return true
				}
			}
			return false
		})
	})
}

func bodyOf(m *bus.Message) []byte {
	if m == nil {
		return nil
	}
	return m.Body()
}

// An enclave whose host was handed no simulation root has neither
// simulated evidence nor protected storage, and says why: nothing is looked
// up on the machine instead.
func TestNoSimulationRoot(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		h := newHarness(t, backend, harnessOpts{config: func(c *Config) { c.Simulation = nil }})
		if _, err := h.request(t, "test.evidence", []byte("nonce")); err == nil || !contains(err.Error(), "no simulation root") {
			t.Fatalf("evidence without a simulation root: %v", err)
		}
		if _, err := h.request(t, "test.put", []byte("v"), bus.Header("key", "k")); err == nil || !contains(err.Error(), "platform secret") {
			t.Fatalf("storage without a simulation root: %v", err)
		}
	})
}

func TestAdapterEvidence(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		h := newHarness(t, backend, harnessOpts{})
		m, err := h.request(t, "test.evidence", []byte("nonce"))
		if err != nil {
			t.Fatal(err)
		}
		ev := &attest.Evidence{Type: attest.EvidenceType(m.Header("type")), Quote: m.Body()}
		claims, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{testRoot.PlatformPublicKey()}})
		if err != nil {
			t.Fatal(err)
		}
		if claims.MREnclave != [32]byte(testImage.Measurement) {
			t.Fatalf("MRENCLAVE %x, want the image's measurement %s", claims.MREnclave, testImage.Measurement)
		}
		if claims.ProductID != 7 || claims.SVN != 3 {
			t.Fatalf("product %d svn %d", claims.ProductID, claims.SVN)
		}
		nonce := sha256.Sum256([]byte("nonce"))
		if !bytes.Equal(claims.ReportData[:32], nonce[:]) {
			t.Fatal("report data not bound")
		}
		// No isolation in process: the evidence says so (debug).
		if claims.Debug != (backend == "inproc") {
			t.Fatalf("debug = %v for %s", claims.Debug, backend)
		}
	})
}

func TestProtectedStorageNeverStoresPlaintext(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		h := newHarness(t, backend, harnessOpts{})
		secret := "PLAINTEXT-" + backend + "-7f3a9c"
		if _, err := h.request(t, "test.put", []byte(secret), bus.Header("key", "alice-key")); err != nil {
			t.Fatal(err)
		}
		m, err := h.request(t, "test.get", nil, bus.Header("key", "alice-key"))
		if err != nil || string(m.Body()) != secret {
			t.Fatalf("get: %v %q", err, bodyOf(m))
		}
		if _, err := h.request(t, "test.get", nil, bus.Header("key", "bob-key")); err == nil || !contains(err.Error(), "404") {
			t.Fatalf("get missing: %v", err)
		}
		files := 0
		filepath.Walk(h.stateDir, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return err
			}
			files++
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, []byte(secret)) || bytes.Contains(data, []byte("alice-key")) || contains(p, "alice-key") || contains(p, fmt.Sprintf("%x", "alice-key")) {
				t.Fatalf("%s holds the plaintext or the key name", p)
			}
			return nil
		})
		if files != 1 {
			t.Fatalf("%d files in the state directory, want 1 (the journal, before its checkpoint)", files)
		}
	})
}

func TestAllowedAddresses(t *testing.T) {
	h := newHarness(t, "inproc", harnessOpts{allow: []string{"test.*"}})
	for _, a := range h.e.Addresses() {
		if !strings.HasPrefix(a, "test.") {
			t.Fatalf("serving %q", a)
		}
	}
	if r := h.e.Refused(); len(r) != 1 || r[0] != "other.secret" {
		t.Fatalf("refused %v", r)
	}
	if _, err := h.request(t, "other.secret", nil); !errors.Is(err, bus.ErrNoHandlers) {
		t.Fatalf("refused address reachable: %v", err)
	}
	if !contains(h.logs.String(), "does not allow") {
		t.Fatal("no log about the refused address")
	}

	e, err := New(Config{Simulation: testRoot, Name: "none", Image: testImage, Backend: NewInProc(testapp.New(1).Serve), Allow: []string{"nothing.>"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); !errors.Is(err, ErrNoAddresses) {
		t.Fatalf("start with nothing allowed: %v", err)
	}
	if _, err := New(Config{Simulation: testRoot, Name: "bad", Image: testImage, Backend: NewProcess(ProcessOptions{}), Allow: []string{"a.>.b"}}); err == nil {
		t.Fatal("bad pattern accepted")
	}
}

func TestMatchAddress(t *testing.T) {
	for _, c := range []struct {
		p, a string
		ok   bool
	}{
		{"a.b", "a.b", true}, {"a.b", "a.c", false}, {"a.*", "a.b", true}, {"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true}, {"a.>", "a", false}, {">", "x", true}, {"*.b", "a.b", true}, {"a", "a.b", false},
	} {
		if got := matchAddress(c.p, c.a); got != c.ok {
			t.Errorf("match(%q, %q) = %v", c.p, c.a, got)
		}
	}
}

func TestManyInFlight(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		h := newHarness(t, backend, harnessOpts{})
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := range 200 {
			wg.Go(func() {
				body := fmt.Sprintf("msg-%d", i)
				m, err := h.request(t, "test.echo", []byte(body))
				if err == nil && string(m.Body()) != body {
					err = fmt.Errorf("got %q for %q", m.Body(), body)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if st := h.e.Stats(); st.FramesSent < 200 || st.FramesReceived < 200 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestKilledEnclaveFailsInFlightAndRestarts(t *testing.T) {
	forTransports(t, testKilledEnclaveFailsInFlightAndRestarts)
}

func testKilledEnclaveFailsInFlightAndRestarts(t *testing.T, backend string) {
	h := newHarness(t, backend, harnessOpts{backoff: time.Second})
	if _, err := h.request(t, "test.put", []byte("42"), bus.Header("key", "counter")); err != nil {
		t.Fatal(err)
	}
	pid := h.e.PID()
	if pid == 0 {
		t.Fatal("no pid")
	}
	const n = 16
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := h.bus.Request(context.Background(), "test.block", nil, bus.Timeout(2*time.Minute))
			errs <- err
		}()
	}
	s := h.e.cur.Load()
	testenv.WaitFor(t.Context(), t, "the requests to reach the enclave", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pending) == n
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range n {
		select {
		case err := <-errs:
			var re *bus.ReplyError
			if !errors.As(err, &re) || re.Failure != bus.FailureRecipient || re.Code != CodeUnavailable {
				t.Fatalf("in-flight request: %v, want a recipient failure %d", err, CodeUnavailable)
			}
			if !contains(re.Message, "test-enclave/0") || !contains(re.Message, fmt.Sprint(pid)) {
				t.Fatalf("failure does not name the enclave: %q", re.Message)
			}
		case <-time.After(time.Minute):
			t.Fatal("in-flight requests did not fail")
		}
	}
	// Down while restarting: health says so, and requests fail at once.
	err := h.e.Health(context.Background())
	var de *DownError
	if !errors.As(err, &de) {
		t.Fatalf("health after kill: %v", err)
	}
	t.Log(err)
	if _, err := h.request(t, "test.empty", nil); !errors.Is(err, bus.ErrRecipientFailure) {
		// The restart may already have happened; only a timeout is wrong.
		if err != nil {
			t.Fatalf("request while down: %v", err)
		}
	}
	testenv.WaitFor(t.Context(), t, "the restart", func() bool { return h.e.Health(context.Background()) == nil })
	if h.e.PID() == pid || h.e.Restarts() != 1 {
		t.Fatalf("pid %d (was %d), restarts %d", h.e.PID(), pid, h.e.Restarts())
	}
	if want := wantTransport[backend]; h.e.Transport() != want {
		t.Fatalf("restarted on transport %q, want %q", h.e.Transport(), want)
	}
	m, err := h.request(t, "test.get", nil, bus.Header("key", "counter"))
	if err != nil || string(m.Body()) != "42" {
		t.Fatalf("state after restart: %v %q", err, bodyOf(m))
	}
}

func TestStartFailsClearly(t *testing.T) {
	// Not an enclave image: the handshake fails and says why.
	dir := t.TempDir()
	path := filepath.Join(dir, "notanenclave")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho not an enclave\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteMetadata(path, MetadataOptions{}); err != nil {
		t.Fatal(err)
	}
	img, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Simulation: testRoot, Name: "bogus", Image: img, Backend: NewProcess(ProcessOptions{}), StartTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = e.Start(context.Background())
	if err == nil || !contains(err.Error(), "bogus") || !contains(err.Error(), "handshake") {
		t.Fatalf("start: %v", err)
	}
	t.Log(err)
	if e.State() != StateStopped {
		t.Fatalf("state %v", e.State())
	}
}

func TestStopDrains(t *testing.T) { forTransports(t, testStopDrains) }

func testStopDrains(t *testing.T, backend string) {
	h := newHarness(t, backend, harnessOpts{})
	done := make(chan error, 1)
	go func() {
		_, err := h.bus.Request(context.Background(), "test.block", nil, bus.Timeout(time.Minute))
		done <- err
	}()
	s := h.e.cur.Load()
	testenv.WaitFor(t.Context(), t, "the request to reach the enclave", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pending) == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := h.e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if !errors.Is(err, bus.ErrRecipientFailure) {
		t.Fatalf("request left by stop: %v", err)
	}
	if h.e.State() != StateStopped {
		t.Fatalf("state %v", h.e.State())
	}
	if _, err := h.request(t, "test.empty", nil); !errors.Is(err, bus.ErrRecipientFailure) {
		t.Fatalf("after stop: %v", err)
	}
}

func TestFileStore(t *testing.T) {
	s, err := NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, found, err := s.Get(ctx, "k"); found || err != nil {
		t.Fatalf("empty get: %v %v", found, err)
	}
	for i := range 3 {
		if err := s.Put(ctx, "k/../x", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	b, found, err := s.Get(ctx, "k/../x")
	if !found || err != nil || !bytes.Equal(b, []byte{2}) {
		t.Fatalf("get: %v %v %v", b, found, err)
	}
	if entries, _ := os.ReadDir(s.Dir()); len(entries) != 1 {
		t.Fatalf("%d files before a checkpoint, want the journal only", len(entries))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(s.Dir())
	if len(entries) != 2 {
		t.Fatalf("%d files after Close, want the blob and the journal (no temporary files left)", len(entries))
	}
	if s, err = NewFileStore(s.Dir()); err != nil {
		t.Fatal(err)
	}
	if b, found, err := s.Get(ctx, "k/../x"); !found || err != nil || !bytes.Equal(b, []byte{2}) {
		t.Fatalf("get after Close and reopening: %v %v %v", b, found, err)
	}
	if err := s.Put(ctx, "", nil); err == nil {
		t.Fatal("empty key accepted")
	}
}

// TestKilledMidStream kills the enclave while requests stream through it
// (the rings, or the pipes, full of frames both ways): every request ends
// at once, answered or failed as unavailable, none waits for its timeout;
// the enclave comes back with its state.
func TestKilledMidStream(t *testing.T) {
	forTransports(t, func(t *testing.T, backend string) {
		h := newHarness(t, backend, harnessOpts{backoff: 200 * time.Millisecond})
		if _, err := h.request(t, "test.put", []byte("7"), bus.Header("key", "k")); err != nil {
			t.Fatal(err)
		}
		pid := h.e.PID()
		const streams = 8
		var answered atomic.Int64
		errs := make(chan error, streams)
		body := make([]byte, 4<<10)
		for range streams {
			go func() {
				for {
					_, err := h.bus.Request(context.Background(), "test.echo", body, bus.Timeout(time.Minute))
					if err != nil {
						errs <- err
						return
					}
					answered.Add(1)
				}
			}()
		}
		testenv.WaitFor(t.Context(), t, "requests to flow", func() bool { return answered.Load() > 200 })
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for range streams {
			select {
			case err := <-errs:
				var re *bus.ReplyError
				if !errors.As(err, &re) || re.Code != CodeUnavailable {
					t.Fatalf("request cut by the kill: %v, want a recipient failure %d", err, CodeUnavailable)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("a request outlived the killed enclave")
			}
		}
		testenv.WaitFor(t.Context(), t, "the restart", func() bool { return h.e.Health(context.Background()) == nil })
		if h.e.PID() == pid || h.e.Transport() != wantTransport[backend] {
			t.Fatalf("after restart: pid %d (was %d), transport %q", h.e.PID(), pid, h.e.Transport())
		}
		m, err := h.request(t, "test.get", nil, bus.Header("key", "k"))
		if err != nil || string(m.Body()) != "7" {
			t.Fatalf("state after restart: %v %q", err, bodyOf(m))
		}
	})
}

// TestAnImageThatIgnoresTheRegionStaysOnPipes runs the test image the way
// an image built before the shared-memory boundary runs (serving its
// descriptors itself): the host offers the region, the image never takes
// it, and the host must notice at the handshake and stay on the pipes.
func TestAnImageThatIgnoresTheRegionStaysOnPipes(t *testing.T) {
	h := newHarness(t, "process-pipes-only-image", harnessOpts{env: []string{"TESTIMAGE_PIPES_ONLY=1"}})
	for i := range 50 {
		m, err := h.request(t, "test.echo", []byte(fmt.Sprint(i)))
		if err != nil || string(m.Body()) != fmt.Sprint(i) {
			t.Fatalf("echo %d: %v %q", i, err, bodyOf(m))
		}
	}
}
