package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
)

// Two nodes whose embedded NATS servers form a cluster through a route; a
// consumer on one node answers a request made on the other.
func ExampleStart() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	first, err := cluster.Start(ctx, cluster.Options{Name: "first", ClusterListen: "127.0.0.1:-1", Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer first.Close()
	second, err := cluster.Start(ctx, cluster.Options{
		Name:          "second",
		ClusterListen: "127.0.0.1:-1",
		Routes:        []string{first.ClusterURL()},
		Logger:        quiet,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer second.Close()

	b1, _ := bus.New(bus.WithTransport(first.Transport()))
	defer b1.Close(ctx)
	b2, _ := bus.New(bus.WithTransport(second.Transport()))
	defer b2.Close(ctx)

	_, _ = b1.Consumer("greeter", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		_ = m.Reply("hello, " + string(m.Body()))
	}))
	// The consumer's interest reaches the second server through the route
	// shortly; until then the request finds no handlers.
	for {
		r, err := b2.Request(ctx, "greeter", "ada", bus.Timeout(time.Second))
		if err == nil {
			fmt.Println(string(r.Body()))
			return
		}
		if ctx.Err() != nil {
			fmt.Println(err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Output: hello, ada
}
