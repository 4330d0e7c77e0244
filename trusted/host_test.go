package trusted

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/wire"
)

// The test binary doubles as an enclave image: with envImage set, TestMain
// runs testApp().Main() instead of the tests.
const (
	envImage    = "CLOISTER_TRUSTED_TEST_IMAGE"
	envWorkers  = "CLOISTER_TRUSTED_TEST_WORKERS"
	envPipeEcho = "CLOISTER_TRUSTED_TEST_PIPE_ECHO"
	envConnEcho = "CLOISTER_TRUSTED_TEST_CONN_ECHO"
)

func TestMain(m *testing.M) {
	if os.Getenv(envImage) != "" {
		workers := 4
		if n, err := strconv.Atoi(os.Getenv(envWorkers)); err == nil {
			workers = n
		}
		testApp(Options{Workers: workers, ShutdownGrace: 5 * time.Second}).Main()
	}
	if os.Getenv(envConnEcho) != "" {
		connEcho()
	}
	if os.Getenv(envPipeEcho) != "" {
		pipeEcho()
	}
	os.Exit(m.Run())
}

const secretValue = "TOP-SECRET-METER-READING-4711"

func testApp(opts Options) *App {
	app := New(opts)
	app.HandleFunc("echo", func(ctx context.Context, c *Call) {
		h := map[string]string{"address": c.Address(), "kind": c.Kind().String()}
		for k, v := range c.Headers() {
			h[k] = v
		}
		c.Reply(h, c.Body())
	})
	app.HandleFunc("fail", func(ctx context.Context, c *Call) { c.Fail(42, "nope: "+string(c.Body())) })
	app.HandleFunc("panic", func(ctx context.Context, c *Call) { panic("boom") })
	app.HandleFunc("emit", func(ctx context.Context, c *Call) {
		c.Send(ctx, "out.send", map[string]string{"h": "v"}, c.Body())
		c.Publish(ctx, "out.publish", nil, c.Body())
		if c.ExpectsReply() {
			c.Reply(nil, []byte("emitted"))
		}
	})
	app.HandleFunc("ask", func(ctx context.Context, c *Call) {
		r, err := c.Request(ctx, c.Header("to"), map[string]string{"q": "1"}, c.Body(), time.Second)
		if err != nil {
			var re *RequestError
			if errors.As(err, &re) {
				c.Fail(int(re.Failure), err.Error())
				return
			}
			c.Fail(500, err.Error())
			return
		}
		c.Reply(r.Headers, r.Body)
	})
	app.HandleFunc("put", func(ctx context.Context, c *Call) {
		if err := c.Put(ctx, c.Header("key"), c.Body()); err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(nil, []byte("ok"))
	})
	app.HandleFunc("get", func(ctx context.Context, c *Call) {
		v, ok, err := c.Get(ctx, c.Header("key"))
		switch {
		case err != nil:
			c.Fail(500, err.Error())
		case !ok:
			c.Fail(404, "not found")
		default:
			c.Reply(nil, v)
		}
	})
	var waiting atomic.Int32
	app.HandleFunc("barrier", func(ctx context.Context, c *Call) {
		// Replies only once Workers handlers are inside at the same time.
		waiting.Add(1)
		for waiting.Load()%int32(app.opts.Workers) != 0 {
			select {
			case <-ctx.Done():
				c.Fail(500, "barrier: "+ctx.Err().Error())
				return
			case <-time.After(time.Millisecond):
			}
		}
		c.Reply(nil, []byte("through"))
	})
	app.HandleFunc("async", func(ctx context.Context, c *Call) {
		go func() {
			time.Sleep(20 * time.Millisecond)
			c.Reply(nil, []byte("later"))
		}()
	})
	app.HandleFunc("slow", func(ctx context.Context, c *Call) {
		time.Sleep(200 * time.Millisecond)
		c.Reply(nil, []byte("slow done"))
	})
	app.HandleFunc("log", func(ctx context.Context, c *Call) {
		c.Logger().WithGroup("g").Info("hello from inside", "user", "alice", "n", 3)
		c.Logger().Debug("not sent")
		c.Reply(nil, nil)
	})
	app.HandleFunc("evidence", func(ctx context.Context, c *Call) {
		var rd [64]byte
		copy(rd[:], c.Body())
		e, err := c.Evidence(ctx, rd)
		if err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(map[string]string{"type": e.Type}, e.Quote)
	})
	app.HandleFunc("big", func(ctx context.Context, c *Call) {
		if err := c.Reply(nil, make([]byte, boundary.DefaultMaxFrame+1)); err == nil {
			panic("oversized reply accepted")
		}
	})
	app.HandleFunc("memlimit", func(ctx context.Context, c *Call) {
		c.Reply(nil, []byte(strconv.FormatInt(debug.SetMemoryLimit(-1), 10)))
	})
	app.HandleFunc("seal-mode", func(ctx context.Context, c *Call) { c.Reply(nil, []byte(c.SealMode())) })
	return app
}

// ---- the test host ----

type testHost struct {
	t    testing.TB
	conn *boundary.Conn
	cmd  *exec.Cmd
	exit chan error // process exit (process backends)
	serv chan error // Serve's result (inproc)

	mu       sync.Mutex
	store    map[string][]byte
	logs     []*boundary.Log
	waiters  map[uint64]chan boundary.Message
	storeErr string
	badEvid  bool // answer GetEvidence with a malformed frame
	gets     int  // StoreGet OCALLs
	puts     int  // StorePut OCALLs

	other  chan boundary.Message // Send, Publish, HealthStatus, Stopped, Fatal, Ready
	token  atomic.Uint64
	closed chan struct{}
}

func testInit() *boundary.Init {
	return &boundary.Init{
		Identity:   boundary.Identity{MREnclave: sha256.Sum256([]byte("test image")), MRSigner: sha256.Sum256([]byte("test signer"))},
		Name:       "test",
		SealSecret: []byte("0123456789abcdef0123456789abcdef"),
	}
}

type backend struct {
	name  string
	start func(t testing.TB, store map[string][]byte) *testHost
}

var backends = []backend{
	{"inproc", func(t testing.TB, store map[string][]byte) *testHost {
		return startInproc(t, testApp(Options{Workers: 4, ShutdownGrace: 5 * time.Second}), testInit(), store)
	}},
	{"process-stdio", func(t testing.TB, store map[string][]byte) *testHost {
		return startProcess(t, false, testInit(), store)
	}},
	{"process-fd", func(t testing.TB, store map[string][]byte) *testHost {
		return startProcess(t, true, testInit(), store)
	}},
}

func newHost(t testing.TB, store map[string][]byte) *testHost {
	if store == nil {
		store = map[string][]byte{}
	}
	return &testHost{t: t, store: store, waiters: map[uint64]chan boundary.Message{},
		other: make(chan boundary.Message, 1024), closed: make(chan struct{})}
}

func startInproc(t testing.TB, app *App, init *boundary.Init, store map[string][]byte) *testHost {
	h := newHost(t, store)
	er, hw := io.Pipe()
	hr, ew := io.Pipe()
	h.serv = make(chan error, 1)
	go func() { h.serv <- app.Serve(context.Background(), er, ew) }()
	h.handshake(hr, hw, init)
	return h
}

func startProcess(t testing.TB, fdMode bool, init *boundary.Init, store map[string][]byte, env ...string) *testHost {
	h := newHost(t, store)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), envImage+"=1"), env...)
	cmd.Stderr = os.Stderr
	var r io.Reader
	var w io.Writer
	var child *os.File
	if fdMode {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Non-blocking, so that the runtime poller owns it and Close
		// interrupts a blocked Read.
		syscall.SetNonblock(fds[0], true)
		parent := os.NewFile(uintptr(fds[0]), "host-end")
		child = os.NewFile(uintptr(fds[1]), "enclave-end")
		cmd.ExtraFiles = []*os.File{child}
		cmd.Env = append(cmd.Env, boundary.EnvFD+"=3")
		r, w = parent, parent
	} else {
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		r, w = stdout, stdin
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if child != nil {
		child.Close()
	}
	h.cmd = cmd
	h.exit = make(chan error, 1)
	go func() { h.exit <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
	})
	h.handshake(r, w, init)
	return h
}

func (h *testHost) handshake(r io.Reader, w io.Writer, init *boundary.Init) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := boundary.NewConn(ctx, r, w, boundary.RoleHost, boundary.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.conn = conn
	h.t.Cleanup(func() { conn.Close() })
	go h.readLoop()
	if init == nil {
		return
	}
	if err := conn.Send(init); err != nil {
		h.t.Fatal(err)
	}
	m := h.next(boundary.TypeReady, boundary.TypeFatal)
	if f, ok := m.(*boundary.Fatal); ok {
		h.t.Fatalf("enclave failed to start: %s", f.Message)
	}
}

// readLoop plays the host: it answers storage, request and evidence OCALLs
// itself and routes the rest.
func (h *testHost) readLoop() {
	defer close(h.closed)
	for {
		m, err := h.conn.Recv()
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *boundary.Reply:
			h.route(m.Token, m)
		case *boundary.Fail:
			h.route(m.Token, m)
		case *boundary.Done:
			h.route(m.Token, m)
		case *boundary.Log:
			h.mu.Lock()
			h.logs = append(h.logs, m)
			h.mu.Unlock()
		case *boundary.StorePut:
			h.mu.Lock()
			h.puts++
			res := &boundary.StoreResult{CallID: m.CallID, Error: h.storeErr}
			if h.storeErr == "" {
				h.store[m.Key] = m.Blob
			}
			h.mu.Unlock()
			if m.CallID != 0 { // a posted write gets no answer
				h.conn.Post(res)
			}
		case *boundary.StoreGet:
			h.mu.Lock()
			h.gets++
			b, ok := h.store[m.Key]
			res := &boundary.StoreResult{CallID: m.CallID, Found: ok, Blob: b, Error: h.storeErr}
			h.mu.Unlock()
			h.conn.Post(res)
		case *boundary.Request:
			res := &boundary.RequestResult{CallID: m.CallID}
			switch m.Address {
			case "svc":
				res.Headers = map[string]string{"from": "svc", "q": m.Headers["q"]}
				res.Body = append([]byte("re:"), m.Body...)
			case "silent":
				continue // never answered: the enclave's context decides
			default:
				res.Failure = wire.FailureNoHandlers
				res.Message = "no handlers for " + m.Address
			}
			h.conn.Post(res)
		case *boundary.GetEvidence:
			h.mu.Lock()
			bad := h.badEvid
			h.mu.Unlock()
			if bad {
				h.conn.Post(&boundary.EvidenceResult{CallID: m.CallID, EvidenceType: "\xff"})
				continue
			}
			h.conn.Post(&boundary.EvidenceResult{CallID: m.CallID, EvidenceType: "simulated", Quote: append([]byte("quote:"), m.ReportData[:4]...)})
		default:
			h.other <- m
		}
	}
}

func (h *testHost) route(token uint64, m boundary.Message) {
	h.mu.Lock()
	ch := h.waiters[token]
	delete(h.waiters, token)
	h.mu.Unlock()
	if ch == nil {
		h.t.Errorf("answer for unknown or already answered token %d: %+v", token, m)
		return
	}
	ch <- m
}

// deliver sends a Deliver and returns a channel for its answer (nil for
// send/publish).
func (h *testHost) deliver(kind wire.Kind, address string, headers map[string]string, body []byte) chan boundary.Message {
	return h.deliverWith(kind, false, address, headers, body)
}

// deliverAcked sends a send or publish with a token and returns a channel
// for its Done or Fail.
func (h *testHost) deliverAcked(kind wire.Kind, address string, body []byte) chan boundary.Message {
	return h.deliverWith(kind, true, address, nil, body)
}

func (h *testHost) deliverWith(kind wire.Kind, acked bool, address string, headers map[string]string, body []byte) chan boundary.Message {
	d := &boundary.Deliver{Kind: kind, Address: address, Headers: headers, Body: body, Timeout: 10 * time.Second}
	var ch chan boundary.Message
	if kind == wire.KindRequest || acked {
		d.Token = h.token.Add(1)
		ch = make(chan boundary.Message, 1)
		h.mu.Lock()
		h.waiters[d.Token] = ch
		h.mu.Unlock()
	}
	if err := h.conn.Send(d); err != nil {
		h.t.Fatal(err)
	}
	return ch
}

func (h *testHost) wait(ch chan boundary.Message) boundary.Message {
	h.t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(20 * time.Second):
		h.t.Fatal("no answer from the enclave")
		return nil
	}
}

// request delivers a request and waits for its answer.
func (h *testHost) request(address string, headers map[string]string, body []byte) boundary.Message {
	h.t.Helper()
	return h.wait(h.deliver(wire.KindRequest, address, headers, body))
}

func (h *testHost) reply(address string, headers map[string]string, body []byte) *boundary.Reply {
	h.t.Helper()
	m := h.request(address, headers, body)
	r, ok := m.(*boundary.Reply)
	if !ok {
		h.t.Fatalf("%s: want a reply, got %+v", address, m)
	}
	return r
}

func (h *testHost) fail(address string, headers map[string]string, body []byte) *boundary.Fail {
	h.t.Helper()
	m := h.request(address, headers, body)
	f, ok := m.(*boundary.Fail)
	if !ok {
		h.t.Fatalf("%s: want a failure, got %+v", address, m)
	}
	return f
}

// next returns the next routed frame of one of the types.
func (h *testHost) next(types ...boundary.Type) boundary.Message {
	h.t.Helper()
	for {
		select {
		case m := <-h.other:
			for _, ty := range types {
				if m.Type() == ty {
					return m
				}
			}
			h.t.Fatalf("unexpected %s frame: %+v (want %v)", m.Type(), m, types)
		case <-time.After(20 * time.Second):
			h.t.Fatalf("no %v frame", types)
		}
	}
}

// shutdown sends Shutdown and waits for Stopped and the end of the enclave.
func (h *testHost) shutdown() *boundary.Stopped {
	h.t.Helper()
	if err := h.conn.Send(&boundary.Shutdown{Reason: "test"}); err != nil {
		h.t.Fatal(err)
	}
	st := h.next(boundary.TypeStopped).(*boundary.Stopped)
	h.waitEnd(true)
	return st
}

// waitEnd waits for the enclave to end; clean says whether it must end
// without error.
func (h *testHost) waitEnd(clean bool) error {
	h.t.Helper()
	var ch chan error
	if h.exit != nil {
		ch = h.exit
	} else {
		ch = h.serv
	}
	select {
	case err := <-ch:
		if clean && err != nil {
			h.t.Fatalf("enclave ended with %v", err)
		}
		return err
	case <-time.After(20 * time.Second):
		h.t.Fatal("enclave did not end")
		return nil
	}
}

func (h *testHost) logMessages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var l []string
	for _, m := range h.logs {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s", m.Level, m.Message)
		for _, a := range m.Attrs {
			fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
		}
		l = append(l, b.String())
	}
	return l
}
