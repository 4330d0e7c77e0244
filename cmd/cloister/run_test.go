package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var summaryLine = regexp.MustCompile(`^\d\d:\d\d:\d\d  readings/s sent \d+`)

// startRun starts cloister run on examples/water/app.yaml with extra
// flags, the dashboard on any free port, and state and simulation keys of
// the test's own.
func startRun(t *testing.T, flags ...string) (*exec.Cmd, io.ReadCloser, *strings.Builder) {
	t.Helper()
	args := append([]string{"run", "--dashboard", "127.0.0.1:0", "--state-dir", t.TempDir()}, flags...)
	return startCloister(t, "", append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir()), append(args, filepath.Join("..", "..", "examples", "water", "app.yaml"))...)
}

// startCloister starts the cloister binary with args in dir (""; this
// one) and env (nil: this one's), its standard output to read, its
// standard error collected.
func startCloister(t *testing.T, dir string, env []string, args ...string) (*exec.Cmd, io.ReadCloser, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(cloisterBin, args...)
	cmd.Dir, cmd.Env = dir, env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdout, stderr
}

// TestRunWaterStopsCleanly: cloister run starts the water application,
// prints the dashboard's address and one summary line per second, shows
// cloister tap only ciphertext where readings travel, and stops cleanly on
// SIGTERM.
func TestRunWaterStopsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	cmd, stdout, stderr := startRun(t, "--sensors", "3", "--period", "50ms")
	var mu sync.Mutex
	var out strings.Builder
	summaries := make(chan struct{}, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if summaryLine.MatchString(sc.Text()) {
				summaries <- struct{}{}
			}
		}
	}()
	for range 2 {
		select {
		case <-summaries:
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			mu.Lock()
			t.Fatalf("no summary lines:\n%s\n%s", out.String(), stderr.String())
		}
	}
	// The eavesdropper: cloister tap on the application's NATS server sees
	// the sealed readings and not one in clear.
	mu.Lock()
	m := regexp.MustCompile(`cloister tap -s \.\.\.\): (\S+)`).FindStringSubmatch(out.String())
	mu.Unlock()
	if m == nil {
		cmd.Process.Kill()
		t.Fatalf("no NATS URL printed:\n%s", out.String())
	}
	tap, err := exec.Command(cloisterBin, "tap", "--servers", m[1], "--count", "300", "--max-body", "0").CombinedOutput()
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("tap: %v\n%s", err, tap)
	}
	if strings.Contains(string(tap), "pressure") || !strings.Contains(string(tap), "water.readings") {
		cmd.Process.Kill()
		t.Fatalf("the eavesdropper's view:\n%s", tap)
	}
	// The node's operations endpoint, on loopback by default: traffic,
	// the coordinator's manifest, and readiness.
	mu.Lock()
	mm := regexp.MustCompile(`metrics of node \S+: (http://127\.0\.0\.1:\d+)/metrics`).FindStringSubmatch(out.String())
	mu.Unlock()
	if mm == nil {
		cmd.Process.Kill()
		t.Fatalf("no metrics address printed:\n%s", out.String())
	}
	checkRunMetrics(t, mm[1])
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s\n%s", err, out.String(), stderr.String())
	}
	s := out.String()
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`dashboard: http://127\.0\.0\.1:\d+/`),
		regexp.MustCompile(`measurement [0-9a-f]{64}`),
		regexp.MustCompile(`readings/s sent \d+ analysed \d+ .* analytics/0 up pid \d+ .*coordinator attested \(simulated\)`),
		regexp.MustCompile(`NOT in force: SGX`),
		regexp.MustCompile(`(?m)^stopped$`),
	} {
		if !want.MatchString(s) {
			t.Fatalf("output lacks %s:\n%s\n%s", want, s, stderr.String())
		}
	}
}

// TestBenchQuick: cloister bench --quick measures the three modes and
// writes JSON and an SVG chart.
func TestBenchQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	svg := filepath.Join(t.TempDir(), "bench.svg")
	cmd := exec.Command(cloisterBin, "bench", "--quick", "--json", "--nodes", "1", "--sizes", "256", "--svg", svg)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	cmd.Stderr = io.Discard
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	var rep struct {
		Results []struct {
			Mode       string  `json:"mode"`
			Throughput float64 `json:"throughput"`
			P50        float64 `json:"p50_us"`
			P99        float64 `json:"p99_us"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rep.Results) != 6 { // 3 modes x 2 concurrency levels
		t.Fatalf("results: %s", out)
	}
	for _, r := range rep.Results {
		if r.Throughput <= 0 || r.P50 <= 0 || r.P99 < r.P50 {
			t.Fatalf("result %+v", r)
		}
	}
	b, err := os.ReadFile(svg)
	if err != nil || !strings.HasPrefix(string(b), "<svg") || !strings.Contains(string(b), "trusted+secured") {
		t.Fatalf("svg: %v\n%s", err, b)
	}
}

// TestRunRefusesBadValues: invalid flag values and configuration files are
// usage errors naming the flag (or the field and line) and the value,
// before anything starts.
func TestRunRefusesBadValues(t *testing.T) {
	appYAML := filepath.Join("..", "..", "examples", "water", "app.yaml")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	water, err := filepath.Abs(filepath.Join("..", "..", "examples", "water"))
	if err != nil {
		t.Fatal(err)
	}
	// The files name the water program, which checks them.
	nodes := "nodes:\n  - name: n1\n    services: [sensors, ingest, analytics, alerts, dashboard]\nprogram: " + water + "\n"
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"--sensors", "-1", appYAML}, []string{"--sensors -1"}},
		{[]string{"--sensors", "0", appYAML}, []string{"--sensors 0"}},
		{[]string{"--period", "0s", appYAML}, []string{"--period 0s"}},
		{[]string{"--period", "-5s", appYAML}, []string{"--period -5s"}},
		{[]string{"--duration", "-1s", appYAML}, []string{"--duration -1s"}},
		{[]string{"--leak-after", "-1s", appYAML}, []string{"--leak-after -1s"}},
		{[]string{"--dashboard", "127.0.0.1", appYAML}, []string{"dashboard", `"127.0.0.1"`}},
		{[]string{"--leak", "s-999", appYAML}, []string{"sensors.leak.sensor", "s-999"}},
		{[]string{"--sensors", "2", appYAML}, []string{"sensors.leak.sensor", "s-003"}}, // the file's leak is on s-003
		{[]string{write("count.yaml", "sensors:\n  count: 2.5\n"+nodes)}, []string{"sensors.count (line 2)", "2.5"}},
		{[]string{write("ack.yaml", "ack_wait: 1ns\n"+nodes)}, []string{"ack_wait (line 1)", "1ns"}},
		{[]string{write("two.yaml", nodes+"---\n"+nodes)}, []string{"line 5", "second YAML document"}},
		{[]string{write("backend.yaml", "enclave:\n  backend: sgx-magic\n"+nodes)}, []string{"enclave.backend (line 2)", "sgx-magic"}},
	}
	for _, tc := range cases {
		code, out, errOut := runCLI(t, append([]string{"run"}, tc.args...)...)
		if code != exitUsage && code != exitFailure {
			t.Errorf("run %q: exit %d\n%s\n%s", tc.args, code, out, errOut)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("run %q: stderr does not mention %q:\n%s", tc.args, w, errOut)
			}
		}
		if strings.Contains(out, "building") {
			t.Errorf("run %q started building images:\n%s", tc.args, out)
		}
	}
}

// TestRunStopsOnSignalDuringStartup: SIGINT while the images are still
// being built (or the nodes starting) stops cloister run, rather than
// being ignored until the start-up is over.
func TestRunStopsOnSignalDuringStartup(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	cmd, stdout, stderr := startRun(t)
	sc := bufio.NewScanner(stdout)
	var out strings.Builder
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "building image analytics") {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, stdout)
	err := cmd.Wait()
	if strings.Contains(out.String(), "readings/s sent") {
		t.Fatalf("ran on after SIGINT during start-up:\n%s", out.String())
	}
	// Interrupted is not a failure: exit 0, and no word of a broken build.
	if err != nil || strings.Contains(stderr.String(), "build") {
		t.Fatalf("exit after SIGINT during start-up: %v\n%s", err, stderr.String())
	}
}

// TestRunPortInUseFailsAtOnce: a NATS port in use is an error naming the
// field and the address, before any image is built.
func TestRunPortInUseFailsAtOnce(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "app.yaml")
	water, err := filepath.Abs(filepath.Join("..", "..", "examples", "water"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cfg, []byte("program: "+water+"\nnodes:\n  - name: n1\n    nats_listen: "+taken.Addr().String()+"\n    services: [sensors, ingest, analytics, alerts, dashboard]\n"), 0o600)
	state := filepath.Join(dir, "state")
	code, out, errOut := runCLI(t, "run", "--dashboard", "127.0.0.1:0", "--state-dir", state, cfg)
	if code != exitFailure || !strings.Contains(errOut, "nats_listen "+taken.Addr().String()) || strings.Contains(out, "building") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("state dir written: %v", err)
	}
}

// checkRunMetrics scrapes a running water application's node: readings
// counted by address, the analytics enclave up, the coordinator's manifest
// as an info metric, and /readyz ready.
func checkRunMetrics(t *testing.T, base string) {
	t.Helper()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^cloister_bus_messages_total\{address="water\.readings",op="send"\} [1-9]`),
		regexp.MustCompile(`(?m)^cloister_enclave_up\{enclave="analytics",instance="0"\} 1$`),
		regexp.MustCompile(`(?m)^cloister_coordinator_info\{epoch="\d+",evidence_type="\S+",manifest_hash="[0-9a-f]{64}",manifest_version="\d+"\} 1$`),
		regexp.MustCompile(`(?m)^cloister_nats_connected 1$`),
		regexp.MustCompile(`(?m)^cloister_coordinator_join_replies_total\{reason="",result="granted"\} [1-9]`),
	} {
		if !want.MatchString(body) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d %s", code, body)
	}
}

// TestRunDescriptionItself: a description without Go services runs in
// cloister run itself: its command service is started with the node's
// NATS URL, its output shown, and SIGTERM stops everything cleanly.
func TestRunDescriptionItself(t *testing.T) {
	dir := t.TempDir()
	desc := filepath.Join(dir, "app.yaml")
	os.WriteFile(desc, []byte(`name: hello
services:
  greeter:
    command: [sh, -c, 'echo "hello from $CLOISTER_SERVICE at $NATS_URL"; exec sleep 600']
addresses:
  jobs: {durable: true, consume: [greeter]}
`), 0o600)
	cmd, stdout, stderr := startCloister(t, "", nil, "run", "--state-dir", filepath.Join(dir, "state"), desc)
	sc := bufio.NewScanner(stdout)
	var out strings.Builder
	ready, greeted := false, false
	for !(ready && greeted) && sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		ready = ready || strings.HasPrefix(sc.Text(), "hello: ready")
		greeted = greeted || regexp.MustCompile(`^greeter \| hello from greeter at nats://127\.0\.0\.1:\d+$`).MatchString(sc.Text())
	}
	if !ready || !greeted {
		cmd.Process.Kill()
		t.Fatalf("ready %v, greeted %v:\n%s\n%s", ready, greeted, out.String(), stderr.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	go io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
}

// TestRunNeedsADescription: no APP.yaml, or two, is a usage error.
func TestRunNeedsADescription(t *testing.T) {
	for _, args := range [][]string{{"run"}, {"run", "a.yaml", "b.yaml"}} {
		code, _, errOut := runCLI(t, args...)
		if code != exitUsage || !strings.Contains(errOut, "APP.yaml") && !strings.Contains(errOut, "one APP.yaml") {
			t.Errorf("%q: exit %d %s", args, code, errOut)
		}
	}
}
