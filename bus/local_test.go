package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/bus/bustest"
)

// The in-process transport declares no bustest.Features: its delivery is
// at most once, and nothing that connects its buses can restart.
func TestLocalNetworkConformance(t *testing.T) {
	bustest.Run(t, bustest.Harness{
		Transports: func(t *testing.T, n int) []bus.Transport {
			net := bus.NewLocalNetwork()
			out := make([]bus.Transport, n)
			for i := range out {
				out[i] = net.Attach()
			}
			return out
		},
	})
}

// TestLocalTimeoutsAndClose checks the in-process node's one timer: a
// request with a short timeout started after one with a long timeout
// still ends at its own deadline, the long one keeps waiting, and closing
// the node ends it at once.
func TestLocalTimeoutsAndClose(t *testing.T) {
	node := bus.NewLocalNetwork().Attach()
	b, err := bus.New(bus.WithTransport(node))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Consumer("silent", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {})); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	long := make(chan error, 1)
	go func() {
		_, err := b.Request(ctx, "silent", "long", bus.Timeout(time.Hour))
		long <- err
	}()
	for i := 0; i < 3; i++ {
		if _, err := b.Request(ctx, "silent", "short", bus.Timeout(20*time.Millisecond)); !errors.Is(err, bus.ErrTimeout) {
			t.Fatalf("short request %d: got %v, want ErrTimeout", i, err)
		}
	}
	select {
	case err := <-long:
		t.Fatalf("long request ended early: %v", err)
	default:
	}
	cctx, cancel := context.WithCancel(ctx)
	cancelled := make(chan error, 1)
	go func() {
		_, err := b.Request(cctx, "silent", "cancelled", bus.Timeout(time.Hour))
		cancelled <- err
	}()
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: got %v, want context.Canceled", err)
	}
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-long; !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("long request after Close: got %v, want ErrClosed", err)
	}
}
