package trusted

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/seal"
	"github.com/cloister-dev/cloister/wire"
)

func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

func TestDeliverReplyFail(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		h := b.start(t, nil)
		r := h.reply("echo", map[string]string{"user": "alice"}, []byte("hello"))
		if string(r.Body) != "hello" || r.Headers["user"] != "alice" || r.Headers["address"] != "echo" || r.Headers["kind"] != "request" {
			t.Fatalf("echo: %+v", r)
		}
		f := h.fail("fail", nil, []byte("x"))
		if f.Kind != boundary.FailApplication || f.Code != 42 || f.Message != "nope: x" {
			t.Fatalf("fail: %+v", f)
		}
		f = h.fail("panic", nil, nil)
		if f.Kind != boundary.FailPanic || !strings.Contains(f.Message, `"panic"`) || !strings.Contains(f.Message, "boom") {
			t.Fatalf("panic: %+v", f)
		}
		// Still serving after the panic.
		h.reply("echo", nil, []byte("again"))
		f = h.fail("nobody.home", nil, nil)
		if f.Kind != boundary.FailNoHandler || !strings.Contains(f.Message, "nobody.home") {
			t.Fatalf("no handler: %+v", f)
		}
		r = h.reply("async", nil, nil)
		if string(r.Body) != "later" {
			t.Fatalf("async: %+v", r)
		}
		h.shutdown()
	})
}

func TestSendPublishRequestOCALLs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		h := b.start(t, nil)
		// A send delivery (no reply expected) that sends and publishes.
		if ch := h.deliver(wire.KindSend, "emit", nil, []byte("e1")); ch != nil {
			t.Fatal("send got a reply channel")
		}
		s := h.next(boundary.TypeSend).(*boundary.Send)
		p := h.next(boundary.TypePublish).(*boundary.Publish)
		if s.Address != "out.send" || s.Headers["h"] != "v" || string(s.Body) != "e1" || p.Address != "out.publish" || string(p.Body) != "e1" {
			t.Fatalf("send %+v publish %+v", s, p)
		}
		// Request OCALL answered by the host.
		r := h.reply("ask", map[string]string{"to": "svc"}, []byte("question"))
		if string(r.Body) != "re:question" || r.Headers["from"] != "svc" || r.Headers["q"] != "1" {
			t.Fatalf("ask: %+v", r)
		}
		f := h.fail("ask", map[string]string{"to": "nowhere"}, nil)
		if f.Code != int32(wire.FailureNoHandlers) || !strings.Contains(f.Message, "no-handlers") {
			t.Fatalf("ask failure: %+v", f)
		}
		// A request the host never answers ends with the handler's deadline.
		f = h.wait(h.deliverTimeout("ask", map[string]string{"to": "silent"}, 100*time.Millisecond)).(*boundary.Fail)
		if !strings.Contains(f.Message, "deadline") {
			t.Fatalf("silent: %+v", f)
		}
		r = h.reply("evidence", nil, []byte{9, 8, 7, 6})
		if r.Headers["type"] != "simulated" || !bytes.Equal(r.Body, []byte("quote:\x09\x08\x07\x06")) {
			t.Fatalf("evidence: %+v", r)
		}
		h.reply("log", nil, nil)
		h.shutdown()
		logs := strings.Join(h.logMessages(), "\n")
		if !strings.Contains(logs, "INFO hello from inside g.user=alice g.n=3") || strings.Contains(logs, "not sent") {
			t.Fatalf("logs:\n%s", logs)
		}
		if !strings.Contains(logs, "SIMULATED sealing") {
			t.Fatalf("no simulation warning in logs:\n%s", logs)
		}
	})
}

func (h *testHost) deliverTimeout(address string, headers map[string]string, timeout time.Duration) chan boundary.Message {
	d := &boundary.Deliver{Kind: wire.KindRequest, Address: address, Headers: headers, Timeout: timeout, Token: h.token.Add(1)}
	ch := make(chan boundary.Message, 1)
	h.mu.Lock()
	h.waiters[d.Token] = ch
	h.mu.Unlock()
	if err := h.conn.Send(d); err != nil {
		h.t.Fatal(err)
	}
	return ch
}

func TestProtectedStorage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		store := map[string][]byte{}
		h := b.start(t, store)
		if r := h.reply("put", map[string]string{"key": "alice"}, []byte(secretValue)); string(r.Body) != "ok" {
			t.Fatalf("put: %+v", r)
		}
		h.reply("put", map[string]string{"key": "bob"}, []byte("other value"))
		h.mu.Lock()
		if len(store) != 2 {
			t.Fatalf("host store has %d entries", len(store))
		}
		for k, blob := range store {
			if strings.Contains(k, "alice") || strings.Contains(k, "bob") {
				t.Fatalf("host sees the key name: %q", k)
			}
			if bytes.Contains(blob, []byte(secretValue)) || bytes.Contains(blob, []byte("METER")) {
				t.Fatal("host sees the plaintext value")
			}
			if _, _, err := seal.ParseBlob(blob); err != nil {
				t.Fatalf("stored value is not a sealed blob: %v", err)
			}
		}
		h.mu.Unlock()
		if r := h.reply("get", map[string]string{"key": "alice"}, nil); string(r.Body) != secretValue {
			t.Fatalf("get: %q", r.Body)
		}
		if f := h.fail("get", map[string]string{"key": "carol"}, nil); f.Code != 404 {
			t.Fatalf("missing key: %+v", f)
		}
		// What the enclave read or wrote it serves from its cache: the host
		// sees no read.
		h.mu.Lock()
		saved := maps.Clone(store)
		for k := range store {
			store[k] = nil
		}
		h.mu.Unlock()
		if r := h.reply("get", map[string]string{"key": "alice"}, nil); string(r.Body) != secretValue {
			t.Fatalf("cached get: %q", r.Body)
		}
		h.mu.Lock()
		maps.Copy(store, saved)
		h.mu.Unlock()
		h.shutdown()

		// A new instance has an empty cache: what the host does to the blobs
		// now shows.
		h = b.start(t, store)
		h.mu.Lock()
		if len(store) != 2 {
			t.Fatalf("host store has %d entries", len(store))
		}
		var keys []string
		for k := range store {
			keys = append(keys, k)
		}
		h.mu.Unlock()
		// The host swaps alice's and bob's blobs: both refuse to open.
		h.mu.Lock()
		store[keys[0]], store[keys[1]] = store[keys[1]], store[keys[0]]
		h.mu.Unlock()
		if f := h.fail("get", map[string]string{"key": "alice"}, nil); !strings.Contains(f.Message, "authentication failed") || strings.Contains(f.Message, "alice") {
			t.Fatalf("swapped blob: %+v", f)
		}
		// The host flips a bit.
		h.mu.Lock()
		store[keys[0]], store[keys[1]] = store[keys[1]], store[keys[0]]
		for _, k := range keys {
			store[k] = bytes.Clone(store[k])
			store[k][len(store[k])-3] ^= 0x10
		}
		h.mu.Unlock()
		if f := h.fail("get", map[string]string{"key": "bob"}, nil); !strings.Contains(f.Message, "authentication failed") || strings.Contains(f.Message, "bob") {
			t.Fatalf("flipped blob: %+v", f)
		}
		// Host storage failures reach the handler, without the key's name.
		h.mu.Lock()
		h.storeErr = "disk full"
		h.mu.Unlock()
		if f := h.fail("get", map[string]string{"key": "dave"}, nil); !strings.Contains(f.Message, "disk full") || strings.Contains(f.Message, "dave") {
			t.Fatalf("store error: %+v", f)
		}
		h.shutdown()
	})
}

// TestStorageSurvivesRestart: a new enclave process with the same identity
// reads what the previous one stored; one with another MRENCLAVE cannot.
func TestStorageSurvivesRestart(t *testing.T) {
	store := map[string][]byte{}
	h := startProcess(t, true, testInit(), store)
	h.reply("put", map[string]string{"key": "alice"}, []byte(secretValue))
	h.shutdown()

	h = startProcess(t, false, testInit(), store)
	if r := h.reply("get", map[string]string{"key": "alice"}, nil); string(r.Body) != secretValue {
		t.Fatalf("after restart: %q", r.Body)
	}
	h.shutdown()

	// Another image: the storage name differs, and even the right blob under
	// the right name does not open.
	other := testInit()
	other.Identity.MREnclave[0] ^= 1
	h = startProcess(t, false, other, store)
	if f := h.fail("get", map[string]string{"key": "alice"}, nil); f.Code != 404 {
		t.Fatalf("other image found the value: %+v", f)
	}
	h.shutdown()
}

func TestConcurrentDeliveries(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		h := b.start(t, nil)
		// Four barrier handlers can only finish if all four workers run at once.
		var chans []chan boundary.Message
		for range 4 {
			chans = append(chans, h.deliver(wire.KindRequest, "barrier", nil, nil))
		}
		for _, ch := range chans {
			if r, ok := h.wait(ch).(*boundary.Reply); !ok || string(r.Body) != "through" {
				t.Fatalf("barrier: %+v", r)
			}
		}
		// Many requests in flight from many goroutines, answers matched by token.
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 50 {
					body := fmt.Appendf(nil, "g%d-%d", g, i)
					m := h.wait(h.deliver(wire.KindRequest, "echo", nil, body))
					if r, ok := m.(*boundary.Reply); !ok || !bytes.Equal(r.Body, body) {
						t.Errorf("echo %s: %+v", body, m)
					}
				}
			})
		}
		wg.Wait()
		h.shutdown()
	})
}

func TestHealth(t *testing.T) {
	h := backends[2].start(t, nil)
	h.conn.Send(&boundary.Health{ID: 77})
	st := h.next(boundary.TypeHealthStatus).(*boundary.HealthStatus)
	if st.ID != 77 || !st.Healthy || st.Workers != 4 {
		t.Fatalf("health: %+v", st)
	}
	h.shutdown()
}

func TestShutdownDrains(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		h := b.start(t, nil)
		slow := h.deliver(wire.KindRequest, "slow", nil, nil)
		time.Sleep(20 * time.Millisecond) // let it start; correctness does not depend on it
		if err := h.conn.Send(&boundary.Shutdown{Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		late := h.deliver(wire.KindRequest, "echo", nil, nil)
		if f, ok := h.wait(late).(*boundary.Fail); !ok || f.Kind != boundary.FailShuttingDown {
			t.Fatalf("delivery after shutdown: %+v", f)
		}
		if r, ok := h.wait(slow).(*boundary.Reply); !ok || string(r.Body) != "slow done" {
			t.Fatalf("slow: %+v", r)
		}
		st := h.next(boundary.TypeStopped).(*boundary.Stopped)
		if st.Abandoned != 0 {
			t.Fatalf("stopped: %+v", st)
		}
		h.waitEnd(true)
	})
}

func TestShutdownGraceAbandons(t *testing.T) {
	app := testApp(Options{Workers: 2})
	app.HandleFunc("forever", func(ctx context.Context, c *Call) { <-ctx.Done() })
	h := startInproc(t, app, testInit(), nil)
	h.deliver(wire.KindRequest, "forever", nil, nil)
	h.conn.Send(&boundary.Shutdown{Grace: 100 * time.Millisecond})
	st := h.next(boundary.TypeStopped).(*boundary.Stopped)
	if st.Abandoned != 1 || !strings.Contains(st.Message, "unanswered") {
		t.Fatalf("stopped: %+v", st)
	}
	h.waitEnd(true)
}

func TestHostCloses(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		h := b.start(t, nil)
		h.reply("echo", nil, nil)
		h.conn.Close()
		err := h.waitEnd(false)
		if err == nil {
			t.Fatal("enclave ended cleanly without Shutdown")
		}
		if h.serv != nil && !errors.Is(err, ErrHostClosed) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestFirstFrameMustBeInit(t *testing.T) {
	h := startInproc(t, testApp(Options{}), nil, nil)
	h.conn.Send(&boundary.Health{ID: 1})
	f := h.next(boundary.TypeFatal).(*boundary.Fatal)
	if !strings.Contains(f.Message, "want Init") {
		t.Fatalf("fatal: %+v", f)
	}
	if err := h.waitEnd(false); !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v", err)
	}
}

func TestOnInitFailureIsFatal(t *testing.T) {
	app := testApp(Options{OnInit: func(ctx context.Context, rt *Runtime) error {
		if string(rt.Config()) != "bad" {
			return nil
		}
		// OCALLs work during init.
		if _, _, err := rt.Get(ctx, "x"); err != nil {
			return err
		}
		return errors.New("config says bad")
	}})
	in := testInit()
	in.Config = []byte("bad")
	h := newHost(t, nil)
	er, hw := io.Pipe()
	hr, ew := io.Pipe()
	h.serv = make(chan error, 1)
	go func() { h.serv <- app.Serve(context.Background(), er, ew) }()
	h.handshake(hr, hw, nil)
	h.conn.Send(in)
	f := h.next(boundary.TypeFatal).(*boundary.Fatal)
	if !strings.Contains(f.Message, "config says bad") {
		t.Fatalf("fatal: %+v", f)
	}
	h.waitEnd(false)
}

func writeGramineKeys(t *testing.T) string {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "keys"), 0o700)
	os.WriteFile(filepath.Join(dir, "keys", "_sgx_mrenclave"), bytes.Repeat([]byte{1}, 16), 0o600)
	os.WriteFile(filepath.Join(dir, "keys", "_sgx_mrsigner"), bytes.Repeat([]byte{2}, 16), 0o600)
	return dir
}

func TestGramineSealing(t *testing.T) {
	root := writeGramineKeys(t)
	h := startInproc(t, testApp(Options{GramineRoot: root}), testInit(), nil)
	if r := h.reply("seal-mode", nil, nil); string(r.Body) != "gramine" {
		t.Fatalf("mode %q", r.Body)
	}
	h.reply("put", map[string]string{"key": "k"}, []byte("v"))
	if r := h.reply("get", map[string]string{"key": "k"}, nil); string(r.Body) != "v" {
		t.Fatalf("get %q", r.Body)
	}
	h.shutdown()

	// The host cannot downgrade to simulated keys.
	in := testInit()
	in.SealMode = boundary.SealSimulated
	h = startInproc(t, testApp(Options{GramineRoot: root}), in, nil)
	if f := h.fail("put", map[string]string{"key": "k"}, []byte("v")); !strings.Contains(f.Message, "refusing the downgrade") {
		t.Fatalf("downgrade: %+v", f)
	}
	h.shutdown()

	// Asking for Gramine where there is none fails clearly.
	in = testInit()
	in.SealMode = boundary.SealGramine
	h = startInproc(t, testApp(Options{GramineRoot: t.TempDir()}), in, nil)
	if f := h.fail("put", map[string]string{"key": "k"}, []byte("v")); !strings.Contains(f.Message, "Gramine sealing requested but unavailable") {
		t.Fatalf("no gramine: %+v", f)
	}
	h.shutdown()
}

func TestNoPlatformSecret(t *testing.T) {
	in := testInit()
	in.SealSecret = nil
	h := startInproc(t, testApp(Options{}), in, map[string][]byte{})
	if f := h.fail("put", map[string]string{"key": "k"}, []byte("v")); !strings.Contains(f.Message, ErrNoPlatformSecret.Error()) {
		t.Fatalf("put without a platform secret: %+v", f)
	}
	h.shutdown()
}

func TestHandleValidation(t *testing.T) {
	app := New(Options{})
	app.HandleFunc("a", func(context.Context, *Call) {})
	for _, f := range []func(){
		func() { app.HandleFunc("a", func(context.Context, *Call) {}) },
		func() { app.HandleFunc("", func(context.Context, *Call) {}) },
		func() { app.Handle("b", nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		}()
	}
}

func TestAcknowledgedSends(t *testing.T) {
	h := startInproc(t, testApp(Options{}), testInit(), nil)
	// A send with a token is answered by Done once its handler returned:
	// what the handler sent before returning is on the wire first.
	ch := h.deliverAcked(wire.KindSend, "emit", []byte("e1"))
	if m := h.next(boundary.TypeSend); string(m.(*boundary.Send).Body) != "e1" {
		t.Fatalf("emit sent %+v", m)
	}
	h.next(boundary.TypePublish)
	if m, ok := h.wait(ch).(*boundary.Done); !ok {
		t.Fatalf("acknowledged send: got %+v, want Done", m)
	}
	// A publish too; its handler cannot reply to it.
	if m, ok := h.wait(h.deliverAcked(wire.KindPublish, "echo", nil)).(*boundary.Done); !ok {
		t.Fatalf("acknowledged publish: got %+v, want Done", m)
	}
	// A panic or a refusal is a Fail: the host hands the message back.
	if f, ok := h.wait(h.deliverAcked(wire.KindSend, "panic", nil)).(*boundary.Fail); !ok || f.Kind != boundary.FailPanic {
		t.Fatalf("panicking handler: got %+v, want a FailPanic", f)
	}
	if f, ok := h.wait(h.deliverAcked(wire.KindSend, "nobody", nil)).(*boundary.Fail); !ok || f.Kind != boundary.FailNoHandler {
		t.Fatalf("no handler: got %+v, want a FailNoHandler", f)
	}
	// Acknowledged sends leave nothing open: the drain ends with none
	// abandoned.
	if st := h.shutdown(); st.Abandoned != 0 {
		t.Fatalf("stopped with %d abandoned", st.Abandoned)
	}
}

func TestMalformedFramesFailTheirCall(t *testing.T) {
	h := startInproc(t, testApp(Options{}), testInit(), nil)
	// A Deliver whose address is not UTF-8 does not decode; its token is
	// still known, so the host gets a failure instead of a timeout.
	ch := make(chan boundary.Message, 1)
	h.mu.Lock()
	h.waiters[999] = ch
	h.mu.Unlock()
	h.conn.Send(&boundary.Deliver{Token: 999, Kind: wire.KindRequest, Address: "ec\xffho"})
	f := h.wait(ch).(*boundary.Fail)
	if f.Kind != boundary.FailInternal || !strings.Contains(f.Message, "field address") {
		t.Fatalf("fail: %+v", f)
	}
	// A malformed result ends the waiting OCALL with a clear error.
	h.mu.Lock()
	h.badEvid = true
	h.mu.Unlock()
	f = h.fail("evidence", nil, nil)
	if !strings.Contains(f.Message, "malformed frame from the host") || !strings.Contains(f.Message, "evidence_type") {
		t.Fatalf("fail: %+v", f)
	}
	// An answer larger than the host accepts becomes a failure.
	f = h.fail("big", nil, nil)
	if f.Kind != boundary.FailInternal || !strings.Contains(f.Message, "too large") {
		t.Fatalf("big: %+v", f)
	}
	h.reply("echo", nil, nil)
	h.shutdown()
}

func TestGramineEvidence(t *testing.T) {
	root := writeGramineKeys(t)
	os.WriteFile(filepath.Join(root, "user_report_data"), make([]byte, 64), 0o600)
	os.WriteFile(filepath.Join(root, "quote"), []byte("a real quote would be here"), 0o600)
	h := startInproc(t, testApp(Options{GramineRoot: root}), testInit(), nil)
	r := h.reply("evidence", nil, []byte{1, 2, 3})
	if r.Headers["type"] != "sgx-dcap" || string(r.Body) != "a real quote would be here" {
		t.Fatalf("evidence: %+v", r)
	}
	rd, _ := os.ReadFile(filepath.Join(root, "user_report_data"))
	if len(rd) != 64 || rd[0] != 1 || rd[2] != 3 {
		t.Fatalf("report data %x", rd)
	}
	h.shutdown()
}

func TestServeContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	er, hw := io.Pipe()
	hr, ew := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- testApp(Options{}).Serve(ctx, er, ew) }()
	h := newHost(t, nil)
	h.handshake(hr, hw, nil) // no Init: Serve waits for it
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("nil error after cancel")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve ignored its context")
	}
}

func TestOverloadAndDrainHealth(t *testing.T) {
	release := make(chan struct{})
	app := testApp(Options{Workers: 1, MaxQueue: 1})
	app.HandleFunc("block", func(ctx context.Context, c *Call) {
		<-release
		c.Reply(nil, []byte("released"))
	})
	h := startInproc(t, app, testInit(), nil)
	running := h.deliver(wire.KindRequest, "block", nil, nil)
	// Wait until the only worker is inside the handler.
	for {
		h.conn.Send(&boundary.Health{ID: 1})
		if st := h.next(boundary.TypeHealthStatus).(*boundary.HealthStatus); st.Running == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	queued := h.deliver(wire.KindRequest, "echo", nil, []byte("q"))
	over := h.deliver(wire.KindRequest, "echo", nil, nil)
	if f, ok := h.wait(over).(*boundary.Fail); !ok || f.Kind != boundary.FailOverloaded {
		t.Fatalf("overload: %+v", f)
	}
	// A send to an unknown address is dropped with a log line, not an answer.
	h.deliver(wire.KindSend, "nobody", nil, nil)
	h.conn.Send(&boundary.Shutdown{Grace: 10 * time.Second})
	h.conn.Send(&boundary.Health{ID: 2})
	st := h.next(boundary.TypeHealthStatus).(*boundary.HealthStatus)
	if st.Healthy || st.Detail != "draining" || st.Queued != 1 {
		t.Fatalf("health while draining: %+v", st)
	}
	close(release)
	if r := h.wait(running).(*boundary.Reply); string(r.Body) != "released" {
		t.Fatalf("running: %+v", r)
	}
	if r := h.wait(queued).(*boundary.Reply); string(r.Body) != "q" {
		t.Fatalf("queued: %+v", r)
	}
	h.next(boundary.TypeStopped)
	h.waitEnd(true)
	if logs := strings.Join(h.logMessages(), "\n"); !strings.Contains(logs, "dropped a delivery address=nobody") {
		t.Fatalf("logs:\n%s", logs)
	}
}

func TestMainSetsMemoryLimit(t *testing.T) {
	if os.Getenv("GOMEMLIMIT") != "" {
		t.Skip("GOMEMLIMIT set in the environment")
	}
	h := startProcess(t, true, testInit(), nil)
	if r := h.reply("memlimit", nil, nil); string(r.Body) != fmt.Sprint(DefaultMemoryLimit) {
		t.Fatalf("image memory limit %s, want %d", r.Body, DefaultMemoryLimit)
	}
	h.shutdown()
	h = startProcess(t, true, testInit(), nil, "GOMEMLIMIT=64MiB")
	if r := h.reply("memlimit", nil, nil); string(r.Body) != fmt.Sprint(64<<20) {
		t.Fatalf("GOMEMLIMIT ignored: %s", r.Body)
	}
	h.shutdown()
}

func TestRedactPanics(t *testing.T) {
	app := testApp(Options{RedactPanics: true})
	app.HandleFunc("leaky", func(ctx context.Context, c *Call) { panic("secret " + string(c.Body())) })
	h := startInproc(t, app, testInit(), nil)
	f := h.fail("leaky", nil, []byte(secretValue))
	if f.Kind != boundary.FailPanic || strings.Contains(f.Message, secretValue) || !strings.Contains(f.Message, `"leaky" panicked`) {
		t.Fatalf("fail: %+v", f)
	}
	h.shutdown()
	if logs := strings.Join(h.logMessages(), "\n"); strings.Contains(logs, secretValue) {
		t.Fatalf("panic value logged:\n%s", logs)
	}
}

// A node's enclave configuration asks for a worker count in Init; an image
// that leaves Options.Workers unset takes it, one that sets it keeps its
// own.
func TestWorkersFromInit(t *testing.T) {
	for _, tc := range []struct {
		image string
		want  uint32
	}{{"0", 3}, {"2", 2}} {
		in := testInit()
		in.Workers = 3
		h := startProcess(t, true, in, nil, envWorkers+"="+tc.image)
		h.conn.Send(&boundary.Health{ID: 1})
		if st := h.next(boundary.TypeHealthStatus).(*boundary.HealthStatus); st.Workers != tc.want {
			t.Fatalf("image workers %s, Init.Workers 3: the enclave runs %d workers, want %d", tc.image, st.Workers, tc.want)
		}
		h.shutdown()
	}
}

// Init naming a service to join is refused by an image without the
// secured-address layer: it cannot keep the promise.
func TestServiceWithoutLayerIsRefused(t *testing.T) {
	h := startInproc(t, testApp(Options{}), nil, nil)
	in := testInit()
	in.Service = "analytics"
	h.conn.Send(in)
	f := h.next(boundary.TypeFatal).(*boundary.Fatal)
	if !strings.Contains(f.Message, `join as service "analytics"`) || !strings.Contains(f.Message, "trusted/secured") {
		t.Fatalf("fatal: %q", f.Message)
	}
	if err := <-h.serv; !errors.Is(err, ErrProtocol) {
		t.Fatalf("Serve: %v", err)
	}
}
