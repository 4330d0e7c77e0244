package enclave

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/internal/testapp"
)

// errSimulatedCrash stops a batch after it was written to the journal and
// before the journal was synced, as a host crash there would (the record is
// taken back: unsynced data may be lost).
var errSimulatedCrash = errors.New("simulated host crash before the journal sync")

// TestCrashesLoseNothingAcknowledged increments a counter in protected
// storage, one request at a time, while the enclave process is SIGKILLed
// between its Put and its reply, and the host "crashes" between a batch's
// writes and its sync (the batch stops there and the instance with its
// in-memory state is thrown away). Whatever a requester saw acknowledged
// must survive: every later answer counts on from it, and so does a new
// host that reopens the state directory (replaying its journal). The loop is bounded in time.
func TestCrashesLoseNothingAcknowledged(t *testing.T) {
	var (
		crashNext atomic.Bool  // the next batch stops before its sync
		acked     atomic.Int64 // the last value a requester saw
		inFlight  atomic.Int64 // the value the request in flight may write
		violation atomic.Value // why a batch found its reply already released
	)
	hook := func() error {
		// The request in flight has not been answered yet: its write is
		// not durable until this batch returns.
		if a, f := acked.Load(), inFlight.Load(); f != 0 && a >= f {
			violation.Store("a batch was still being committed when the reply it covers reached the requester: acked " + strconv.FormatInt(a, 10))
		}
		if crashNext.CompareAndSwap(true, false) {
			return errSimulatedCrash
		}
		return nil
	}
	h := newHarness(t, "process", harnessOpts{
		backoff: time.Millisecond,
		env:     []string{testapp.EnvKillable + "=1"},
		store:   func(fs *FileStore) Store { fs.beforeSync = hook; return fs },
		config:  func(c *Config) { c.MaxRestartBackoff = 20 * time.Millisecond },
	})
	deadline := time.Now().Add(8 * time.Second)
	kills, crashes := 0, 0
	for i := 0; i < 150 && time.Now().Before(deadline); i++ {
		opts := []bus.DeliveryOption{bus.Header("key", "counter")}
		switch i % 5 {
		case 1:
			opts = append(opts, bus.Header("die", "1"))
			kills++
		case 3:
			crashNext.Store(true)
			crashes++
		}
		inFlight.Store(acked.Load() + 1)
		m, err := h.request(t, "test.incr", nil, opts...)
		inFlight.Store(0)
		if err != nil {
			// Not acknowledged: wait for the instance to come back.
			waitFor(t, 30*time.Second, "the restart", func() bool { return h.e.Health(context.Background()) == nil })
			continue
		}
		if i%5 == 1 {
			t.Fatalf("request %d: the enclave was to die before replying, got %q", i, m.Body())
		}
		n, perr := strconv.ParseInt(string(m.Body()), 10, 64)
		if perr != nil || n <= acked.Load() {
			t.Fatalf("request %d: counter %q after %d was acknowledged: an acknowledged write was lost", i, m.Body(), acked.Load())
		}
		acked.Store(n)
	}
	if v := violation.Load(); v != nil {
		t.Fatal(v)
	}
	if acked.Load() == 0 || kills == 0 || crashes == 0 {
		t.Fatalf("nothing tested: acked %d, kills %d, crashes %d", acked.Load(), kills, crashes)
	}
	t.Logf("%d increments acknowledged across %d enclave kills and %d host crashes, %d restarts", acked.Load(), kills, crashes, h.e.Restarts())

	// A new host reopens the state directory.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	fs, err := NewFileStore(h.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.New()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	e, err := New(Config{Name: "test-enclave", Image: testImage, Backend: NewProcess(ProcessOptions{}), Bus: b, Store: fs, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer e.Stop(ctx)
	if _, err := b.Consumer("test.get", e, bus.Inline()); err != nil {
		t.Fatal(err)
	}
	m, err := b.Request(ctx, "test.get", nil, bus.Header("key", "counter"))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.ParseInt(string(m.Body()), 10, 64); n < acked.Load() {
		t.Fatalf("reopened store holds %d, but %d was acknowledged", n, acked.Load())
	}
}
