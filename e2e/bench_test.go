package e2e

import (
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkSecuredVsPlainRequest compares request-reply between two trusted
// services on different nodes — beta (node 2) asking alpha (node 1) — on a
// secured address (sealed request, opened in alpha, sealed reply opened in
// beta) and on a plain one, 1 KiB bodies, 32 in flight, in the same run:
// rounds alternate between the two so that both see the same machine. The
// loop runs inside beta; ns/op is a plain and a secured request together;
// "secured/plain" is the secured throughput as a fraction of the plain one,
// the median over the rounds (goal ≥ 0.95).
func BenchmarkSecuredVsPlainRequest(b *testing.B) {
	w := newWorld(b, false)
	const size, inFlight, batch = 1024, 32, 1000
	run := func(address string, n int) time.Duration {
		out := w.mustAsk("beta", Op{Op: "bench", To: address, N: n, InFlight: inFlight, Size: size})
		ns, err := strconv.ParseInt(string(out), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return time.Duration(ns)
	}
	// Warm both paths (connections, sender windows, goroutine pools).
	run("plain.echo", batch)
	run("sec.echo", batch)
	b.ResetTimer()
	var plain, secured time.Duration
	var ratios []float64
	var done int
	for done < b.N {
		n := min(batch, b.N-done)
		p := run("plain.echo", n)
		s := run("sec.echo", n)
		plain, secured = plain+p, secured+s
		ratios = append(ratios, float64(p)/float64(s))
		done += n
	}
	b.StopTimer()
	b.ReportMetric(float64(plain.Nanoseconds())/float64(b.N), "plain-ns/req")
	b.ReportMetric(float64(secured.Nanoseconds())/float64(b.N), "secured-ns/req")
	// The median of the rounds' ratios: a burst of load from elsewhere on
	// the machine skews one round, not the result.
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "secured/plain")
}
