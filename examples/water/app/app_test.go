package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/examples/water/monitor"
	"github.com/cloister-dev/cloister/internal/syncbuf"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/secure"
)

// testConfig is a small, quick application on one node.
func testConfig(t *testing.T, sensors int) *Config {
	t.Helper()
	cfg := Default()
	cfg.Dashboard = "127.0.0.1:0"
	cfg.Sensors.Count = sensors
	cfg.Sensors.Period = 20 * time.Millisecond
	cfg.StateDir = t.TempDir()
	cfg.Summary = -1
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// syncBuffer collects the hosts' logs.
type syncBuffer = syncbuf.Buffer

func startApp(t *testing.T, ctx context.Context, cfg *Config) *App {
	a, _ := startAppLogs(t, ctx, cfg)
	return a
}

// startAppLogs starts the application with its logs (info and up) kept
// for the test, and shown on stderr with -v.
func startAppLogs(t *testing.T, ctx context.Context, cfg *Config) (*App, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, os.Stderr)
	}
	logger := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := Start(ctx, cfg, Options{Logger: logger, Metrics: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := a.Close(cctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return a, logs
}

// tap is the eavesdropper: a raw NATS subscriber on every subject.
type tap struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func startTap(t *testing.T, url string) *tap {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("eavesdropper"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	tp := &tap{}
	if _, err := nc.Subscribe(">", func(m *nats.Msg) {
		tp.mu.Lock()
		tp.msgs = append(tp.msgs, m)
		tp.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return tp
}

func (tp *tap) all() []*nats.Msg {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]*nats.Msg(nil), tp.msgs...)
}

func getState(t *testing.T, url string) State {
	t.Helper()
	resp, err := http.Get(url + "api/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st State
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestEndToEnd: the application on one node; a leak on s-003 gives
// exactly one alert, on the alerts address and on the dashboard; the
// analytics enclave is SIGKILLed mid-stream and every reading is still
// accounted for; an eavesdropper on NATS never sees a reading in clear.
func TestEndToEnd(t *testing.T) {
	for _, mode := range []string{SecurityCoordinator, SecurityChannel} {
		t.Run(mode, func(t *testing.T) { testEndToEnd(t, mode) })
	}
}

func testEndToEnd(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const sensors = 5
	cfg := testConfig(t, sensors)
	cfg.Security = mode
	a, logs := startAppLogs(t, ctx, cfg)
	tp := startTap(t, a.NATSURL())

	var amu sync.Mutex
	var got []monitor.Alert
	if _, err := a.Bus().Consumer(monitor.AddressAlerts, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		var al monitor.Alert
		if err := json.Unmarshal(m.Body(), &al); err != nil {
			t.Errorf("alert %q: %v", m.Body(), err)
		}
		amu.Lock()
		got = append(got, al)
		amu.Unlock()
	})); err != nil {
		t.Fatal(err)
	}
	alerts := func() []monitor.Alert {
		amu.Lock()
		defer amu.Unlock()
		return append([]monitor.Alert(nil), got...)
	}
	accepted := func() uint64 { return acceptedReadings(ctx, a) }
	// Past the detectors' warm-up on every sensor.
	testenv.WaitFor(ctx, t, "readings past the warm-up", func() bool { return accepted() >= sensors*30 })
	if al := alerts(); len(al) != 0 {
		t.Fatalf("alerts before any leak: %+v", al)
	}
	if err := a.InjectLeak(ctx, "s-003"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(ctx, t, "the leak alert", func() bool { return len(alerts()) > 0 })
	// Let the leak develop fully and more readings come: still one alert.
	before := accepted()
	testenv.WaitFor(ctx, t, "readings after the alert", func() bool { return accepted() >= before+sensors*3*monitor.LeakSteps })
	wantAlert := monitor.Alert{SensorID: "s-003", Kind: monitor.KindLeak, Severity: monitor.SeverityWarning}
	al := alerts()
	if len(al) != 1 || al[0].SensorID != wantAlert.SensorID || al[0].Kind != wantAlert.Kind || al[0].Severity != wantAlert.Severity || al[0].Time == 0 {
		t.Fatalf("alerts on %s: %+v, want exactly %+v", monitor.AddressAlerts, al, wantAlert)
	}
	// The dashboard's JSON shows exactly that alert.
	url := a.DashboardURL()
	testenv.WaitFor(ctx, t, "the alert on the dashboard", func() bool { return len(getState(t, url).Alerts) > 0 })
	st := getState(t, url)
	if len(st.Alerts) != 1 || st.Alerts[0].Alert != al[0] {
		t.Fatalf("dashboard alerts %+v, want %+v", st.Alerts, al[0])
	}
	want := map[string]string{ServiceAnalytics: a.Image().Measurement.String()}
	if mode == SecurityCoordinator {
		want[ServiceCoordinator] = a.coordImg.Measurement.String()
	}
	if len(st.Attestation) != len(want) {
		t.Fatalf("dashboard attestation %+v", st.Attestation)
	}
	for _, att := range st.Attestation {
		if !att.Verified || att.EvidenceType != "simulated" || att.Measurement != want[att.Service] {
			t.Fatalf("dashboard attestation %+v, want measurements %v", st.Attestation, want)
		}
	}
	if mode == SecurityCoordinator {
		// The runtime opened the readings (ingest only saw sealed replies).
		for _, svc := range st.Services {
			if svc.Name == ServiceIngest && (svc.Counts["sealed_replies"] == 0 || svc.Counts["accepted"] != 0) {
				t.Fatalf("ingest %+v: the readings did not go through the client channel", svc)
			}
		}
	}

	// Kill the analytics enclave mid-stream.
	analyticsPID := func() (pid, restarts int, up bool) {
		for _, e := range a.Enclaves() {
			if e.Name == ServiceAnalytics {
				return e.PID, e.Restarts, e.State == "up"
			}
		}
		return 0, 0, false
	}
	pid, _, _ := analyticsPID()
	if pid == 0 {
		t.Fatalf("enclaves %+v", a.Enclaves())
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(ctx, t, "the enclave's restart", func() bool {
		_, restarts, up := analyticsPID()
		return restarts >= 1 && up
	})
	before = accepted()
	testenv.WaitFor(ctx, t, "readings after the restart", func() bool { return accepted() >= before+sensors*10 })
	last, err := a.StopSensors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Every reading stored in JetStream reaches analytics and is taken
	// into account exactly once (redeliveries are counted as duplicates;
	// a redelivery overtaken by newer readings is accepted late).
	var status monitor.Status
	testenv.WaitFor(ctx, t, "every reading accounted for", func() bool {
		status, err = a.AnalyticsStatus(ctx, cfg.SensorIDs())
		if err != nil {
			return false
		}
		for id, seq := range last {
			if c := status.Sensors[id]; c.LastSeq != seq || c.Gaps != 0 {
				return false
			}
		}
		return true
	})
	if len(last) != sensors {
		t.Fatalf("sensors stopped: %v", last)
	}
	if mode == SecurityCoordinator {
		// The restarted enclave no longer held the sensors' sessions: the
		// readings queued under them were sealed again by their sensors,
		// none refused for good.
		var counts map[string]uint64
		ok := false
		for range 50 {
			for _, svc := range getState(t, url).Services {
				if svc.Name == ServiceIngest {
					counts = svc.Counts
				}
			}
			if ok = counts["resealed"] >= sensors && counts["dead_letters"] == 0; ok {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !ok {
			t.Fatalf("ingest after the restart: %v", counts)
		}
	}
	for id, seq := range last {
		c := status.Sensors[id]
		if c.Accepted != seq || c.Gaps != 0 || c.Rejected != 0 {
			t.Errorf("sensor %s sent %d readings; analytics: %+v", id, seq, c)
		}
	}
	t.Logf("readings per sensor %v; analytics %+v; duplicates after the kill are redeliveries", last, status)
	if al := alerts(); len(al) != 1 {
		t.Fatalf("alerts after the kill: %+v", al)
	}

	// The eavesdropper saw the traffic, and no reading in clear.
	msgs := tp.all()
	sealed := 0
	for _, m := range msgs {
		if bytes.Contains(m.Data, []byte(`"pressure"`)) || bytes.Contains(m.Data, []byte(`pressure`)) {
			t.Fatalf("the eavesdropper read a reading on %s: %q", m.Subject, m.Data)
		}
		if m.Subject == "cloister.durable."+AddressReadings && (secure.IsSessionMessage(m.Data) || bytes.HasPrefix(m.Data, []byte("CSQ"))) {
			sealed++
		}
	}
	if sealed < sensors*10 {
		t.Fatalf("the eavesdropper saw %d sealed readings of %d messages", sealed, len(msgs))
	}
	// Nor are readings in the clear on disk (JetStream's store, the
	// enclave's protected storage).
	for _, dir := range []string{"jetstream", "analytics", "coordinator"} {
		filepath.Walk(filepath.Join(a.StateDir(), dir), func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				b, _ := os.ReadFile(p)
				if bytes.Contains(b, []byte("pressure")) || bytes.Contains(b, []byte("s-003")) {
					t.Errorf("%s holds a reading or a sensor name in clear", p)
				}
			}
			return nil
		})
	}
	t.Logf("eavesdropper: %d messages, %d sealed readings, none in clear", len(msgs), sealed)
	// Nor in the hosts' logs.
	if l := logs.String(); strings.Contains(l, "pressure") || !strings.Contains(l, "enclave: up") {
		t.Errorf("the hosts' logs hold a reading (or were not captured):\n%s", l)
	}
}

// TestPlainModeSaysSo: with security plain the application works and says
// that nothing is confidential — and the eavesdropper indeed reads.
func TestPlainModeSaysSo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := testConfig(t, 2)
	cfg.Security = SecurityPlain
	a := startApp(t, ctx, cfg)
	tp := startTap(t, a.NATSURL())
	testenv.WaitFor(ctx, t, "readings", func() bool {
		for _, m := range tp.all() {
			if bytes.Contains(m.Data, []byte(`"pressure"`)) {
				return true
			}
		}
		return false
	})
	testenv.WaitFor(ctx, t, "state", func() bool { return len(a.State().Guarantees) > 0 })
	if g := strings.Join(a.State().Guarantees, "\n"); !strings.Contains(g, "NOT in force: security is plain") {
		t.Fatalf("guarantees: %s", g)
	}
}

// TestConfig checks the example files and the configuration errors.
func TestConfig(t *testing.T) {
	for _, f := range []string{"../app.yaml", "../app-3nodes.yaml"} {
		c, err := LoadConfig(f)
		if err != nil {
			t.Fatal(err)
		}
		if c.NodeOf(ServiceAnalytics) == "" || c.Sensors.Leak.Sensor != "s-003" {
			t.Fatalf("%s: %+v", f, c)
		}
	}
	for _, bad := range []string{
		"nodes: []",
		"bogus: 1\nnodes: [{name: a, services: [sensors, ingest, analytics, alerts, dashboard]}]",
		"security: maybe\nnodes: [{name: a, services: [sensors, ingest, analytics, alerts, dashboard]}]",
		"nodes: [{name: a, services: [sensors, ingest, analytics, alerts]}]",
		"nodes: [{name: a, services: [sensors, ingest, analytics, alerts, dashboard, sensors]}]",
		"nodes: [{name: a, cluster_listen: x, services: [sensors, analytics, alerts, dashboard]}, {name: b, cluster_listen: y, services: [ingest]}]",
	} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestConfigErrorsNameValueFieldAndLine: every bad value is refused with
// the field, the value and its line.
func TestConfigErrorsNameValueFieldAndLine(t *testing.T) {
	const nodes = "nodes:\n  - name: n1\n    services: [sensors, ingest, analytics, alerts, dashboard]\n"
	cases := []struct {
		name, yaml string
		field      string
		line       int
		want       string
	}{
		{"count not whole", "sensors:\n  count: 2.5\n" + nodes, "sensors.count", 2, "2.5"},
		{"count zero", "sensors:\n  count: 0\n" + nodes, "sensors.count", 2, "0"},
		{"count negative", "sensors:\n  count: -1\n" + nodes, "sensors.count", 2, "-1"},
		{"period zero", "sensors:\n  period: 0s\n" + nodes, "sensors.period", 2, "0s"},
		{"period negative", "sensors:\n  period: -5s\n" + nodes, "sensors.period", 2, "-5s"},
		{"leak on no sensor", "sensors:\n  count: 5\n  leak:\n    sensor: s-042\n" + nodes, "sensors.leak.sensor", 4, "s-042"},
		{"leak after negative", "sensors:\n  leak:\n    sensor: s-001\n    after: -1s\n" + nodes, "sensors.leak.after", 4, "-1s"},
		{"ack wait negative", "ack_wait: -10s\n" + nodes, "ack_wait", 1, "-10s"},
		{"ack wait tiny", "ack_wait: 1ns\n" + nodes, "ack_wait", 1, "1ns"},
		{"restart backoff negative", "enclave:\n  restart_backoff: -1s\n" + nodes, "enclave.restart_backoff", 2, "-1s"},
		{"unknown backend", "enclave:\n  backend: sgx-magic\n" + nodes, "enclave.backend", 2, "sgx-magic"},
		{"dashboard without port", "dashboard: 127.0.0.1\n" + nodes, "dashboard", 1, "127.0.0.1"},
		{"dashboard without host", "dashboard: \":8080\"\n" + nodes, "dashboard", 1, ":8080"},
		{"dashboard bad port", "dashboard: 127.0.0.1:99999\n" + nodes, "dashboard", 1, "99999"},
		{"nats listen without port", nodes + "    nats_listen: 127.0.0.1\n", "nodes[0].nats_listen", 4, "127.0.0.1"},
		{"bad route", nodes + "    cluster_listen: 127.0.0.1:6222\n    routes: [n9, \"127.0.0.1:0\"]\n", "nodes[0].routes[0]", 5, "n9"},
		{"second document", nodes + "---\nname: other\n", "", 4, "second YAML document"},
		{"empty file", "", "", 0, "empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			var ce *ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v, want a ConfigError", err)
			}
			if ce.Field != tc.field || ce.Line != tc.line || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q (field %q, line %d), want field %q, line %d, mentioning %q", err, ce.Field, ce.Line, tc.field, tc.line, tc.want)
			}
		})
	}
}

// TestStartFailsBeforeWriting: a state_dir that is a file or read-only, a
// port in use, and values set after parsing (as flags do) that are
// invalid stop Start at once, with the reason, and nothing is written.
func TestStartFailsBeforeWriting(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	file := filepath.Join(t.TempDir(), "state-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	readOnly := filepath.Join(t.TempDir(), "read-only")
	if err := os.Mkdir(readOnly, 0o500); err != nil {
		t.Fatal(err)
	}
	canWriteReadOnly := false
	if f, err := os.CreateTemp(readOnly, "probe"); err == nil { // root writes anyway
		canWriteReadOnly = true
		f.Close()
		os.Remove(f.Name())
	}
	cases := []struct {
		name   string
		change func(c *Config) (stateDir string)
		want   string
	}{
		{"state dir is a file", func(c *Config) string { c.StateDir = file; return "" }, "is a file"},
		{"dashboard port in use", func(c *Config) string { c.Dashboard = taken.Addr().String(); return c.StateDir }, "dashboard: cannot listen on " + taken.Addr().String()},
		{"nats port in use", func(c *Config) string { c.Nodes[0].NATSListen = taken.Addr().String(); return c.StateDir }, "nats_listen " + taken.Addr().String()},
		{"unknown backend", func(c *Config) string { c.Enclave.Backend = "sgx-magic"; return c.StateDir }, "enclave.backend"},
		{"bad route", func(c *Config) string {
			c.Nodes[0].ClusterListen = "127.0.0.1:-1"
			c.Nodes[0].Routes = []string{"nowhere"}
			return c.StateDir
		}, "nodes[0].routes[0]"},
		{"dashboard without port", func(c *Config) string { c.Dashboard = "127.0.0.1"; return c.StateDir }, "dashboard"},
	}
	if !canWriteReadOnly {
		cases = append(cases, struct {
			name   string
			change func(c *Config) (stateDir string)
			want   string
		}{"state dir read-only", func(c *Config) string { c.StateDir = readOnly; return "" }, "not writable"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, 2)
			cfg.StateDir = filepath.Join(t.TempDir(), "state")
			mustNotExist := tc.change(cfg)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			a, err := Start(ctx, cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err == nil {
				a.Close(ctx)
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if mustNotExist != "" {
				if _, err := os.Stat(mustNotExist); !os.IsNotExist(err) {
					t.Fatalf("%s was created (%v)", mustNotExist, err)
				}
			}
		})
	}
}

// acceptedReadings is how many readings analytics applied, over all the
// configured sensors (0 while it does not answer).
func acceptedReadings(ctx context.Context, a *App) uint64 {
	st, err := a.AnalyticsStatus(ctx, a.Config().SensorIDs())
	if err != nil {
		return 0
	}
	var n uint64
	for _, c := range st.Sensors {
		n += c.Accepted
	}
	return n
}

// threeNodeConfig is the shipped three-node layout (sensors, ingest and the
// dashboard on n1, the coordinator and analytics on n2, alerts on n3) on
// free ports. Routes need addresses known in advance (a clustered
// JetStream waits for its routes): every node routes to all.
func threeNodeConfig(t *testing.T, sensors int) *Config {
	t.Helper()
	cfg := testConfig(t, sensors)
	var routes []string
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, l.Addr().String())
		l.Close()
	}
	cfg.Nodes = []NodeConfig{
		{Name: "n1", ClusterListen: routes[0], Routes: routes, Services: []string{ServiceSensors, ServiceIngest, ServiceDashboard}},
		{Name: "n2", ClusterListen: routes[1], Routes: routes, Services: []string{ServiceAnalytics}},
		{Name: "n3", ClusterListen: routes[2], Routes: routes, Services: []string{ServiceAlerts}},
	}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestThreeNodes: the same application on three routed nodes (in one
// process) — a configuration change only.
func TestThreeNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := threeNodeConfig(t, 3)
	a := startApp(t, ctx, cfg)
	testenv.WaitFor(ctx, t, "readings past the warm-up on three nodes", func() bool { return a.State().Analytics.Accepted >= 3*30 })
	if err := a.InjectLeak(ctx, "s-002"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(ctx, t, "the leak alert from node n3", func() bool { return len(a.State().Alerts) > 0 })
	st := a.State()
	if len(st.Alerts) != 1 || st.Alerts[0].SensorID != "s-002" || st.Alerts[0].Kind != monitor.KindLeak {
		t.Fatalf("alerts %+v", st.Alerts)
	}
	nodes := map[string]string{}
	for _, s := range st.Services {
		nodes[s.Name] = s.Node
		if s.Error != "" {
			t.Errorf("service %s: %s", s.Name, s.Error)
		}
	}
	if nodes[ServiceAnalytics] != "n2" || nodes[ServiceAlerts] != "n3" || nodes[ServiceIngest] != "n1" {
		t.Fatalf("placement %v", nodes)
	}
	for _, att := range st.Attestation {
		if !att.Verified {
			t.Fatalf("attestation across nodes: %+v", st.Attestation)
		}
	}
	// Every node is ready (its services and enclaves up, NATS connected,
	// the coordinator holding its manifest) and counts its own part of the
	// traffic: n1 sends readings, n2's analytics enclave receives them.
	for _, name := range a.app.NodeNames() {
		if rd := a.app.Node(name).Readiness(ctx); !rd.Ready {
			t.Errorf("node %s not ready: %+v", name, rd.NotReady)
		}
	}
	if v := scrapeSum(t, a, `cloister_bus_messages_total{address="water.readings",op="send"}`); v < 3*30 {
		t.Errorf("readings sent, by the metrics: %v", v)
	}
	if v := scrapeSum(t, a, `cloister_enclave_frames_in_total{enclave="analytics"`); v <= 0 {
		t.Errorf("frames into analytics, by the metrics: %v", v)
	}
}

// TestRestartWithStateDir: a second run over the same state directory
// continues where the first stopped — the coordinator keeps its manifest,
// analytics its statistics, the sensors their sequence numbers — and
// readings JetStream still held are taken into account.
func TestRestartWithStateDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := testConfig(t, 2)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	run := func(minAccepted uint64) map[string]uint64 {
		a, err := Start(ctx, cfg, Options{Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := a.Close(cctx); err != nil {
				t.Errorf("close: %v", err)
			}
		}()
		testenv.WaitFor(ctx, t, "readings", func() bool { return a.State().Analytics.Accepted >= minAccepted })
		last, err := a.StopSensors(ctx)
		if err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(ctx, t, "every reading accounted for", func() bool {
			st, err := a.AnalyticsStatus(ctx, cfg.SensorIDs())
			if err != nil {
				return false
			}
			for id, seq := range last {
				c := st.Sensors[id]
				if c.LastSeq != seq || c.Accepted != seq || c.Gaps != 0 || c.Duplicates != 0 {
					return false
				}
			}
			return true
		})
		return last
	}
	first := run(20)
	second := run(first["s-001"] + first["s-002"] + 20)
	for id, seq := range second {
		if seq <= first[id] {
			t.Fatalf("sensor %s: %d readings after the first run's %d", id, seq, first[id])
		}
	}
}

// FuzzParseConfig: whatever the bytes, ParseConfig does not panic, and a
// configuration it accepts passes Check again unchanged.
func FuzzParseConfig(f *testing.F) {
	for _, p := range []string{"../app.yaml", "../app-3nodes.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("sensors:\n  count: 2.5\nnodes: [{name: a, services: [sensors]}]\n---\nx: 1\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := ParseConfig(raw)
		if err != nil {
			return
		}
		if err := c.Check(); err != nil {
			t.Fatalf("accepted, then refused by Check: %v", err)
		}
	})
}
