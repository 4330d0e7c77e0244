package e2e

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
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
	pids := []int{w.pid(1, "alpha"), w.pid(2, "beta")}
	b.ResetTimer()
	var plain, secured, plainCPU, securedCPU time.Duration
	var ratios []float64
	var done int
	for done < b.N {
		n := min(batch, b.N-done)
		// Which side runs first alternates, so that neither always
		// inherits the other's garbage or warm caches.
		var p, s, pc, sc time.Duration
		c0 := cpuTime(pids)
		if len(ratios)%2 == 0 {
			p = run("plain.echo", n)
			c1 := cpuTime(pids)
			s = run("sec.echo", n)
			pc, sc = c1-c0, cpuTime(pids)-c1
		} else {
			s = run("sec.echo", n)
			c1 := cpuTime(pids)
			p = run("plain.echo", n)
			sc, pc = c1-c0, cpuTime(pids)-c1
		}
		plain, secured = plain+p, secured+s
		plainCPU, securedCPU = plainCPU+pc, securedCPU+sc
		ratios = append(ratios, float64(p)/float64(s))
		done += n
	}
	b.StopTimer()
	if plainCPU > 0 {
		// CPU time of the two enclave processes per request: what the
		// secured layer adds inside the enclaves.
		b.ReportMetric(float64(plainCPU.Nanoseconds())/float64(b.N), "enclaves-plain-cpu-ns/req")
		b.ReportMetric(float64(securedCPU.Nanoseconds())/float64(b.N), "enclaves-secured-cpu-ns/req")
	}
	b.ReportMetric(float64(plain.Nanoseconds())/float64(b.N), "plain-ns/req")
	b.ReportMetric(float64(secured.Nanoseconds())/float64(b.N), "secured-ns/req")
	// The median of the rounds' ratios: a burst of load from elsewhere on
	// the machine skews one round, not the result.
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "secured/plain")
	b.ReportMetric(float64(plain)/float64(secured), "secured/plain-total")
}

// cpuTime returns the user and system CPU time of the processes (Linux
// /proc; zero elsewhere).
func cpuTime(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0
		}
		// Fields after the command name (which is in parentheses): state
		// is field 3; utime and stime are fields 14 and 15, in clock ticks
		// (100 per second on Linux).
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			return 0
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * 10 * time.Millisecond
	}
	return total
}
