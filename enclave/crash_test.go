package enclave

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/internal/testapp"
	"github.com/cloister-dev/cloister/internal/testenv"
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
			testenv.WaitFor(t.Context(), t, "the restart", func() bool { return h.e.Health(context.Background()) == nil })
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
	if n := readCounter(t, h.stateDir, testRoot); n < acked.Load() {
		t.Fatalf("reopened store holds %d, but %d was acknowledged", n, acked.Load())
	}
}

// readCounter opens dir as a new host would (a new FileStore, replaying
// its journal, and a new enclave instance under root) and returns
// test.incr's counter.
func readCounter(t *testing.T, dir string, root *attest.SimulationRoot) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fs, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.New()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	e, err := New(Config{Simulation: root, Name: "test-enclave", Image: testImage, Backend: NewProcess(ProcessOptions{}), Bus: b, Store: fs, Logger: discardLogger()})
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
	n, err := strconv.ParseInt(string(m.Body()), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Environment of the host child process (see hostChild).
const (
	envHostChild  = "ENCLAVE_TEST_HOST_CHILD"   // the state directory
	envHostRoot   = "ENCLAVE_TEST_HOST_ROOT"    // the simulation root's directory, shared by every host
	envHostImage  = "ENCLAVE_TEST_HOST_IMAGE"   // the test image's path
	envHostKillAt = "ENCLAVE_TEST_HOST_KILL_AT" // the batch before whose sync the host kills itself
)

// TestHostKilledBeforeItsSyncLosesNothingAcknowledged runs the host in a
// child process that increments test.incr's counter and prints every value
// it saw acknowledged, and SIGKILLs itself between writing a batch to its
// journal and syncing it. Round after round on the same directory, every
// value after a restart counts on from the last acknowledged one, and so
// does a new host at the end.
func TestHostKilledBeforeItsSyncLosesNothingAcknowledged(t *testing.T) {
	dir, rootDir := t.TempDir(), t.TempDir()
	root, err := attest.LoadOrCreateSimulationRoot(rootDir)
	if err != nil {
		t.Fatal(err)
	}
	var acked int64
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envHostChild+"="+dir, envHostRoot+"="+rootDir, envHostImage+"="+testImage.Path,
			envHostKillAt+"="+strconv.Itoa(1+2*round))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		seen := 0
		for sc.Scan() {
			n, err := strconv.ParseInt(sc.Text(), 10, 64)
			if err != nil || n <= acked {
				t.Fatalf("round %d: host acknowledged %q after %d had been: an acknowledged write was lost", round, sc.Text(), acked)
			}
			acked = n
			seen++
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: host child ended with %v, want killed by itself before a sync:\n%s", round, err, stderr.String())
		}
		t.Logf("round %d: %d increments acknowledged before the kill, counter %d", round, seen, acked)
	}
	if n := readCounter(t, dir, root); n < acked {
		t.Fatalf("reopened store holds %d, but %d was acknowledged", n, acked)
	}
}

// hostChild is the host of TestHostKilledBeforeItsSyncLosesNothingAcknowledged:
// it serves the test image with a FileStore on the directory it is given,
// increments the counter one request at a time, prints each acknowledged
// value, and kills itself before the sync of the batch numbered by
// envHostKillAt.
func hostChild() {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "host child:", err)
		os.Exit(2)
	}
	killAt, _ := strconv.Atoi(os.Getenv(envHostKillAt))
	img, err := Load(os.Getenv(envHostImage))
	if err != nil {
		fail(err)
	}
	fs, err := NewFileStore(os.Getenv(envHostChild))
	if err != nil {
		fail(err)
	}
	root, err := attest.LoadOrCreateSimulationRoot(os.Getenv(envHostRoot))
	if err != nil {
		fail(err)
	}
	var batches atomic.Int64
	fs.beforeSync = func() error {
		if batches.Add(1) == int64(killAt) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
		return nil
	}
	ctx := context.Background()
	b, err := bus.New()
	if err != nil {
		fail(err)
	}
	e, err := New(Config{Simulation: root, Name: "host-child", Image: img, Backend: NewProcess(ProcessOptions{}), Bus: b, Store: fs, Logger: discardLogger()})
	if err != nil {
		fail(err)
	}
	if err := e.Start(ctx); err != nil {
		fail(err)
	}
	if _, err := b.Consumer("test.incr", e, bus.Inline()); err != nil {
		fail(err)
	}
	for {
		m, err := b.Request(ctx, "test.incr", nil, bus.Header("key", "counter"), bus.Timeout(20*time.Second))
		if err != nil {
			fail(err)
		}
		fmt.Println(string(m.Body()))
	}
}
