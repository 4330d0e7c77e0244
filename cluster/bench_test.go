package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
)

// The benchmarks run across two embedded servers routed on loopback: the
// consumer's connection is on server 0, the sender's on server 1 (both
// in-process connections, as a node's own). Each measures the bus on the
// cluster transport and, in the same run on the same servers, raw nats.go
// doing the same thing, so the two can be compared directly:
//
//	go test -run '^$' -bench . -benchtime 2s ./cluster/

const benchBody = 1024

type benchPair struct {
	consumer, sender         *bus.Bus
	rawConsumer, rawSender   *nats.Conn
	consumerNode, senderNode *cluster.Node
}

func newBenchPair(b *testing.B) *benchPair {
	b.Helper()
	nodes := startCluster(b, 2)
	for _, n := range nodes {
		n.Server().SetLoggerV2(benchLog{b}, false, false, false)
	}
	p := &benchPair{consumerNode: nodes[0], senderNode: nodes[1]}
	ctx := context.Background()
	mk := func(n *cluster.Node) *bus.Bus {
		tr, err := n.NewTransport(ctx)
		if err != nil {
			b.Fatal(err)
		}
		bb, err := bus.New(bus.WithTransport(tr), bus.WithLogger(quietLogger()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = bb.Close(context.Background()) })
		return bb
	}
	raw := func(n *cluster.Node) *nats.Conn {
		nc, err := nats.Connect("", nats.InProcessServer(n.Server()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		return nc
	}
	p.consumer, p.sender = mk(nodes[0]), mk(nodes[1])
	p.rawConsumer, p.rawSender = raw(nodes[0]), raw(nodes[1])
	return p
}

// settleBench waits until the sender's server sees the subject's interest.
func (p *benchPair) settle(b *testing.B, subject string) {
	deadline := time.Now().Add(20 * time.Second)
	for !p.senderNode.Server().GlobalAccount().SubscriptionInterest(subject) {
		if time.Now().After(deadline) {
			b.Fatalf("interest in %s never reached the sender's server", subject)
		}
		time.Sleep(time.Millisecond)
	}
}

// concurrently runs b.N calls of fn spread over c goroutines.
func concurrently(b *testing.B, c int, fn func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, c)
	b.ResetTimer()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := fn(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func BenchmarkRequestReply(b *testing.B) {
	p := newBenchPair(b)
	body := make([]byte, benchBody)
	if _, err := p.consumer.Consumer("bench.echo", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		_ = m.Reply(m.Body())
	})); err != nil {
		b.Fatal(err)
	}
	if _, err := p.rawConsumer.QueueSubscribe("raw.echo", "raw", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		b.Fatal(err)
	}
	_ = p.rawConsumer.Flush()
	p.settle(b, cluster.SendPrefix+"bench.echo")
	p.settle(b, "raw.echo")
	ctx := context.Background()
	for _, c := range []int{1, 32} {
		b.Run(fmt.Sprintf("bus/requesters=%d", c), func(b *testing.B) {
			b.SetBytes(benchBody)
			concurrently(b, c, func() error {
				_, err := p.sender.Request(ctx, "bench.echo", body)
				return err
			})
		})
		b.Run(fmt.Sprintf("nats/requesters=%d", c), func(b *testing.B) {
			b.SetBytes(benchBody)
			concurrently(b, c, func() error {
				_, err := p.rawSender.Request("raw.echo", body, 30*time.Second)
				return err
			})
		})
	}
}

func BenchmarkSend(b *testing.B) {
	p := newBenchPair(b)
	body := make([]byte, benchBody)
	var busGot, rawGot atomic.Int64
	c, err := p.consumer.Consumer("bench.sink", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) { busGot.Add(1) }), bus.BufferSize(1<<16))
	if err != nil {
		b.Fatal(err)
	}
	sub, err := p.rawConsumer.QueueSubscribe("raw.sink", "raw", func(m *nats.Msg) { rawGot.Add(1) })
	if err != nil {
		b.Fatal(err)
	}
	_ = sub.SetPendingLimits(1<<16, 1<<30)
	_ = p.rawConsumer.Flush()
	p.settle(b, cluster.SendPrefix+"bench.sink")
	p.settle(b, "raw.sink")
	ctx := context.Background()
	// wait counts a run as done when every message arrived or was
	// refused (counted, never silent) by the consumer.
	// It gives up (and fails) if messages went missing, as when NATS cut
	// a slow consumer off.
	wait := func(b *testing.B, got *atomic.Int64, lost func() int64, start int64) {
		deadline := time.Now().Add(20 * time.Second)
		for got.Load()+lost()-start < int64(b.N) {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d messages arrived", got.Load()+lost()-start, b.N)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	// window keeps at most sendWindow messages in flight, for bus and raw
	// NATS alike: NATS core drops what a slow consumer cannot take (and
	// cuts it off), so an unbounded sender measures losses, not throughput.
	const sendWindow = 8192
	window := func(sent, got *atomic.Int64, start int64) {
		n := sent.Add(1)
		for n-(got.Load()-start) > sendWindow {
			time.Sleep(20 * time.Microsecond)
		}
	}
	for _, conc := range []int{1, 32} {
		b.Run(fmt.Sprintf("bus/senders=%d", conc), func(b *testing.B) {
			b.SetBytes(benchBody)
			start := busGot.Load() + int64(c.Stats().Overflowed)
			var sent atomic.Int64
			concurrently(b, conc, func() error {
				window(&sent, &busGot, start)
				return p.sender.Send(ctx, "bench.sink", body)
			})
			b.StartTimer()
			wait(b, &busGot, func() int64 { return int64(c.Stats().Overflowed) }, start)
			b.StopTimer()
			b.ReportMetric(float64(c.Stats().Overflowed), "refused")
		})
		b.Run(fmt.Sprintf("nats/senders=%d", conc), func(b *testing.B) {
			b.SetBytes(benchBody)
			dropped := func() int64 { d, _ := sub.Dropped(); return int64(d) }
			start := rawGot.Load() + dropped()
			var sent atomic.Int64
			concurrently(b, conc, func() error {
				window(&sent, &rawGot, start)
				return p.rawSender.Publish("raw.sink", body)
			})
			b.StartTimer()
			wait(b, &rawGot, dropped, start)
			b.StopTimer()
			b.ReportMetric(float64(dropped()), "dropped")
		})
	}
}

type benchLog struct{ b *testing.B }

func (l benchLog) Noticef(format string, v ...any) {}
func (l benchLog) Warnf(format string, v ...any)   { l.b.Logf("server: "+format, v...) }
func (l benchLog) Fatalf(format string, v ...any)  { l.b.Logf("server: "+format, v...) }
func (l benchLog) Errorf(format string, v ...any)  { l.b.Logf("server: "+format, v...) }
func (l benchLog) Debugf(format string, v ...any)  {}
func (l benchLog) Tracef(format string, v ...any)  {}
