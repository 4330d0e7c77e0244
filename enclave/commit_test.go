package enclave

import (
	"context"
	"errors"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/internal/testenv"
)

// gatedStore is a FileStore whose batches wait for the test: each batch
// signals entered, then fails with what the test sends on proceed, or is
// written when that is nil.
type gatedStore struct {
	*FileStore
	entered chan []StoreWrite
	proceed chan error
}

func newGatedStore() *gatedStore {
	return &gatedStore{entered: make(chan []StoreWrite), proceed: make(chan error)}
}

func (g *gatedStore) wrap(fs *FileStore) Store { g.FileStore = fs; return g }

func (g *gatedStore) PutBatch(ctx context.Context, writes []StoreWrite) error {
	g.entered <- writes
	if err := <-g.proceed; err != nil {
		return err
	}
	return g.FileStore.PutBatch(ctx, writes)
}

type result struct {
	m   *bus.Message
	err error
}

func (h *harness) requestAsync(t *testing.T, address string, opts ...bus.DeliveryOption) chan result {
	ch := make(chan result, 1)
	go func() {
		m, err := h.request(t, address, nil, opts...)
		ch <- result{m, err}
	}()
	return ch
}

// heldFrames returns how many frames the current instance's committer holds.
func (h *harness) heldFrames() int {
	s := h.e.cur.Load()
	if s == nil {
		return 0
	}
	s.commit.mu.Lock()
	defer s.commit.mu.Unlock()
	return len(s.commit.held)
}

// TestReplyWaitsForItsWrite: the reply of a handler that wrote to protected
// storage reaches the requester only once the write is durable.
func TestReplyWaitsForItsWrite(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		g := newGatedStore()
		h := newHarness(t, backend, harnessOpts{store: g.wrap})
		for want := 1; want <= 3; want++ {
			res := h.requestAsync(t, "test.incr", bus.Header("key", "counter"))
			writes := <-g.entered
			if len(writes) != 1 {
				t.Fatalf("batch of %d writes, want 1", len(writes))
			}
			// The reply has reached the host and waits there.
			testenv.WaitFor(t.Context(), t, "the reply to be held", func() bool { return h.heldFrames() > 0 })
			select {
			case r := <-res:
				t.Fatalf("reply released before its write was durable: %v %v", r.err, bodyOf(r.m))
			default:
			}
			g.proceed <- nil
			r := <-res
			if r.err != nil || string(r.m.Body()) != strconv.Itoa(want) {
				t.Fatalf("incr: %v %q", r.err, bodyOf(r.m))
			}
			// Applied: the journal on disk holds the blob.
			if !journalHolds(t, h.stateDir, writes[0]) {
				t.Fatalf("the acknowledged write of %q is not in the journal", writes[0].Key)
			}
		}
	})
}

// TestStoreWriteFailureFailsTheReply: when the host cannot write, the reply
// that waited for the write fails as unavailable, the failure is logged,
// and the instance restarts with what is durable (its cache is gone).
func TestStoreWriteFailureFailsTheReply(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		g := newGatedStore()
		h := newHarness(t, backend, harnessOpts{store: g.wrap, backoff: time.Millisecond})
		res := h.requestAsync(t, "test.incr", bus.Header("key", "counter"))
		<-g.entered
		g.proceed <- nil
		if r := <-res; r.err != nil || string(r.m.Body()) != "1" {
			t.Fatalf("first incr: %v", r.err)
		}
		res = h.requestAsync(t, "test.incr", bus.Header("key", "counter"))
		<-g.entered
		g.proceed <- errors.New("disk on fire")
		r := <-res
		var re *bus.ReplyError
		if !errors.As(r.err, &re) || re.Code != CodeUnavailable {
			t.Fatalf("reply after a failed write: %v %q, want a %d failure", r.err, bodyOf(r.m), CodeUnavailable)
		}
		if !contains(h.logs.String(), "protected-storage write failed") || !contains(h.logs.String(), "disk on fire") {
			t.Fatalf("the failure is not logged:\n%s", h.logs.String())
		}
		testenv.WaitFor(t.Context(), t, "the restart", func() bool {
			return h.e.Restarts() >= 1 && h.e.Health(context.Background()) == nil
		})
		// The lost write is not served from a stale cache: the count goes on
		// from what is on disk.
		res = h.requestAsync(t, "test.incr", bus.Header("key", "counter"))
		<-g.entered
		g.proceed <- nil
		if r := <-res; r.err != nil || string(r.m.Body()) != "2" {
			t.Fatalf("incr after the restart: %v %q, want 2", r.err, bodyOf(r.m))
		}
	})
}

// TestHostileImageFloodingOCALLs: an image that keeps more OCALLs
// outstanding than the host allows, with an hour-long timeout each, is
// ended and restarted, and says why in the log.
func TestHostileImageFloodingOCALLs(t *testing.T) {
	const limit = 32
	serve := hostileImage(func(c *boundary.Conn, _ io.Writer) error {
		c.Send(&boundary.Ready{Workers: 1, Addresses: []string{"hostile.in"}})
		for i := range 10 * limit {
			if err := c.Send(&boundary.Request{CallID: uint64(i + 1), Timeout: time.Hour, Address: "silent.out"}); err != nil {
				return err
			}
		}
		for {
			if _, err := c.Recv(); err != nil {
				return err
			}
		}
	})
	logs := &logBuffer{}
	b, err := bus.New()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	// A consumer that never answers: each request waits for its timeout.
	if _, err := b.Consumer("silent.out", bus.HandlerFunc(func(context.Context, *bus.Message) {}), bus.Inline()); err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Simulation: testRoot, Name: "hostile", Backend: NewInProc(serve), Bus: b, MaxOCALLs: limit,
		RestartBackoff: time.Millisecond, Logger: debugLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Stop(ctx)
	}()
	testenv.WaitFor(t.Context(), t, "the instance to be ended and restarted", func() bool { return e.Restarts() >= 1 })
	if l := logs.String(); !contains(l, "exceeded its OCALL limit") || !contains(l, "limit="+strconv.Itoa(limit)) {
		t.Fatalf("no clear log of the OCALL limit:\n%s", l)
	}
}

// TestRequestTimeoutIsCapped: an image cannot make its host wait longer
// than Config.MaxOCALLTimeout for a request it makes.
func TestRequestTimeoutIsCapped(t *testing.T) {
	h := newHarness(t, "inproc", harnessOpts{config: func(c *Config) { c.MaxOCALLTimeout = 50 * time.Millisecond }})
	if _, err := h.bus.Consumer("silent.out", bus.HandlerFunc(func(context.Context, *bus.Message) {}), bus.Inline()); err != nil {
		t.Fatal(err)
	}
	// The handler asks for the requester's remaining time, or the bus's
	// default.
	_, err := h.request(t, "test.request", nil, bus.Header("to", "silent.out"))
	var re *bus.ReplyError
	if !errors.As(err, &re) || re.Code != 502 || (!contains(re.Message, "timeout") && !contains(re.Message, "deadline")) {
		t.Fatalf("request to a silent address: %v, want the handler's 502 with a timeout\n%s", err, h.logs.String())
	}
}

// TestPostedWritesAreBounded: an image posting writes faster than the host
// commits them is made to wait (the host stops reading it) once the queue
// holds maxQueuedWrites; nothing is lost, every write is committed in the
// end.
func TestPostedWritesAreBounded(t *testing.T) {
	const n = 3 * maxQueuedWrites
	serve := hostileImage(func(c *boundary.Conn, _ io.Writer) error {
		c.Send(&boundary.Ready{Workers: 1, Addresses: []string{"flood.in"}})
		for i := range n {
			if err := c.Send(&boundary.StorePut{Key: "k" + strconv.Itoa(i%100)}); err != nil {
				return err
			}
		}
		for {
			m, err := c.Recv()
			if err != nil {
				return err
			}
			if _, ok := m.(*boundary.Shutdown); ok {
				return nil
			}
		}
	})
	fs, err := NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g := newGatedStore()
	e, err := New(Config{Simulation: testRoot, Name: "flood", Backend: NewInProc(serve), Store: g.wrap(fs), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		go func() {
			for range g.entered {
				g.proceed <- nil
			}
		}()
		e.Stop(ctx)
	}()
	c := e.cur.Load().commit
	queued := func() (int, uint64) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue), c.seq
	}
	first := <-g.entered // the writer is busy with the first batch
	testenv.WaitFor(t.Context(), t, "the queue to fill", func() bool { q, _ := queued(); return q == maxQueuedWrites })
	if q, seq := queued(); q != maxQueuedWrites || int(seq) != len(first)+maxQueuedWrites {
		t.Fatalf("queue %d, writes received %d: want the reader to wait at %d queued", q, seq, maxQueuedWrites)
	}
	committed := len(first)
	g.proceed <- nil
	for committed < n {
		committed += len(<-g.entered)
		g.proceed <- nil
	}
	if committed != n {
		t.Fatalf("%d writes committed, want %d", committed, n)
	}
}

// journalHolds reports whether the journal in dir holds w as the latest
// write of its key.
func journalHolds(t *testing.T, dir string, w StoreWrite) bool {
	t.Helper()
	writes, err := JournalWrites(dir)
	if err != nil {
		t.Fatal(err)
	}
	var last []byte
	found := false
	for _, x := range writes {
		if x.Key == w.Key {
			last, found = x.Blob, true
		}
	}
	return found && string(last) == string(w.Blob)
}
