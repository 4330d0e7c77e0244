package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
)

func clientBus(t *testing.T, url string) *bus.Bus {
	t.Helper()
	n := startNode(t, cluster.Options{Name: "client", Servers: []string{url}})
	b, err := bus.New(bus.WithTransport(n.Transport()), bus.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// TestDisconnectFailsPendingRequests shuts the server down under two
// clients: a request waiting for its reply fails at once with
// ErrDisconnected (its timeout is an hour), new requests fail at once
// while the server is away, and once a server is back on the same address
// the clients reconnect, resubscribe and requests succeed again.
func TestDisconnectFailsPendingRequests(t *testing.T) {
	srv := startNode(t, cluster.Options{Name: "first", NATSListen: "127.0.0.1:-1"})
	url := srv.ClientURL()
	addr := srv.Server().Addr().String()
	consumer, requester := clientBus(t, url), clientBus(t, url)

	arrived := make(chan struct{}, 16)
	release := make(chan struct{})
	_, err := consumer.Consumer("slow.svc", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		arrived <- struct{}{}
		if string(m.Body()) == "wait" {
			<-release
		}
		_ = m.Reply("ok")
	}), bus.BufferSize(100))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := requester.Request(ctx, "slow.svc", "wait", bus.Timeout(time.Hour))
		done <- err
	}()
	<-arrived
	srv.Server().Shutdown()
	select {
	case err := <-done:
		if !errors.Is(err, cluster.ErrDisconnected) || !errors.Is(err, bus.ErrDelivery) {
			t.Fatalf("request in flight when the server went away: %v, want ErrDisconnected", err)
		}
	case <-ctx.Done():
		t.Fatal("a request in flight hung when the server went away")
	}
	close(release) // the consumer handles one message at a time
	if _, err := requester.Request(ctx, "slow.svc", "x", bus.Timeout(time.Hour)); !errors.Is(err, cluster.ErrDisconnected) {
		t.Fatalf("request while disconnected: %v, want ErrDisconnected", err)
	}

	startNode(t, cluster.Options{Name: "second", NATSListen: addr})
	for {
		_, err := requester.Request(ctx, "slow.svc", "x", bus.Timeout(2*time.Second))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("requests never succeeded after the server came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
