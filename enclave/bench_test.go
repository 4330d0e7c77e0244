package enclave

import (
	"bufio"
	"context"
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
	"github.com/cloister-dev/cloister/boundary/shm"
	"github.com/cloister-dev/cloister/internal/testapp"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/wire"
)

var benchSizes = []int{64, 1 << 10, 16 << 10, 64 << 10}

// BenchmarkPipeRoundTrip is the reference: bytes to a child process that
// echoes them, over a pair of pipes, and back.
func BenchmarkPipeRoundTrip(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "ENCLAVE_TEST_ECHO_CHILD=1")
			in, err := cmd.StdinPipe()
			if err != nil {
				b.Fatal(err)
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() {
				in.Close()
				cmd.Wait()
			}()
			echoLoop(b, size, in, out)
		})
	}
}

// echoLoop writes size bytes to w and reads them back from r, b.N times:
// the raw round trip the reference benchmarks measure.
func echoLoop(b *testing.B, size int, w io.Writer, r io.Reader) {
	msg := make([]byte, size)
	back := make([]byte, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for b.Loop() {
		if _, err := w.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, back); err != nil {
			b.Fatal(err)
		}
	}
}

// benchBackends are the backends and transports the boundary benchmarks
// compare in one run: the process backend over shared memory (the
// default) and over pipes, and inproc (no crossing at all).
var benchBackends = []string{"shm", "pipe", "inproc"}

// BenchmarkShmRoundTrip is the shared-memory reference beside
// BenchmarkPipeRoundTrip: bytes to a child process that echoes them through
// a region's rings, and back, with the default polling.
func BenchmarkShmRoundTrip(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			ecallR, ecallW, ocallR, ocallW, err := boundaryPipes()
			if err != nil {
				b.Fatal(err)
			}
			reg, f, err := shm.Create(0, 0)
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "ENCLAVE_TEST_ECHO_CHILD=shm", shm.EnvRegion+"=5", "GOMAXPROCS=1")
			cmd.ExtraFiles = []*os.File{ecallR, ocallW, f}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			ecallR.Close()
			ocallW.Close()
			f.Close()
			st, err := shm.NewStream(reg, shm.Host, ocallR, ecallW, shm.Options{HandshakeBytes: 1})
			if err != nil {
				b.Fatal(err)
			}
			hs := []byte{1}
			if _, err := st.Write(hs); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(st, hs); err != nil || st.Transport() != "shm" {
				b.Fatalf("handshake: %v, transport %q", err, st.Transport())
			}
			defer func() {
				st.Close()
				cmd.Wait()
			}()
			echoLoop(b, size, st, st)
			ss := st.Stats()
			b.ReportMetric(float64(ss.Sleeps)/float64(b.N), "host-sleeps/op")
			b.ReportMetric(float64(ss.Doorbells)/float64(b.N), "doorbells/op")
		})
	}
}

// startBench starts an enclave without a bus for boundary benchmarks:
// backend is "inproc", "shm", "shm-nopoll" (shared memory, never polling:
// every wait sleeps and needs a doorbell), "shm-poll=DURATION" or "pipe".
func startBench(b *testing.B, backend string, env ...string) *Enclave {
	b.Helper()
	return startBenchStore(b, backend, nil, env...)
}

// startBenchStore is startBench with the FileStore wrapped by wrap (if set).
func startBenchStore(b *testing.B, backend string, wrap func(*FileStore) Store, env ...string) *Enclave {
	b.Helper()
	var be Backend
	want := "shm"
	switch {
	case backend == "inproc":
		be, want = NewInProc(testapp.New(8).Serve), "inproc"
	case backend == "shm" || backend == "process":
		be = NewProcess(ProcessOptions{})
	case backend == "shm-nopoll":
		be = NewProcess(ProcessOptions{Poll: -1})
	case strings.HasPrefix(backend, "shm-poll="):
		d, err := time.ParseDuration(strings.TrimPrefix(backend, "shm-poll="))
		if err != nil {
			b.Fatal(err)
		}
		be = NewProcess(ProcessOptions{Poll: d})
	case backend == "pipe":
		be, want = NewProcess(ProcessOptions{Transport: TransportPipe}), "pipe"
	default:
		b.Fatalf("no bench backend %q", backend)
	}
	fs, err := NewFileStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	var store Store = fs
	if wrap != nil {
		store = wrap(fs)
	}
	e, err := New(Config{Simulation: testRoot, Name: "bench", Image: testImage, Backend: be, Store: store, Env: env})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	if got := e.Transport(); got != want {
		b.Fatalf("%s: transport %q, want %q", backend, got, want)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Stop(ctx)
	})
	return e
}

// roundTrip delivers body to address as a request and waits for the answer.
func (e *Enclave) roundTrip(ch chanWaiter, address string, body []byte) error {
	s := e.cur.Load()
	if s == nil {
		return fmt.Errorf("enclave down")
	}
	s.deliver(ch, wire.KindRequest, address, nil, body)
	if f, ok := (<-ch).(*boundary.Fail); ok {
		return fmt.Errorf("%s: %s", f.Kind, f.Message)
	}
	return nil
}

func reportBatching(b *testing.B, e *Enclave, before boundary.Stats) {
	st := e.Stats()
	if w := st.Writes - before.Writes; w > 0 {
		b.ReportMetric(float64(st.FramesSent-before.FramesSent)/float64(w), "frames/write")
	}
}

// cpuMeter measures the CPU time this process (the host) and the enclave
// process spend between start and report.
type cpuMeter struct {
	pid        int
	host, encl time.Duration
}

func startCPU(e *Enclave) cpuMeter {
	return cpuMeter{pid: e.PID(), host: testenv.HostCPU(), encl: testenv.ProcessCPU(e.PID())}
}

// report adds host and enclave CPU per operation (n operations).
func (m cpuMeter) report(b *testing.B, n int) {
	h, e := testenv.HostCPU()-m.host, testenv.ProcessCPU(m.pid)-m.encl
	b.ReportMetric(float64(h.Nanoseconds())/float64(n), "host-cpu-ns/op")
	if m.pid != 0 {
		b.ReportMetric(float64(e.Nanoseconds())/float64(n), "encl-cpu-ns/op")
	}
}

// BenchmarkBoundaryRoundTrip is one Deliver and its Reply across the
// boundary with an empty handler, over shared memory, over pipes and in
// process, in one run. BOUNDARY_BENCH_BACKENDS (comma-separated, see
// startBench) replaces the list, e.g. to compare polling budgets.
func BenchmarkBoundaryRoundTrip(b *testing.B) {
	backends := benchBackends
	if v := os.Getenv("BOUNDARY_BENCH_BACKENDS"); v != "" {
		backends = strings.Split(v, ",")
	}
	sizes := benchSizes
	if v := os.Getenv("BOUNDARY_BENCH_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatal(err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, backend := range backends {
		b.Run(backend, func(b *testing.B) {
			e := startBench(b, backend)
			for _, size := range sizes {
				for _, inflight := range []int{1, 32} {
					b.Run(fmt.Sprintf("size=%d/inflight=%d", size, inflight), func(b *testing.B) {
						body := make([]byte, size)
						b.SetBytes(int64(size))
						before := e.Stats()
						cpu := startCPU(e)
						defer func() { cpu.report(b, b.N) }()
						if inflight == 1 {
							ch := make(chanWaiter, 1)
							for b.Loop() {
								if err := e.roundTrip(ch, "test.empty", body); err != nil {
									b.Fatal(err)
								}
							}
						} else {
							b.SetParallelism((inflight + 1) / 2)
							b.RunParallel(func(pb *testing.PB) {
								ch := make(chanWaiter, 1)
								for pb.Next() {
									if err := e.roundTrip(ch, "test.empty", body); err != nil {
										b.Error(err)
										return
									}
								}
							})
						}
						reportBatching(b, e, before)
					})
				}
			}
		})
	}
}

// countingStore counts the batches (durable commits) of a FileStore.
type countingStore struct {
	*FileStore
	batches atomic.Uint64
}

func (c *countingStore) PutBatch(ctx context.Context, w []StoreWrite) error {
	c.batches.Add(1)
	return c.FileStore.PutBatch(ctx, w)
}

func (c *countingStore) Put(ctx context.Context, key string, blob []byte) error {
	return c.PutBatch(ctx, []StoreWrite{{Key: key, Blob: blob}})
}

// BenchmarkStatefulRoundTrip is a request to a stateful handler (one Get
// and one Put of a 1 KiB value in protected storage, test.incr-like) on the
// process backend, with storage that waits for the host (store=sync: the
// protocol before posted writes, three round trips) and with the cache and
// posted, group-committed writes (store=posted). It reports crossings/req:
// host → enclave frames per request (the delivery plus every OCALL answer,
// each a round trip the handler waited for), and commits/req: durable
// store commits (syncs of the state directory) per request.
//
// disk=mem runs the same on a store in host memory, so that the difference
// is the crossings alone (no sync).
func BenchmarkStatefulRoundTrip(b *testing.B) {
	for _, disk := range []string{"file", "mem"} {
		for _, mode := range []string{"sync", "posted"} {
			b.Run("disk="+disk+"/store="+mode, func(b *testing.B) { benchStateful(b, disk, mode) })
		}
	}
}

// memStore keeps blobs in host memory (benchmarks only: nothing durable).
type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memStore) Put(_ context.Context, key string, blob []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = blob
	return nil
}

func (s *memStore) Get(_ context.Context, key string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[key]
	return b, ok, nil
}

func benchStateful(b *testing.B, disk, mode string) {
	var env []string
	if mode == "sync" {
		env = append(env, "CLOISTER_TEST_SYNC_STORE=1")
	}
	cs := &countingStore{}
	e := startBenchStore(b, "process", func(fs *FileStore) Store {
		if disk == "mem" {
			return &memStore{m: map[string][]byte{}}
		}
		cs.FileStore = fs
		return cs
	}, env...)
	for _, inflight := range []int{1, 32} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			body := make([]byte, 1<<10)
			var n atomic.Uint64
			before, batches := e.Stats(), cs.batches.Load()
			run := func(ch chanWaiter, key string) error {
				s := e.cur.Load()
				if s == nil {
					return fmt.Errorf("enclave down")
				}
				n.Add(1)
				s.deliver(ch, wire.KindRequest, "test.incr", map[string]string{"key": key}, body)
				if f, ok := (<-ch).(*boundary.Fail); ok {
					return fmt.Errorf("%s: %s", f.Kind, f.Message)
				}
				return nil
			}
			if inflight == 1 {
				ch := make(chanWaiter, 1)
				for b.Loop() {
					if err := run(ch, "k"); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				var id atomic.Int64
				b.SetParallelism((inflight + 1) / 2)
				b.RunParallel(func(pb *testing.PB) {
					ch := make(chanWaiter, 1)
					key := fmt.Sprintf("k%d", id.Add(1)%64)
					for pb.Next() {
						if err := run(ch, key); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			if k := n.Load(); k > 0 {
				st := e.Stats()
				b.ReportMetric(float64(st.FramesSent-before.FramesSent)/float64(k), "crossings/req")
				if disk == "file" {
					b.ReportMetric(float64(cs.batches.Load()-batches)/float64(k), "commits/req")
				}
			}
		})
	}
}

// BenchmarkBoundaryBatched sends 256 deliveries at once and then waits for
// the 256 replies: the amortised cost of one message when frames are
// batched (ns/op is per message).
func BenchmarkBoundaryBatched(b *testing.B) {
	const batch = 256
	for _, backend := range benchBackends {
		b.Run(backend, func(b *testing.B) {
			e := startBench(b, backend)
			body := make([]byte, 64)
			ch := make(chanWaiter, batch)
			before := e.Stats()
			b.ResetTimer()
			for sent := 0; sent < b.N; {
				n := min(batch, b.N-sent)
				s := e.cur.Load()
				for range n {
					s.deliver(ch, wire.KindRequest, "test.empty", nil, body)
				}
				for range n {
					if f, ok := (<-ch).(*boundary.Fail); ok {
						b.Fatal(f.Message)
					}
				}
				sent += n
			}
			reportBatching(b, e, before)
		})
	}
}

// BenchmarkIdleCPU measures the CPU the host and the enclave burn while
// the enclave is idle, right after a burst of requests (when a polling side
// would still be polling): per transport, CPU milliseconds per idle second.
// Run it with -benchtime 2x or so; each op is one idle second.
func BenchmarkIdleCPU(b *testing.B) {
	for _, backend := range []string{"shm", "pipe"} {
		b.Run(backend, func(b *testing.B) {
			e := startBench(b, backend)
			ch := make(chanWaiter, 1)
			var host, encl time.Duration
			for b.Loop() {
				for range 1000 {
					if err := e.roundTrip(ch, "test.empty", nil); err != nil {
						b.Fatal(err)
					}
				}
				m := startCPU(e)
				time.Sleep(time.Second)
				host += testenv.HostCPU() - m.host
				encl += testenv.ProcessCPU(m.pid) - m.encl
			}
			b.ReportMetric(float64(host.Microseconds())/1000/float64(b.N), "host-cpu-ms/idle-s")
			b.ReportMetric(float64(encl.Microseconds())/1000/float64(b.N), "encl-cpu-ms/idle-s")
		})
	}
}

// BenchmarkImagePeakRSS keeps 32 requests of 64 KiB in flight to the
// process image and reports its peak resident memory (VmHWM).
func BenchmarkImagePeakRSS(b *testing.B) {
	e := startBench(b, "process")
	body := make([]byte, 64<<10)
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		ch := make(chanWaiter, 1)
		for pb.Next() {
			if err := e.roundTrip(ch, "test.echo", body); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	kib, err := vmHWM(e.PID())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(kib)/1024, "VmHWM-MiB")
}

// vmHWM reads a process's peak resident set size in KiB.
func vmHWM(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

func TestImagePeakRSSIsSmall(t *testing.T) {
	// Not a limit test (timing and memory are measured in benchmarks): it
	// only checks that VmHWM can be read for a running image.
	h := newHarness(t, "process", harnessOpts{})
	if _, err := h.request(t, "test.empty", nil); err != nil {
		t.Fatal(err)
	}
	kib, err := vmHWM(h.e.PID())
	if err != nil || kib <= 0 {
		t.Fatalf("VmHWM: %d %v", kib, err)
	}
	t.Logf("idle image VmHWM %.1f MiB", float64(kib)/1024)
}
