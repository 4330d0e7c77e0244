// Command hello is the smallest Cloister application: two services on one
// node talk through the event bus. A "greeter" answers requests on the
// address "greeter.hello"; a "caller" asks it five times, once every 200 ms,
// and publishes each answer on "hello.news", which a third consumer prints.
//
//	go run ./examples/hello
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/node"
)

// greeter answers "hello, NAME" to every request on greeter.hello.
type greeter struct{ count int }

func (g *greeter) Start(ctx context.Context, inst *node.Instance) error {
	_, err := inst.Consumer("greeter.hello", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		var name string
		if err := m.Decode(&name); err != nil || name == "" {
			_ = m.Fail(400, "send a name")
			return
		}
		g.count++ // no lock: an instance's handlers never run concurrently
		_ = m.Reply(fmt.Sprintf("hello, %s (greeting #%d from instance %d)", name, g.count, inst.Index()))
	}))
	return err
}

func (g *greeter) Stop(ctx context.Context) error { return nil }

// caller asks the greeter and publishes what it hears.
type caller struct {
	names []string
	out   io.Writer
	done  chan struct{}
	err   error // set before done closes
}

func (c *caller) Start(ctx context.Context, inst *node.Instance) error {
	go func() {
		defer close(c.done)
		b := inst.Bus()
		for _, name := range c.names {
			reply, err := b.Request(context.Background(), "greeter.hello", name, bus.Timeout(2*time.Second))
			if err != nil {
				c.err = fmt.Errorf("asking the greeter: %w", err)
				return
			}
			var text string
			_ = reply.Decode(&text)
			_ = b.Publish(context.Background(), "hello.news", text)
			time.Sleep(200 * time.Millisecond)
		}
		// A failure travels back as a typed error.
		_, err := b.Request(context.Background(), "greeter.hello", "")
		fmt.Fprintln(c.out, "asking without a name:", err)
	}()
	return nil
}

func (c *caller) Stop(ctx context.Context) error { return nil }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := bus.New(bus.WithLogger(logger))
	if err != nil {
		return err
	}
	n, err := node.New(node.Options{Bus: b})
	if err != nil {
		return err
	}
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(shutdownCtx)
	}()
	if _, err := n.Deploy(ctx, func() node.Service { return &greeter{} }, node.DeployOptions{Name: "greeter", Instances: 2}); err != nil {
		return err
	}
	if _, err := b.Consumer("hello.news", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		fmt.Fprintln(out, "news:", string(m.Body()))
	})); err != nil {
		return err
	}
	c := &caller{names: []string{"Ada", "Grace", "Barbara", "Frances", "Radia"}, out: out, done: make(chan struct{})}
	if _, err := n.Deploy(ctx, func() node.Service { return c }, node.DeployOptions{Name: "caller"}); err != nil {
		return err
	}
	select {
	case <-c.done:
	case <-ctx.Done():
	}
	for _, h := range n.Health(context.Background()) {
		fmt.Fprintf(out, "deployment %-8s %s  handled=%d\n", h.Name, h.Status, h.Handled)
	}
	return c.err
}
