package enclave

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/internal/testapp"
	"github.com/cloister-dev/cloister/internal/testenv"
)

// TestRestartBacksOffUntilTheEnclaveComesBack: after a crash, launches
// that fail are retried with backoff until one succeeds.
func TestRestartBacksOffUntilTheEnclaveComesBack(t *testing.T) {
	app := testapp.New(2)
	var launches atomic.Int32
	serve := func(ctx context.Context, r io.Reader, w io.Writer) error {
		n := launches.Add(1)
		if n >= 2 && n <= 4 { // the second to fourth launches fail at once
			if c, ok := r.(io.Closer); ok {
				c.Close()
			}
			if c, ok := w.(io.Closer); ok {
				c.Close()
			}
			return errors.New("simulated crash at start")
		}
		return app.Serve(ctx, r, w)
	}
	logs := &logBuffer{}
	b, _ := bus.New()
	defer b.Close(context.Background())
	e, err := New(Config{Simulation: testRoot, Name: "flaky", Image: testImage, Backend: NewInProc(serve), Bus: b, Logger: debugLogger(logs),
		RestartBackoff: 10 * time.Millisecond, MaxRestartBackoff: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer e.Stop(context.Background())
	if _, err := b.Consumer("test.empty", e); err != nil {
		t.Fatal(err)
	}
	e.cur.Load().proc.Kill() // crash
	testenv.WaitFor(t.Context(), t, "the enclave to come back", func() bool { return e.Health(context.Background()) == nil })
	if got := launches.Load(); got != 5 || e.Restarts() != 4 {
		t.Fatalf("launches %d, restarts %d; want 5 and 4", got, e.Restarts())
	}
	if _, err := b.Request(context.Background(), "test.empty", nil, bus.Timeout(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if !contains(logs.String(), "restart failed") || !contains(logs.String(), "simulated crash at start") {
		t.Fatalf("logs do not explain the failed restarts:\n%s", logs.String())
	}
}
