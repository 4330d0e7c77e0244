package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/cloister-dev/cloister/bus"
)

// TestObserverSeesEveryOperation checks that an observer is told of sends,
// publishes, requests (with their failure kind) and replies, by address.
func TestObserverSeesEveryOperation(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	obs := func(o bus.Outcome) {
		mu.Lock()
		defer mu.Unlock()
		seen[o.Op.String()+" "+o.Address+" "+failureName(o.Err)]++
		if o.Op == bus.OpRequest && o.Elapsed <= 0 {
			t.Errorf("request outcome without elapsed time: %+v", o)
		}
	}
	b, err := bus.New(bus.WithObserver(obs))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	ctx := context.Background()
	handled := make(chan struct{}, 4)
	if _, err := b.Consumer("echo", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		if m.ReplyExpected() {
			if string(m.Body()) == "fail" {
				_ = m.Fail(7, "no")
			} else {
				_ = m.Reply(m.Body())
			}
		}
		handled <- struct{}{}
	})); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(ctx, "echo", "x"); err != nil {
		t.Fatal(err)
	}
	<-handled
	if err := b.Publish(ctx, "echo", "x"); err != nil {
		t.Fatal(err)
	}
	<-handled
	if _, err := b.Request(ctx, "echo", "hi"); err != nil {
		t.Fatal(err)
	}
	<-handled
	if _, err := b.Request(ctx, "echo", "fail"); !errors.Is(err, bus.ErrRecipientFailure) {
		t.Fatalf("want a recipient failure, got %v", err)
	}
	<-handled
	if _, err := b.Request(ctx, "nobody", "hi"); !errors.Is(err, bus.ErrNoHandlers) {
		t.Fatalf("want no handlers, got %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]int{
		"send echo ok": 1, "publish echo ok": 1, "request echo ok": 1, "reply echo ok": 2,
		"request echo recipient-failure": 1, "request nobody no-handlers": 1,
	}
	for k, n := range want {
		if seen[k] != n {
			t.Errorf("%q: seen %d times, want %d (all: %v)", k, seen[k], n, seen)
		}
	}
}

func failureName(err error) string {
	if err == nil {
		return "ok"
	}
	return bus.FailureOf(err).String()
}

// TestConsumerStatsCountPauses checks the pause counter and flag.
func TestConsumerStatsCountPauses(t *testing.T) {
	b, err := bus.New()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	c, err := b.Consumer("p", bus.HandlerFunc(func(context.Context, *bus.Message) {}))
	if err != nil {
		t.Fatal(err)
	}
	c.Pause()
	c.Pause() // already paused: not another pause
	if st := c.Stats(); st.Pauses != 1 || !st.Paused {
		t.Fatalf("after Pause: %+v", st)
	}
	c.Resume()
	if st := c.Stats(); st.Pauses != 1 || st.Paused {
		t.Fatalf("after Resume: %+v", st)
	}
	if got := len(b.Consumers()); got != 1 {
		t.Fatalf("Consumers: %d, want 1", got)
	}
}
