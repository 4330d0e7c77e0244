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
// in-process connections, as a node's own). Each measures, in the same run
// on the same servers and in alternating chunks, three ways of doing the
// same thing:
//
//   - bus: the bus API on the cluster transport (codecs, interceptors, the
//     consumer's buffer and goroutine: what an application gets);
//   - transport: the cluster transport alone, its DeliverFunc answering
//     in the NATS callback (the cost of this package's layer);
//   - nats: raw nats.go.
//
// Run with:
//
//	go test -run '^$' -bench . -benchtime 20000x -count 5 ./cluster/

const benchBody = 1024

type benchPair struct {
	consumer, sender         *bus.Bus
	trConsumer, trSender     *cluster.Transport
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
	tr := func(n *cluster.Node) *cluster.Transport {
		t, err := n.NewTransport(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = t.Close() })
		return t
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
	p.trConsumer, p.trSender = tr(nodes[0]), tr(nodes[1])
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

// runOps runs n calls of fn spread over c goroutines and returns how long
// they took.
func runOps(c, n int, fn func() error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, c)
	t0 := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := fn(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(t0)
	close(errs)
	return d, <-errs
}

// side is one way of doing a benchmark's operation.
type side struct {
	name string
	op   func() error
	// drain, if set, waits until a chunk's n messages have arrived.
	drain func(n int)
	total time.Duration
}

// sideBySide runs b.N operations on each side in alternating chunks, so
// that all see the same load on a shared machine, and reports each one's
// time per operation and its throughput as a fraction of the last side's
// (raw NATS).
func sideBySide(b *testing.B, c, chunk int, sides ...*side) {
	b.SetBytes(benchBody)
	b.ResetTimer()
	for i, done := 0, 0; done < b.N; i, done = i+1, done+chunk {
		n := min(chunk, b.N-done)
		// Rotate which side goes first, so none always pays for the
		// garbage or the wake-ups another left behind.
		for k := range sides {
			s := sides[(i+k)%len(sides)]
			t0 := time.Now()
			if _, err := runOps(c, n, s.op); err != nil {
				b.Fatal(err)
			}
			if s.drain != nil {
				s.drain(n)
			}
			s.total += time.Since(t0)
		}
	}
	b.StopTimer()
	base := sides[len(sides)-1]
	for _, s := range sides {
		b.ReportMetric(float64(s.total.Nanoseconds())/float64(b.N), s.name+"-ns/op")
		if s != base {
			b.ReportMetric(float64(base.total)/float64(s.total), s.name+"/"+base.name)
		}
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
	if _, err := p.trConsumer.Subscribe("bench.trecho", bus.SubscribeOptions{}, func(d *bus.Delivery) {
		if d.Responder != nil {
			_ = d.Responder.Respond(context.Background(), &bus.Envelope{Body: d.Body})
		}
	}); err != nil {
		b.Fatal(err)
	}
	if _, err := p.rawConsumer.QueueSubscribe("raw.echo", "raw", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		b.Fatal(err)
	}
	_ = p.rawConsumer.Flush()
	for _, s := range []string{cluster.SendPrefix + "bench.echo", cluster.SendPrefix + "bench.trecho", "raw.echo"} {
		p.settle(b, s)
	}
	ctx := context.Background()
	env := &bus.Envelope{Address: "bench.trecho", Body: body}
	for _, c := range []int{1, 32} {
		b.Run(fmt.Sprintf("requesters=%d", c), func(b *testing.B) {
			sideBySide(b, c, 100*c,
				&side{name: "bus", op: func() error { _, err := p.sender.Request(ctx, "bench.echo", body); return err }},
				&side{name: "transport", op: func() error {
					ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					defer cancel()
					_, err := p.trSender.Request(ctx, env, bus.RouteOptions{})
					return err
				}},
				&side{name: "nats", op: func() error { _, err := p.rawSender.Request("raw.echo", body, 30*time.Second); return err }},
			)
		})
	}
}

func BenchmarkSend(b *testing.B) {
	p := newBenchPair(b)
	body := make([]byte, benchBody)
	var busGot, trGot, rawGot atomic.Int64
	c, err := p.consumer.Consumer("bench.sink", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) { busGot.Add(1) }), bus.BufferSize(1<<16))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := p.trConsumer.Subscribe("bench.trsink", bus.SubscribeOptions{}, func(d *bus.Delivery) { trGot.Add(1) }); err != nil {
		b.Fatal(err)
	}
	sub, err := p.rawConsumer.QueueSubscribe("raw.sink", "raw", func(m *nats.Msg) { rawGot.Add(1) })
	if err != nil {
		b.Fatal(err)
	}
	_ = sub.SetPendingLimits(1<<16, 1<<30)
	_ = p.rawConsumer.Flush()
	for _, s := range []string{cluster.SendPrefix + "bench.sink", cluster.SendPrefix + "bench.trsink", "raw.sink"} {
		p.settle(b, s)
	}
	ctx := context.Background()
	// drain waits until a chunk has arrived or been refused (counted,
	// never silent) by the consumer. A chunk is small enough for NATS
	// not to cut the consumer off as slow; if messages still go missing
	// it gives up.
	drain := func(got *atomic.Int64, lost func() int64) func(int) {
		var expect int64
		return func(n int) {
			expect += int64(n)
			deadline := time.Now().Add(20 * time.Second)
			for got.Load()+lost() < expect {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d messages arrived", got.Load()+lost(), expect)
				}
				time.Sleep(10 * time.Microsecond)
			}
		}
	}
	refused := func() int64 { return int64(c.Stats().Overflowed) }
	dropped := func() int64 { d, _ := sub.Dropped(); return int64(d) }
	none := func() int64 { return 0 }
	env := &bus.Envelope{Address: "bench.trsink", Body: body}
	for _, conc := range []int{1, 32} {
		b.Run(fmt.Sprintf("senders=%d", conc), func(b *testing.B) {
			busGot.Store(-refused())
			trGot.Store(0)
			rawGot.Store(-dropped())
			sideBySide(b, conc, 2000,
				&side{name: "bus", op: func() error { return p.sender.Send(ctx, "bench.sink", body) }, drain: drain(&busGot, refused)},
				&side{name: "transport", op: func() error { return p.trSender.Send(ctx, env, bus.RouteOptions{}) }, drain: drain(&trGot, none)},
				&side{name: "nats", op: func() error { return p.rawSender.Publish("raw.sink", body) }, drain: drain(&rawGot, dropped)},
			)
			b.ReportMetric(float64(refused()+dropped()), "lost")
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
