package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
)

// clusteredNode starts an embedded NATS server (with JetStream and one
// durable address) and a node on it serving its operations endpoint on a
// free loopback port.
func clusteredNode(t *testing.T, ops OpsOptions) *Node {
	t.Helper()
	if ops.Listen == "" {
		ops.Listen = "127.0.0.1:0"
	}
	n, _ := startClusterNode(t, cluster.Options{Name: "ops", StoreDir: t.TempDir(), Durable: []string{"ops.durable"}}, Options{Ops: ops})
	return n
}

// startClusterNode starts a cluster node made with copts and a node on its
// transport made with opts, both quiet, stopped when the test ends.
func startClusterNode(t *testing.T, copts cluster.Options, opts Options) (*Node, *cluster.Node) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	copts.Logger = quiet
	ctx := context.Background()
	cn, err := cluster.Start(ctx, copts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.New(bus.WithTransport(cn.Transport()), bus.WithLogger(quiet))
	if err != nil {
		cn.Close()
		t.Fatal(err)
	}
	opts.Bus, opts.Logger, opts.Simulation = b, quiet, testRoot
	n, err := New(opts)
	if err != nil {
		b.Close(ctx)
		cn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := n.Shutdown(sctx); err != nil {
			t.Error(err)
		}
		cn.Close()
	})
	return n, cn
}

// scrape fetches /metrics and parses it.
func scrape(t *testing.T, n *Node) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get("http://" + n.OpsAddr() + PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams, string(raw)
}

// value returns the value of the family's metric with the given labels
// (a subset), or -1 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	return -1
}

type opsEcho struct{}

func (opsEcho) Start(ctx context.Context, inst *Instance) error {
	_, err := inst.Consumer("ops.echo", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		if m.ReplyExpected() {
			_ = m.Reply(m.Body())
		}
	}))
	return err
}
func (opsEcho) Stop(context.Context) error { return nil }

// TestMetricsMoveWithTraffic scrapes a running node over HTTP: bus,
// consumer, NATS and enclave figures go up with the traffic, and neither a
// payload nor a header key reaches a label.
func TestMetricsMoveWithTraffic(t *testing.T) {
	n := clusteredNode(t, OpsOptions{})
	ctx := context.Background()
	if _, err := n.Deploy(ctx, func() Service { return opsEcho{} }, DeployOptions{Name: "echo"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.DeployEnclave(ctx, EnclaveConfig{Name: "vault", Image: enclaveImage(t),
		Addresses: []string{"test.*"}, StateDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	before, _ := scrape(t, n)
	if v := value(before, "cloister_nats_connected"); v != 1 {
		t.Fatalf("cloister_nats_connected = %v", v)
	}
	if v := value(before, "cloister_enclave_up", "enclave", "vault", "instance", "0"); v != 1 {
		t.Fatalf("cloister_enclave_up = %v", v)
	}
	const secret = "PAYLOAD-must-not-be-a-label"
	const rounds = 5
	for range rounds {
		if _, err := n.Bus().Request(ctx, "ops.echo", secret, bus.Header("secret-key-name", secret)); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Bus().Request(ctx, "test.echo", secret); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Bus().Request(ctx, "test.put", secret, bus.Header("key", "key-name-must-not-be-a-label")); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Bus().Request(ctx, "ops.nobody."+secret, secret); !errors.Is(err, bus.ErrNoHandlers) {
			t.Fatalf("want no handlers, got %v", err)
		}
	}
	after, raw := scrape(t, n)
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"cloister_bus_messages_total", []string{"op", "request", "address", "ops.echo"}, rounds},
		{"cloister_bus_messages_total", []string{"op", "reply", "address", "ops.echo"}, rounds},
		{"cloister_bus_messages_total", []string{"op", "request", "address", "test.echo"}, rounds},
		{"cloister_bus_request_duration_seconds", []string{"address", "ops.echo"}, rounds},
		{"cloister_bus_failures_total", []string{"op", "request", "address", OtherAddress, "failure", "no-handlers"}, rounds},
		{"cloister_bus_consumer_delivered_total", []string{"address", "ops.echo"}, rounds},
		{"cloister_bus_consumer_received_total", []string{"address", "test.echo"}, rounds},
		{"cloister_enclave_frames_in_total", []string{"enclave", "vault"}, value(before, "cloister_enclave_frames_in_total", "enclave", "vault") + rounds},
		{"cloister_enclave_frames_out_total", []string{"enclave", "vault"}, value(before, "cloister_enclave_frames_out_total", "enclave", "vault") + rounds},
		{"cloister_node_deployment_up", []string{"deployment", "vault"}, 1},
		{"cloister_enclave_store_writes_total", []string{"enclave", "vault"}, rounds},
		{"cloister_enclave_store_commits_total", []string{"enclave", "vault"}, 1},
		{"cloister_jetstream_pending_messages", []string{"address", "ops.durable"}, 0},
	} {
		if v := value(after, c.name, c.labels...); v < c.min {
			t.Errorf("%s%v = %v, want at least %v", c.name, c.labels, v, c.min)
		}
	}
	if strings.Contains(raw, secret) || strings.Contains(raw, "secret-key-name") || strings.Contains(raw, "key-name-must-not") {
		t.Errorf("a payload or header key reached the metrics:\n%s", raw)
	}
}

// readyz fetches /readyz.
func readyz(t *testing.T, n *Node) (int, Readiness) {
	t.Helper()
	resp, err := http.Get("http://" + n.OpsAddr() + PathReadyz)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rd Readiness
	if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil {
		t.Fatalf("/readyz body: %v", err)
	}
	return resp.StatusCode, rd
}

// TestReadyzFollowsAnEnclave kills an enclave with SIGKILL: /readyz
// answers 503 naming it, then 200 once its supervisor restarted it.
func TestReadyzFollowsAnEnclave(t *testing.T) {
	n := clusteredNode(t, OpsOptions{})
	ctx := context.Background()
	if _, err := n.DeployEnclave(ctx, EnclaveConfig{Name: "vault", Image: enclaveImage(t),
		Addresses: []string{"test.*"}, StateDir: t.TempDir(), RestartBackoff: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + n.OpsAddr() + PathHealthz)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	code, rd := readyz(t, n)
	if code != http.StatusOK || !rd.Ready || len(rd.Checked) == 0 {
		t.Fatalf("/readyz before the kill: %d %+v", code, rd)
	}
	pid := n.Enclaves()[0].PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitReady := func(want bool) Readiness {
		deadline := time.Now().Add(time.Minute)
		for {
			code, rd := readyz(t, n)
			if rd.Ready == want && (code == http.StatusOK) == want {
				return rd
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz never turned ready=%v: %d %+v", want, code, rd)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	rd = waitReady(false)
	named := false
	for _, nr := range rd.NotReady {
		if strings.Contains(nr.Name, "vault") {
			named = true
		}
	}
	if !named {
		t.Fatalf("/readyz does not name the killed enclave: %+v", rd)
	}
	waitReady(true)
	if e := n.Enclaves()[0]; e.PID == pid || e.Restarts < 1 {
		t.Fatalf("enclave after the restart: %+v", e)
	}
}

// TestOpsOptionsChecked refuses a listen address without a host and bad
// patterns, and serves nothing by default.
func TestOpsOptionsChecked(t *testing.T) {
	for _, o := range []OpsOptions{{Listen: ":9090"}, {Listen: "127.0.0.1:0", Addresses: []string{"a.>.b"}}, {Listen: "127.0.0.1:0", MaxAddressLabels: -1}} {
		if n, err := New(Options{Ops: o}); err == nil {
			n.Shutdown(context.Background())
			t.Errorf("New accepted %+v", o)
		}
	}
	n, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	if n.OpsAddr() != "" || n.Registry() != nil {
		t.Fatal("a node without Ops.Listen serves an endpoint")
	}
	if rd := n.Readiness(context.Background()); !rd.Ready {
		t.Fatalf("an empty node is not ready: %+v", rd)
	}
}

// TestReadyzWantsTheCoordinator: a node told to watch the coordinator is
// not ready while none answers, and /readyz names it; checks added by the
// application count too.
func TestReadyzWantsTheCoordinator(t *testing.T) {
	n := clusteredNode(t, OpsOptions{Coordinator: true, CheckTimeout: 5 * time.Second})
	code, rd := readyz(t, n)
	if code != http.StatusServiceUnavailable || rd.Ready || len(rd.NotReady) != 1 || rd.NotReady[0].Name != "coordinator" {
		t.Fatalf("/readyz without a coordinator: %d %+v", code, rd)
	}
	n.AddReadinessCheck(ReadinessCheck{Name: "warm cache", Check: func(context.Context) error { return errors.New("still loading") }})
	if _, rd := readyz(t, n); len(rd.NotReady) != 2 || rd.NotReady[1].Name != "warm cache" || rd.NotReady[1].Reason != "still loading" {
		t.Fatalf("/readyz with a failing check: %+v", rd)
	}
}

// TestAddressLabelsBounded: consumed and allowed addresses label traffic,
// up to the maximum; anything else is OtherAddress.
func TestAddressLabelsBounded(t *testing.T) {
	b, err := bus.New()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	if _, err := b.Consumer("svc.a", bus.HandlerFunc(func(context.Context, *bus.Message) {})); err != nil {
		t.Fatal(err)
	}
	l := &addressLabels{bus: b, patterns: []string{"app.>"}, max: 2}
	for _, c := range []struct{ address, want string }{
		{"svc.a", "svc.a"},            // consumed here
		{"random.1234", OtherAddress}, // neither consumed nor allowed
		{"app.x", "app.x"},            // allowed
		{"app.y", OtherAddress},       // allowed, beyond the maximum
		{"svc.a", "svc.a"},            // still labelled
	} {
		if got := l.label(c.address); got != c.want {
			t.Errorf("label(%q) = %q, want %q", c.address, got, c.want)
		}
	}
}
