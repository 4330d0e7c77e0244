package testenv

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a testing.TB that keeps what Fatalf said and ends the
// goroutine as Fatalf does.
type recorder struct {
	testing.TB
	failure string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failure = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// wait runs WaitFor on a recorder in its own goroutine and returns what it
// failed with ("" if the condition held).
func wait[C Condition](t *testing.T, ctx context.Context, what string, cond C) string {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		WaitFor(ctx, r, what, cond)
	}()
	<-done
	return r.failure
}

func TestWaitForHolds(t *testing.T) {
	var n atomic.Int64
	if f := wait(t, t.Context(), "the third poll", func() bool { return n.Add(1) == 3 }); f != "" {
		t.Fatalf("a condition that holds failed: %s", f)
	}
	n.Store(0)
	if f := wait(t, t.Context(), "no error", func() error {
		if n.Add(1) < 3 {
			return errors.New("early")
		}
		return nil
	}); f != "" {
		t.Fatalf("a condition that holds failed: %s", f)
	}
}

func TestWaitForReportsWhatItWaitedFor(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	f := wait(t, ctx, "the moon", func() bool { return false })
	if !strings.Contains(f, "gave up waiting for the moon") || !strings.Contains(f, "deadline exceeded") {
		t.Fatalf("failure %q does not say what was awaited and why it ended", f)
	}
	ctx, cancel = context.WithCancel(t.Context())
	cancel()
	f = wait(t, ctx, "a reply", func() error { return errors.New("connection refused") })
	if !strings.Contains(f, "gave up waiting for a reply") || !strings.Contains(f, "last: connection refused") || !strings.Contains(f, "canceled") {
		t.Fatalf("failure %q does not carry the condition's last error", f)
	}
}
