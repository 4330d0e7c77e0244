package boundary

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/cloister-dev/cloister/wire"
)

var benchSizes = []int{64, 1 << 10, 64 << 10}

func BenchmarkEncodeDeliver(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := &Deliver{Token: 1, Kind: wire.KindRequest, Address: "counter.inc", Headers: map[string]string{"user": "alice"}, Body: make([]byte, n)}
			buf := make([]byte, 0, n+256)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendFrame(buf[:0], m)
			}
		})
	}
}

func BenchmarkDecodeDeliver(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			f := AppendFrame(nil, &Deliver{Token: 1, Kind: wire.KindRequest, Address: "counter.inc", Headers: map[string]string{"user": "alice"}, Body: make([]byte, n)})[4:]
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(f, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeReplyNoHeaders(b *testing.B) {
	f := AppendFrame(nil, &Reply{Token: 1, Body: make([]byte, 64)})[4:]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(f, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnRoundTrip measures deliver → reply over an in-process pipe
// pair with 1 and 32 deliveries in flight.
func BenchmarkConnRoundTrip(b *testing.B) {
	for _, inflight := range []int{1, 32} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			host, encl := connPair(b, Options{})
			go func() {
				for {
					m, err := encl.Recv()
					if err != nil {
						return
					}
					d := m.(*Deliver)
					encl.Send(&Reply{Token: d.Token, Body: d.Body})
				}
			}()
			done := make(chan struct{}, inflight)
			go func() {
				for {
					if _, err := host.Recv(); err != nil {
						return
					}
					done <- struct{}{}
				}
			}()
			body := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			sent, recv := 0, 0
			for ; sent < inflight && sent < b.N; sent++ {
				host.Send(&Deliver{Token: uint64(sent + 1), Kind: wire.KindRequest, Address: "echo", Body: body})
			}
			for recv < b.N {
				<-done
				recv++
				if sent < b.N {
					sent++
					host.Send(&Deliver{Token: uint64(sent), Kind: wire.KindRequest, Address: "echo", Body: body})
				}
			}
			b.StopTimer()
			s := encl.Stats()
			b.ReportMetric(float64(s.FramesSent)/float64(max(s.Writes, 1)), "frames/write")
		})
	}
}

// BenchmarkReaderBatched decodes a stream of 64-byte Deliver frames that
// arrived batched: the per-frame cost of the reading side.
func BenchmarkReaderBatched(b *testing.B) {
	var batch []byte
	for i := range 256 {
		batch = AppendFrame(batch, &Deliver{Token: uint64(i + 1), Kind: wire.KindRequest, Address: "counter.inc", Body: make([]byte, 64)})
	}
	rd := bytes.NewReader(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(batch) / 256))
	var r *Reader
	for i := 0; b.Loop(); i++ {
		if i%256 == 0 {
			rd.Reset(batch)
			r = NewReader(rd, Limits{})
		}
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}
