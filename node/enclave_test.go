package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/internal/testapp"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/trusted"
)

// The enclave package's test image, built once per test binary.
var (
	testImageOnce sync.Once
	testImagePath string
	testImageErr  error
	testImageDir  string
	// testRoot is the simulation root of the nodes that host enclaves.
	testRoot *attest.SimulationRoot
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "node-test-")
	if err != nil {
		panic(err)
	}
	testImageDir = dir
	if testRoot, err = attest.NewEphemeralSimulationRoot(); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func enclaveImage(t testing.TB) string {
	t.Helper()
	testImageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		var img *enclave.Image
		img, testImageErr = enclave.Build(ctx, "github.com/cloister-dev/cloister/enclave/internal/testimage",
			filepath.Join(testImageDir, "testimage"), enclave.BuildOptions{})
		if img != nil {
			testImagePath = img.Path
		}
	})
	if testImageErr != nil {
		t.Fatal(testImageErr)
	}
	return testImagePath
}

func deploymentHealth(n *Node, id string) DeploymentHealth {
	for _, h := range n.Health(context.Background()) {
		if h.ID == id {
			return h
		}
	}
	return DeploymentHealth{}
}

func TestDeployEnclaveSurvivesKill(t *testing.T) {
	img := enclaveImage(t)
	n, err := New(Options{Simulation: testRoot})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	ctx := context.Background()
	id, err := n.DeployEnclave(ctx, EnclaveConfig{Name: "vault", Image: img, Instances: 2,
		Addresses: []string{"test.*"}, StateDir: t.TempDir(), RestartBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b := n.Bus()
	req := func(addr string, body string, opts ...bus.DeliveryOption) (*bus.Message, error) {
		return b.Request(ctx, addr, []byte(body), append(opts, bus.Timeout(30*time.Second))...)
	}
	m, err := req("test.echo", "hi")
	if err != nil || string(m.Body()) != "hi" {
		t.Fatalf("echo: %v", err)
	}
	if _, err := req("other.secret", ""); !errors.Is(err, bus.ErrNoHandlers) {
		t.Fatalf("address outside the allow-list: %v", err)
	}
	if _, err := req("test.put", "1234", bus.Header("key", "k")); err != nil {
		t.Fatal(err)
	}
	if h := deploymentHealth(n, id); h.Status != StatusUp || h.Instances != 2 {
		t.Fatalf("health %+v", h)
	}
	encl := n.Enclaves()
	if len(encl) != 2 || encl[0].PID == 0 || encl[0].PID == encl[1].PID || encl[0].State != "up" {
		t.Fatalf("enclaves %+v", encl)
	}
	// Requests in flight on both instances, then kill one with SIGKILL.
	const inflight = 8 // 4 per instance: half of its 8 workers
	errs := make(chan error, inflight)
	for range inflight {
		go func() {
			_, err := b.Request(ctx, "test.block", nil, bus.Timeout(2*time.Minute))
			errs <- err
		}()
	}
	waitUntil := time.Now().Add(time.Minute)
	for {
		e := n.Enclaves()
		if e[0].InFlight == inflight/2 && e[1].InFlight == inflight/2 {
			break
		}
		if time.Now().After(waitUntil) {
			t.Fatalf("requests did not reach the enclaves: %+v", e)
		}
		time.Sleep(10 * time.Millisecond)
	}
	victim := encl[0].PID
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var failed int
	deadline := time.After(time.Minute)
	for failed < inflight/2 {
		select {
		case err := <-errs:
			var re *bus.ReplyError
			if !errors.As(err, &re) || re.Failure != bus.FailureRecipient || re.Code != enclave.CodeUnavailable {
				t.Fatalf("in-flight request: %v", err)
			}
			if want := fmt.Sprintf("vault/0 (pid %d)", victim); !contains(re.Message, want) {
				t.Fatalf("failure %q does not name %q", re.Message, want)
			}
			failed++
		case <-deadline:
			t.Fatalf("only %d in-flight requests failed", failed)
		}
	}
	// The deployment is DOWN until the instance is back, then UP.
	if h := deploymentHealth(n, id); h.Status != StatusDown || !contains(h.Error, "restarting") {
		t.Fatalf("health after kill: %+v", h)
	}
	deadlineUp := time.Now().Add(time.Minute)
	for deploymentHealth(n, id).Status != StatusUp {
		if time.Now().After(deadlineUp) {
			t.Fatalf("not up again: %+v", deploymentHealth(n, id))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 4 { // both instances read the same protected storage
		m, err := req("test.get", "", bus.Header("key", "k"))
		if err != nil || string(m.Body()) != "1234" {
			t.Fatalf("state after restart: %v", err)
		}
	}
	uctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := n.Undeploy(uctx, id); err != nil {
		t.Fatal(err)
	}
	// The other instance's blocked requests end with the undeployment.
	for failed < inflight {
		select {
		case <-errs:
			failed++
		case <-time.After(time.Minute):
			t.Fatal("requests left hanging after undeploy")
		}
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (func() bool {
		for i := 0; i+len(sub) <= len(s); i++ {
			if s[i:i+len(sub)] == sub {
				return true
			}
		}
		return false
	})())
}

func TestDeployEnclaveConfigErrors(t *testing.T) {
	n, err := New(Options{Simulation: testRoot})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	ctx := context.Background()
	img := enclaveImage(t)
	for _, c := range []struct {
		cfg  EnclaveConfig
		want string
	}{
		{EnclaveConfig{Image: img}, "needs a name"},
		{EnclaveConfig{Name: "x", Image: img, Backend: "vm"}, "unknown backend"},
		{EnclaveConfig{Name: "x"}, "needs an image"},
		{EnclaveConfig{Name: "x", Backend: BackendInProc}, "needs EnclaveConfig.Serve"},
		{EnclaveConfig{Name: "x", Image: filepath.Join(t.TempDir(), "missing")}, "no metadata"},
		{EnclaveConfig{Name: "x", Image: img, Addresses: []string{"nothing.here"}, StateDir: t.TempDir()}, "no address to serve"},
	} {
		_, err := n.DeployEnclave(ctx, c.cfg)
		if err == nil || !contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
	if len(n.Health(ctx)) != 0 {
		t.Fatal("a failed deployment is listed")
	}
}

// echoService is the regular twin of the test image's test.echo handler.
type echoService struct{}

func (echoService) Start(ctx context.Context, inst *Instance) error {
	_, err := inst.Consumer("regular.echo", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		m.Reply(m.Body())
	}))
	if err != nil {
		return err
	}
	_, err = inst.Consumer("regular.work", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		m.Reply(testapp.Work(m.Body()))
	}))
	return err
}

func (echoService) Stop(ctx context.Context) error { return nil }

// requestsPerSecond runs n requests to address with inflight goroutines and
// returns the throughput.
func requestsPerSecond(b *testing.B, bb *bus.Bus, address string, n, inflight int, body []byte) float64 {
	var wg sync.WaitGroup
	per := n / inflight
	start := time.Now()
	for range inflight {
		wg.Go(func() {
			for range per {
				if _, err := bb.Request(context.Background(), address, body); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(per*inflight) / time.Since(start).Seconds()
}

// BenchmarkTrustedVsRegular measures request-reply through a node to the
// same handler deployed as a regular service, as a trusted service on the
// process backend (the image as a child process), and as a trusted service
// on the inproc backend (the same frames and trusted runtime, in this
// process), 32 requests in flight, in the same run, alternating. Two
// handlers: echo (no work at all: the pure cost of each path) and work
// (testapp.Work, chained SHA-256 of the body, a stand-in for a handler that
// does something). The regular service is one event-loop instance and the
// process enclave one instance on one processor (the image default), so
// both run their handlers on one core at a time; the inproc enclave's
// workers run on all of the host's. It reports each trusted service's
// share of the regular one's throughput and the CPU each spends per
// request: the inproc figure is the cost of the boundary protocol and
// runtime alone, the rest of the process figure the cost of crossing into
// another process. It runs once per transport of the process enclave
// (shared memory, then pipes), each against its own regular baseline
// measured alternately with it.
func BenchmarkTrustedVsRegular(b *testing.B) {
	for _, transport := range []string{"shm", "pipe"} {
		b.Run("transport="+transport, func(b *testing.B) { benchTrustedVsRegular(b, transport) })
	}
}

func benchTrustedVsRegular(b *testing.B, transport string) {
	img := enclaveImage(b)
	n, err := New(Options{Simulation: testRoot})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	ctx := context.Background()
	if _, err := n.Deploy(ctx, func() Service { return echoService{} }, DeployOptions{Name: "regular"}); err != nil {
		b.Fatal(err)
	}
	if _, err := n.DeployEnclave(ctx, EnclaveConfig{Name: "trusted", Image: img, Transport: transport, Addresses: []string{"test.echo", "test.work"}, StateDir: b.TempDir()}); err != nil {
		b.Fatal(err)
	}
	app := trusted.New(trusted.Options{})
	app.HandleFunc("inproc.echo", func(ctx context.Context, c *trusted.Call) { c.Reply(c.Headers(), c.Body()) })
	app.HandleFunc("inproc.work", func(ctx context.Context, c *trusted.Call) { c.Reply(nil, testapp.Work(c.Body())) })
	if _, err := n.DeployEnclave(ctx, EnclaveConfig{Name: "inproc", Backend: BackendInProc, Serve: app.Serve, StateDir: b.TempDir()}); err != nil {
		b.Fatal(err)
	}
	if got := n.Enclaves()[0].Transport; got != transport {
		b.Fatalf("trusted enclave on transport %q, want %q", got, transport)
	}
	const inflight = 32
	for _, c := range []struct {
		handler string
		size    int
	}{{"echo", 64}, {"echo", 1024}, {"work", 1024}} {
		b.Run(fmt.Sprintf("handler=%s/size=%d", c.handler, c.size), func(b *testing.B) {
			body := make([]byte, c.size)
			total := max(b.N, inflight) / inflight * inflight
			addrs := []string{"regular." + c.handler, "test." + c.handler, "inproc." + c.handler}
			for _, a := range addrs { // warm every path
				requestsPerSecond(b, n.Bus(), a, inflight*8, inflight, body)
			}
			b.ResetTimer()
			var rate [3]float64
			var cpu [3]time.Duration
			var encCPU time.Duration
			pid := n.Enclaves()[0].PID
			for range 2 {
				for i, a := range addrs {
					h0, e0 := testenv.HostCPU(), testenv.ProcessCPU(pid)
					rate[i] += requestsPerSecond(b, n.Bus(), a, total/2, inflight, body) / 2
					cpu[i] += testenv.HostCPU() - h0
					if i == 1 {
						encCPU += testenv.ProcessCPU(pid) - e0
					}
				}
			}
			perReq := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(total) }
			b.ReportMetric(perReq(cpu[0]), "regular-cpu-ns/req")
			b.ReportMetric(perReq(cpu[1]), "process-host-cpu-ns/req")
			b.ReportMetric(perReq(encCPU), "process-enclave-cpu-ns/req")
			b.ReportMetric(perReq(cpu[2]), "inproc-cpu-ns/req")
			b.ReportMetric(rate[0], "regular-req/s")
			b.ReportMetric(rate[1]/rate[0], "trusted/regular")
			b.ReportMetric(rate[2]/rate[0], "inproc/regular")
		})
	}
}
