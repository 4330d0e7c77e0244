package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
)

// TestDurableAddressSurvivesConsumerLoss sends to a durable address, lets a
// first consumer take part of the stream and then lose its connection with
// messages unacknowledged (handled but not yet acknowledged, and buffered),
// and checks that a second consumer gets every message the first did not
// finish: none is lost, duplicates carry the same message ID.
func TestDurableAddressSurvivesConsumerLoss(t *testing.T) {
	const address, n = "jobs.work", 200
	opts := cluster.Options{Name: "durable", StoreDir: t.TempDir(), Durable: []string{address}, AckWait: 500 * time.Millisecond}
	node := startNode(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	newBus := func() (*bus.Bus, *cluster.Transport) {
		tr, err := node.NewTransport(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := bus.New(bus.WithTransport(tr), bus.WithLogger(quietLogger()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(context.Background()) })
		return b, tr
	}
	sender, _ := newBus()
	for i := range n {
		if err := sender.Send(ctx, address, fmt.Sprintf("job-%d", i)); err != nil {
			t.Fatalf("durable send %d: %v", i, err)
		}
	}

	var mu sync.Mutex
	done := map[string]string{} // message ID -> body, acknowledged or not
	first, firstTr := newBus()
	stuck := make(chan struct{})
	var handledFirst int
	_, err := first.Consumer(address, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		mu.Lock()
		handledFirst++
		h := handledFirst
		mu.Unlock()
		if h > 50 {
			<-stuck // the consumer hangs: this message and those buffered are never acknowledged
			return
		}
		mu.Lock()
		done[m.Header(cluster.HeaderMessageID)] = string(m.Body())
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, ctx, "the first consumer to take part of the stream", func() bool { mu.Lock(); defer mu.Unlock(); return handledFirst > 50 })
	// The first consumer's connection goes away (as when its process dies).
	_ = firstTr.Close()
	close(stuck)

	second, _ := newBus()
	redelivered := 0
	_, err = second.Consumer(address, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		mu.Lock()
		defer mu.Unlock()
		id := m.Header(cluster.HeaderMessageID)
		if id == "" {
			t.Errorf("durable delivery without a message ID")
		}
		if m.Header(cluster.HeaderDelivery) != "1" {
			redelivered++
		}
		if _, dup := done[id]; !dup {
			done[id] = string(m.Body())
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, ctx, "every message to be consumed", func() bool { mu.Lock(); defer mu.Unlock(); return len(done) == n })
	mu.Lock()
	defer mu.Unlock()
	bodies := map[string]bool{}
	for _, b := range done {
		bodies[b] = true
	}
	for i := range n {
		if !bodies[fmt.Sprintf("job-%d", i)] {
			t.Fatalf("job-%d was lost", i)
		}
	}
	if redelivered == 0 {
		t.Fatalf("the messages the first consumer left were not redelivered")
	}
	t.Logf("%d messages, %d redelivered to the second consumer", n, redelivered)
}

func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
