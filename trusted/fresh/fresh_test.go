package fresh_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/internal/syncbuf"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/fresh"
)

// The tests run a trusted image on the inproc backend with the host's real
// file store (wrapped by a hostile host that can roll single keys back)
// and a registry that stands in for the coordinator group: it keeps one
// register and applies the group's rules (a higher counter, or a resend of
// the same version; anything else is a conflict).

const subject = "service/counter/0"

var group = bytes.Repeat([]byte{0x67}, 32)

// registry is the coordinator group's register for one subject.
type registry struct {
	mu          sync.Mutex
	counter     uint64
	digest      []byte
	registers   int           // successful Register calls
	unavailable int           // the next calls that answer ErrUnavailable
	gate        chan struct{} // if set, Register waits for it
	entered     chan uint64   // if set, gets the counter of each Register call
}

func (r *registry) Registered(ctx context.Context) (uint64, []byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counter, bytes.Clone(r.digest), nil
}

func (r *registry) Register(ctx context.Context, counter uint64, digest []byte) error {
	r.mu.Lock()
	gate, entered := r.gate, r.entered
	r.mu.Unlock()
	if entered != nil {
		entered <- counter
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unavailable > 0 {
		r.unavailable--
		return fmt.Errorf("%w: admitting a replica", fresh.ErrUnavailable)
	}
	if counter < r.counter || (counter == r.counter && !bytes.Equal(digest, r.digest)) {
		return fmt.Errorf("%w: registered %d", fresh.ErrConflict, r.counter)
	}
	r.counter, r.digest = counter, bytes.Clone(digest)
	r.registers++
	return nil
}

func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.registers
}

// hostile is the host's store with a way to hand out an older blob of a key
// (the first one written since it was armed), or none.
type hostile struct {
	*enclave.FileStore
	mu      sync.Mutex
	history map[string][][]byte
	old     bool // answer every Get with the key's first blob
	gone    bool // answer every Get with "not found"
	puts    atomic.Int64
}

func (h *hostile) Put(ctx context.Context, key string, blob []byte) error {
	return h.PutBatch(ctx, []enclave.StoreWrite{{Key: key, Blob: blob}})
}

func (h *hostile) PutBatch(ctx context.Context, writes []enclave.StoreWrite) error {
	h.mu.Lock()
	for _, w := range writes {
		h.history[w.Key] = append(h.history[w.Key], bytes.Clone(w.Blob))
	}
	h.mu.Unlock()
	h.puts.Add(int64(len(writes)))
	return h.FileStore.PutBatch(ctx, writes)
}

func (h *hostile) Get(ctx context.Context, key string) ([]byte, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.gone:
		return nil, false, nil
	case h.old && len(h.history[key]) > 0:
		return h.history[key][0], true, nil
	}
	return h.FileStore.Get(ctx, key)
}

type rig struct {
	t        *testing.T
	bus      *bus.Bus
	root     *attest.SimulationRoot
	dir      string
	reg      *registry
	interval time.Duration
	logs     *syncbuf.Buffer
	logger   *slog.Logger
	store    *hostile
	e        *enclave.Enclave
	cons     []*bus.Consumer
	tracked  bool // the image tracks its storage (else: plain version 1 blobs)
}

func newRig(t *testing.T, interval time.Duration) *rig {
	r := &rig{t: t, dir: t.TempDir(), reg: &registry{}, interval: interval, logs: &syncbuf.Buffer{}, tracked: true}
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

// app is the image: put, get and the tracker's counters.
func (r *rig) app() *trusted.App {
	var tracker atomic.Pointer[fresh.Tracker]
	opts := trusted.Options{Workers: 40, StoreCacheEntries: -1}
	if r.tracked {
		opts.OnInit = func(ctx context.Context, rt *trusted.Runtime) error {
			t, err := fresh.Start(ctx, rt, r.reg, fresh.Options{Subject: subject, Group: group, Interval: r.interval})
			if err != nil {
				return err
			}
			tracker.Store(t)
			return nil
		}
	}
	app := trusted.New(opts)
	app.HandleFunc("put", func(ctx context.Context, c *trusted.Call) {
		if err := c.Put(ctx, c.Header("key"), c.Body()); err != nil {
			c.Fail(500, err.Error())
			return
		}
		c.Reply(nil, []byte("ok"))
	})
	app.HandleFunc("get", func(ctx context.Context, c *trusted.Call) {
		v, found, err := c.Get(ctx, c.Header("key"))
		switch {
		case errors.Is(err, trusted.ErrRolledBack):
			c.Fail(409, "rolled back: "+err.Error())
		case err != nil:
			c.Fail(500, err.Error())
		case !found:
			c.Fail(404, "not found")
		default:
			c.Reply(nil, v)
		}
	})
	app.HandleFunc("counters", func(ctx context.Context, c *trusted.Call) {
		b, _ := json.Marshal(tracker.Load().Counters())
		c.Reply(nil, b)
	})
	return app
}

// start runs the image on the state directory; it returns the start error.
func (r *rig) start() error {
	r.t.Helper()
	fs, err := enclave.NewFileStore(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	r.store = &hostile{FileStore: fs, history: map[string][][]byte{}}
	e, err := enclave.New(enclave.Config{Name: "counter", Backend: enclave.NewInProc(r.app().Serve), Bus: r.bus, Store: r.store,
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
	r.e = e
	r.t.Cleanup(r.stop)
	return nil
}

func (r *rig) mustStart() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("start: %v", err)
	}
}

// stop stops the enclave and closes its store.
func (r *rig) stop() {
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
	r.store.Close()
	r.e = nil
}

func (r *rig) try(address, key, body string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := r.bus.Request(ctx, address, []byte(body), bus.Timeout(20*time.Second), bus.WithHeaders(bus.Headers{"key": key}))
	if err != nil {
		return "", err
	}
	return string(m.Body()), nil
}

func (r *rig) put(key, value string) {
	r.t.Helper()
	if got, err := r.try("put", key, value); err != nil || got != "ok" {
		r.t.Fatalf("put %s: %q, %v", key, got, err)
	}
}

func (r *rig) get(key string) (string, error) { return r.try("get", key, "") }

func (r *rig) counters() fresh.Counters {
	r.t.Helper()
	b, err := r.try("counters", "", "")
	if err != nil {
		r.t.Fatal(err)
	}
	var c fresh.Counters
	if err := json.Unmarshal([]byte(b), &c); err != nil {
		r.t.Fatal(err)
	}
	return c
}

// copyDir replaces to with a copy of from (the host keeping, or putting
// back, a copy of a state directory).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.RemoveAll(to); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}

// TestRolledBackStateRefusedAtStart: the host restores an older copy of
// the state directory; the instance refuses to start, naming both
// counters, and the same state that is current starts.
func TestRolledBackStateRefusedAtStart(t *testing.T) {
	r := newRig(t, 0)
	r.mustStart()
	r.put("a", "1")
	r.stop()
	old := filepath.Join(t.TempDir(), "old")
	copyDir(t, r.dir, old)

	r.mustStart()
	r.put("a", "2")
	r.stop()
	current := filepath.Join(t.TempDir(), "current")
	copyDir(t, r.dir, current)

	copyDir(t, old, r.dir)
	err := r.start()
	if err == nil || !strings.Contains(err.Error(), "rolled back") || !strings.Contains(err.Error(), "registered counter") {
		t.Fatalf("start from a rolled-back state directory: %v", err)
	}
	t.Logf("refused: %v", err)
	if !strings.Contains(r.logs.String(), "refusing to start from rolled-back state") {
		t.Fatal("the refusal is not logged")
	}

	copyDir(t, current, r.dir)
	r.mustStart()
	if v, err := r.get("a"); err != nil || v != "2" {
		t.Fatalf("get a after a restart from current state: %q, %v", v, err)
	}
}

// TestRolledBackBlobRefused: a Get the host answers with an older blob of
// the key, or with none, is refused and counted.
func TestRolledBackBlobRefused(t *testing.T) {
	r := newRig(t, 0)
	r.mustStart()
	r.put("a", "1")
	r.put("a", "2")
	r.put("b", "1")
	if v, err := r.get("a"); err != nil || v != "2" {
		t.Fatalf("get a: %q, %v", v, err)
	}
	r.store.mu.Lock()
	r.store.old = true
	r.store.mu.Unlock()
	_, err := r.get("a")
	var rf *bus.ReplyError
	if !errors.As(err, &rf) || rf.Code != 409 || !strings.Contains(rf.Message, "rolled back") {
		t.Fatalf("get of a rolled-back key: %v", err)
	}
	r.store.mu.Lock()
	r.store.old, r.store.gone = false, true
	r.store.mu.Unlock()
	if _, err = r.get("b"); !errors.As(err, &rf) || rf.Code != 409 || !strings.Contains(rf.Message, "missing") {
		t.Fatalf("get of a dropped key: %v", err)
	}
	if _, err = r.get("never-written"); !errors.As(err, &rf) || rf.Code != 404 {
		t.Fatalf("get of a key never written: %v", err)
	}
	if c := r.counters(); c.RolledBack != 2 {
		t.Fatalf("counters: %+v", c)
	}
}

// TestIntervalZeroHoldsReplies: a reply that follows a write leaves only
// once a checkpoint covering it is registered, and one checkpoint covers
// the writes of every request waiting for it (group commit).
func TestIntervalZeroHoldsReplies(t *testing.T) {
	r := newRig(t, 0)
	r.mustStart()
	before := r.reg.count()
	r.put("a", "1")
	if n := r.reg.count(); n != before+1 {
		t.Fatalf("%d checkpoints registered before the reply, want 1", n-before)
	}

	// Hold the group while 32 requests write; then let it answer.
	gate, entered := make(chan struct{}), make(chan uint64, 64)
	r.reg.mu.Lock()
	r.reg.gate, r.reg.entered = gate, entered
	r.reg.mu.Unlock()
	before = r.reg.count()
	puts := r.store.puts.Load()
	var wg sync.WaitGroup
	var replies atomic.Int32
	for i := range 32 {
		wg.Go(func() {
			r.put(fmt.Sprint("k", i), "v")
			replies.Add(1)
		})
	}
	<-entered // a checkpoint is on its way and cannot finish
	// Every write reaches the host (each request waits after its write);
	// the index of the checkpoint in flight is one more.
	testenv.WaitFor(t.Context(), t, "every write at the host", func() bool { return r.store.puts.Load() >= puts+33 })
	if n := replies.Load(); n != 0 {
		t.Fatalf("%d replies left before their writes were registered", n)
	}
	close(gate)
	wg.Wait()
	if n := r.reg.count() - before; n > 2 {
		t.Fatalf("%d checkpoints for 32 concurrent writes, want at most 2", n)
	}
	if c := r.counters(); c.Checkpoints != uint64(r.reg.count()) || c.CheckpointFailures != 0 {
		t.Fatalf("counters %+v, registry saw %d", c, r.reg.count())
	}
}

// TestIntervalDoesNotHold: with an interval, replies do not wait for the
// group; a checkpoint follows within the interval.
func TestIntervalDoesNotHold(t *testing.T) {
	r := newRig(t, 20*time.Millisecond)
	r.mustStart()
	gate := make(chan struct{})
	r.reg.mu.Lock()
	r.reg.gate = gate
	r.reg.mu.Unlock()
	before := r.reg.count()
	r.put("a", "1") // would hang if the reply waited for the gate
	if n := r.reg.count(); n != before {
		t.Fatalf("%d checkpoints registered before the reply", n-before)
	}
	close(gate)
	testenv.WaitFor(t.Context(), t, "a checkpoint", func() bool { return r.reg.count() > before })
}

// TestUnavailableIsRetried: the group's 503 answers are retried and
// counted; the reply leaves once the checkpoint is in.
func TestUnavailableIsRetried(t *testing.T) {
	r := newRig(t, 0)
	r.mustStart()
	r.reg.mu.Lock()
	r.reg.unavailable = 2
	r.reg.mu.Unlock()
	r.put("a", "1")
	if c := r.counters(); c.CheckpointFailures != 2 {
		t.Fatalf("counters: %+v", c)
	}
}

// TestConflictStopsServing: another instance registered a newer version
// of the state; the next checkpoint is refused and the instance stops,
// without answering the request that wrote.
func TestConflictStopsServing(t *testing.T) {
	r := newRig(t, 0)
	r.mustStart()
	r.put("a", "1")
	r.reg.mu.Lock()
	r.reg.counter += 10 // a fork registered from the same state
	r.reg.mu.Unlock()
	if got, err := r.try("put", "a", "2"); err == nil {
		t.Fatalf("put answered %q after the group refused its checkpoint", got)
	}
	testenv.WaitFor(t.Context(), t, "the instance stops", func() bool { return strings.Contains(r.logs.String(), "stop serving") })
}

// TestStartRefusals: a missing index while a version is registered, or
// an index of the same counter with another digest, is refused; no
// registration at all (a first start) is accepted.
func TestStartRefusals(t *testing.T) {
	r := newRig(t, 0)
	r.mustStart()
	r.put("a", "1")
	r.stop()
	r.reg.mu.Lock()
	r.reg.digest = bytes.Repeat([]byte{1}, 32) // same counter, other digest
	r.reg.mu.Unlock()
	if err := r.start(); err == nil || !strings.Contains(err.Error(), "another digest") {
		t.Fatalf("start with a forked index: %v", err)
	}
	os.RemoveAll(r.dir) // the host drops the whole state
	if err := r.start(); err == nil || !strings.Contains(err.Error(), "no local state index") {
		t.Fatalf("start without state: %v", err)
	}
	r.reg = &registry{} // a new group that remembers nothing: first start
	r.mustStart()
}

// TestVersion1BlobsOpen: blobs written without freshness (version 1) still
// open once it is on, as the oldest version; a newer write replaces them.
func TestVersion1BlobsOpen(t *testing.T) {
	r := newRig(t, 0)
	r.tracked = false
	r.mustStart()
	r.put("a", "plain")
	r.stop()
	r.tracked = true
	r.mustStart()
	if v, err := r.get("a"); err != nil || v != "plain" {
		t.Fatalf("get of a version 1 blob: %q, %v", v, err)
	}
	r.put("a", "versioned")
	r.stop()
	r.mustStart()
	if v, err := r.get("a"); err != nil || v != "versioned" {
		t.Fatalf("get after restart: %q, %v", v, err)
	}
}
