package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/bus/bustest"
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/internal/testenv"
)

// TestDurableDeliveryHeaders: what the conformance suite cannot see of a
// durable address (bustest checks its at-least-once delivery): every
// delivery carries the stream's message ID, the same on a redelivery, and
// Cloister-Delivery counts the deliveries.
func TestDurableDeliveryHeaders(t *testing.T) {
	const address = "jobs.headers"
	d := durableSystem(t, bustest.DurableOptions{N: 1, Addresses: []string{address}, AckWait: 5 * time.Minute})
	b, err := bus.New(bus.WithTransport(d.Transports[0]), bus.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var ids, counts []string
	if _, err := b.Consumer(address, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		mu.Lock()
		ids = append(ids, m.Header(cluster.HeaderMessageID))
		counts = append(counts, m.Header(cluster.HeaderDelivery))
		first := len(ids) == 1
		mu.Unlock()
		if first {
			panic("the first delivery fails")
		}
	})); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(ctx, address, "job"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(ctx, t, "the message to be acknowledged", func() bool { return d.Held(address) == 0 })
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 2 || ids[0] == "" || ids[0] != ids[1] {
		t.Fatalf("message IDs of the deliveries: %q, want two equal ones", ids)
	}
	if counts[0] != "1" || counts[1] != "2" {
		t.Fatalf("%s of the deliveries: %q, want 1 then 2", cluster.HeaderDelivery, counts)
	}
}
