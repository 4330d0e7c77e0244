package testenv

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Patience bounds a wait whose context has no deadline. It only keeps a
// broken system from hanging a test: no test asserts how long anything
// takes.
const Patience = 2 * time.Minute

// Condition is what [WaitFor] polls: a func() bool that reports whether
// what is awaited holds, or a func() error that returns nil when it does
// (its last error is reported if the wait fails).
type Condition interface {
	func() bool | func() error
}

// PollInterval is how often WaitFor checks its condition: often enough
// for a test to go on soon after, rarely enough that a condition that
// asks a service (a request into an enclave) does not load it.
const PollInterval = 50 * time.Millisecond

// errNotYet is the last error of a func() bool condition that never held.
var errNotYet = errors.New("not yet")

// WaitFor polls cond until it holds and fails tb (Fatalf, so call it from
// the test's goroutine) when ctx ends first, or Patience passes if ctx has
// no deadline. The failure names what it waited for, how long, and the
// condition's last error. It checks at once, then every PollInterval.
func WaitFor[C Condition](ctx context.Context, tb testing.TB, what string, cond C) {
	tb.Helper()
	var check func() error
	switch c := any(cond).(type) {
	case func() bool:
		check = func() error {
			if c() {
				return nil
			}
			return errNotYet
		}
	case func() error:
		check = c
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, Patience)
		defer cancel()
	}
	start := time.Now()
	ticker := time.NewTicker(PollInterval)
	defer ticker.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			waited := time.Since(start).Round(time.Millisecond)
			if errors.Is(err, errNotYet) {
				tb.Fatalf("gave up waiting for %s after %v (%v)", what, waited, context.Cause(ctx))
			}
			tb.Fatalf("gave up waiting for %s after %v (%v): last: %v", what, waited, context.Cause(ctx), err)
			return
		case <-ticker.C:
		}
	}
}
