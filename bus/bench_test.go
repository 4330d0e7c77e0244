package bus_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/cloister-dev/cloister/bus"
)

var sizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"1KiB", 1024}}

func newBenchBus(b *testing.B) *bus.Bus {
	bb, err := bus.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bb.Close(context.Background()) })
	return bb
}

// BenchmarkChannelPingPong is the reference: one round trip between two
// goroutines over unbuffered channels.
func BenchmarkChannelPingPong(b *testing.B) {
	ping, pong := make(chan []byte), make(chan []byte)
	go func() {
		for m := range ping {
			pong <- m
		}
	}()
	msg := make([]byte, 64)
	for b.Loop() {
		ping <- msg
		<-pong
	}
	close(ping)
}

func BenchmarkRequestReply(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			bb := newBenchBus(b)
			if _, err := bb.Consumer("bench.echo", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
				_ = m.Reply(m.Body())
			})); err != nil {
				b.Fatal(err)
			}
			body := make([]byte, sz.n)
			ctx := context.Background()
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bb.Request(ctx, "bench.echo", body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRequestReplyParallel runs requesters on every P.
func BenchmarkRequestReplyParallel(b *testing.B) {
	bb := newBenchBus(b)
	for range 2 {
		if _, err := bb.Consumer("bench.echo", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
			_ = m.Reply(m.Body())
		})); err != nil {
			b.Fatal(err)
		}
	}
	body := make([]byte, 64)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := bb.Request(ctx, "bench.echo", body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchDelivery measures fire-and-forget delivery to consumers consumers
// of one address (send reaches one of them, publish all), waiting at the
// end until every delivery was handled so the next run starts clean.
func benchDelivery(b *testing.B, consumers int, publish bool) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			bb := newBenchBus(b)
			var got atomic.Int64
			for range consumers {
				if _, err := bb.Consumer("bench.sink", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) { got.Add(1) }),
					bus.BufferSize(1<<20)); err != nil {
					b.Fatal(err)
				}
			}
			op, perMessage := bb.Send, int64(1)
			if publish {
				op, perMessage = bb.Publish, int64(consumers)
			}
			body := make([]byte, sz.n)
			ctx := context.Background()
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			want := int64(0)
			for b.Loop() {
				if err := op(ctx, "bench.sink", body); err != nil {
					b.Fatal(err)
				}
				want += perMessage
			}
			for got.Load() < want {
			}
		})
	}
}

func BenchmarkSend(b *testing.B) { benchDelivery(b, 1, false) }

// BenchmarkPublish4 publishes to four consumers.
func BenchmarkPublish4(b *testing.B) { benchDelivery(b, 4, true) }
