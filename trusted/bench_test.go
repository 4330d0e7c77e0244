package trusted

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/wire"
)

// pipeEcho is the child side of BenchmarkRawPipeRoundTrip: it echoes stdin
// to stdout.
func pipeEcho() {
	buf := make([]byte, 64<<10)
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			if _, err := os.Stdout.Write(buf[:n]); err != nil {
				os.Exit(0)
			}
		}
		if err != nil {
			os.Exit(0)
		}
	}
}

// BenchmarkRawPipeRoundTrip is the reference: a 64-byte round trip through
// a pipe pair to a child process that echoes it.
func BenchmarkRawPipeRoundTrip(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envPipeEcho+"=1")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	defer in.Close()
	msg := make([]byte, 64)
	got := make([]byte, 64)
	for b.Loop() {
		in.Write(msg)
		if _, err := io.ReadFull(out, got); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTrip measures deliver → handler → reply through the trusted
// runtime (echo handler), in process (io.Pipe) and to a child process over
// a socket pair, for several body sizes and 1 or 32 requests in flight.
// For the process backend it reports the image's peak resident memory.
func BenchmarkRoundTrip(b *testing.B) {
	for _, be := range []string{"inproc", "process", "process-stdio"} {
		for _, size := range []int{64, 1 << 10, 64 << 10} {
			for _, inflight := range []int{1, 32} {
				b.Run(fmt.Sprintf("%s/size=%d/inflight=%d", be, size, inflight), func(b *testing.B) {
					var h *testHost
					if be == "inproc" {
						h = startInproc(b, testApp(Options{Workers: 8}), testInit(), nil)
					} else {
						h = startProcess(b, be == "process", testInit(), nil, envWorkers+"=8")
					}
					body := make([]byte, size)
					b.SetBytes(int64(size))
					b.ReportAllocs()
					b.ResetTimer()
					var next atomic.Int64
					var wg sync.WaitGroup
					for range inflight {
						wg.Go(func() {
							for next.Add(1) <= int64(b.N) {
								ch := h.deliver(wire.KindRequest, "echo", nil, body)
								select {
								case m := <-ch:
									if _, ok := m.(*boundary.Reply); !ok {
										b.Errorf("got %+v", m)
										return
									}
								case <-time.After(20 * time.Second):
									b.Error("timeout")
									return
								}
							}
						})
					}
					wg.Wait()
					b.StopTimer()
					s := h.conn.Stats()
					b.ReportMetric(float64(s.FramesSent)/float64(max(s.Writes, 1)), "host-frames/write")
					if h.cmd != nil {
						if kib := peakRSS(h.cmd.Process.Pid); kib > 0 {
							b.ReportMetric(float64(kib)/1024, "image-peak-RSS-MiB")
						}
					}
					h.shutdown()
				})
			}
		}
	}
}

// peakRSS returns VmHWM of a process in KiB (0 if unknown).
func peakRSS(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}
