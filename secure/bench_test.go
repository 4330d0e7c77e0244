package secure

import (
	"fmt"
	"testing"

	"github.com/cloister-dev/cloister/wire"
)

var benchSizes = []int{64, 1 << 10, 16 << 10, 64 << 10}

// BenchmarkSeal measures sealing one envelope (with two protected headers).
func BenchmarkSeal(b *testing.B) {
	k := mustKey(b, addr, 1)
	s := mustSealer(b, k)
	hdr := map[string]string{"content-type": "application/json", "sensor": "s-17"}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("%dB", n), func(b *testing.B) {
			p := make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := s.Seal(wire.KindSend, hdr, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen measures opening one envelope from a known sender (subkey
// cached, window advancing by one each time).
func BenchmarkOpen(b *testing.B) {
	k := mustKey(b, addr, 1)
	hdr := map[string]string{"content-type": "application/json", "sensor": "s-17"}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("%dB", n), func(b *testing.B) {
			s := mustSealer(b, k)
			o := mustOpener(b, OpenerOptions{}, k)
			p := make([]byte, n)
			// Pre-seal a ring of envelopes; reopen needs fresh ones, so make a
			// new opener whenever the ring is used up (outside the timer).
			ring := min(4096, (32<<20)/n) // keep the ring in tens of MiB
			envs := make([][]byte, ring)
			for i := range envs {
				envs[i], _, _ = s.Seal(wire.KindSend, hdr, p)
			}
			b.SetBytes(int64(n))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == ring {
					b.StopTimer()
					o = mustOpener(b, OpenerOptions{}, k)
					i = 0
					b.StartTimer()
				}
				if _, err := o.Open(wire.KindSend, envs[i]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkChannelRoundTrip measures a client request and the service's
// reply over HPKE: seal request, open request, seal reply, open reply.
func BenchmarkChannelRoundTrip(b *testing.B) {
	for _, s := range []Suite{SuiteHybrid, SuiteX25519} {
		b.Run(s.String(), func(b *testing.B) {
			k := mustServiceKey(b, s)
			info := ChannelInfo("analytics", testHash)
			p := make([]byte, 1<<10)
			b.ReportAllocs()
			for b.Loop() {
				ch, req, err := SealRequest(k.PublicKey(), info, p)
				if err != nil {
					b.Fatal(err)
				}
				r, err := k.OpenRequest(info, req)
				if err != nil {
					b.Fatal(err)
				}
				rep, _ := r.SealReply(p)
				if _, err := ch.OpenReply(rep); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBaselineAESGCM is plain AES-256-GCM seal+open with a counter
// nonce and no envelope: the floor the envelope's cost compares to.
func BenchmarkBaselineAESGCM(b *testing.B) {
	g, err := newGCM(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("%dB", n), func(b *testing.B) {
			p := make([]byte, n)
			out := make([]byte, 0, n+tagLen)
			var nonce [nonceLen]byte
			var seq uint64
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				seq++
				ct := g.Seal(out[:0], counterNonce(&nonce, seq), p, nil)
				if _, err := g.Open(p[:0], counterNonce(&nonce, seq), ct, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
