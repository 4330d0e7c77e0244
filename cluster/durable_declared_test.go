package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
)

// TestDurableIsTheAddresss checks that durability is declared once, by the
// node that owns the address: a sender on another connection that does not
// list it (as cloister send, or a service started with NATS_URL) still
// sends durably, so a message sent while nobody consumes waits in
// JetStream for the consumer.
func TestDurableIsTheAddresss(t *testing.T) {
	const address = "orders.placed"
	owner := startNode(t, cluster.Options{Name: "owner", NATSListen: "127.0.0.1:-1", StoreDir: t.TempDir(), Durable: []string{address}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sender, err := cluster.Start(ctx, cluster.Options{Name: "sender", Servers: []string{owner.ClientURL()}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sender.Close() })
	sb, err := bus.New(bus.WithTransport(sender.Transport()), bus.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Send(ctx, address, "o-1"); err != nil {
		t.Fatalf("send with nobody consuming: %v", err)
	}
	if err := sb.Send(ctx, "orders.other", "x"); err != nil { // not durable: dropped, no error
		t.Fatal(err)
	}
	stats, err := owner.Transport().DurableStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := stats[address].Pending; got != 1 {
		t.Fatalf("JetStream holds %d messages for %s, want 1 (stats %v)", got, address, stats)
	}
	ob, err := bus.New(bus.WithTransport(owner.Transport()), bus.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	if _, err := ob.Consumer(address, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) { got <- string(m.Body()) })); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if b != `"o-1"` && b != "o-1" {
			t.Fatalf("got %q", b)
		}
	case <-ctx.Done():
		t.Fatal("the message sent while nobody consumed never arrived")
	}
}

func FuzzDurableConsumerName(f *testing.F) {
	for _, s := range []string{"orders.placed", "water.readings", "a_b-c.d", "x.*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, a string) {
		if bus.ValidateAddress(a) != nil {
			return
		}
		back, ok := cluster.DurableAddressOf(cluster.DurableConsumerName(a))
		if !ok || back != a {
			t.Fatalf("%q → %q → %q %v", a, cluster.DurableConsumerName(a), back, ok)
		}
	})
}
