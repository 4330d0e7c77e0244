package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freePort returns a loopback address nobody listens on (a route that
// cannot connect yet).
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestNodeJSONLogsAndMetrics runs cloister node with --log-format json and
// --metrics, with a seed route to a peer that is not up (as when the
// nodes of a cluster start one after another): every line it writes is a
// JSON object, none is an ERROR, the route retries included; its
// operations endpoint serves metrics and readiness.
func TestNodeJSONLogsAndMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	p := startBusProc(t, "jsonlogs", "node", "--name", "jsonlogs", "--nats-listen", "127.0.0.1:-1", "--cluster-listen", "127.0.0.1:-1",
		"--log-format", "json", "--metrics", "127.0.0.1:0", "--routes", freePort(t))
	p.waitMatch(regexp.MustCompile(`"msg":"cloister node: ready"`))
	m := p.waitMatch(regexp.MustCompile(`"metrics":"(http://[^"]+)"`))
	p.waitMatch(regexp.MustCompile(`Error trying to connect to route`))
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(m[1]); code != http.StatusOK || !strings.Contains(body, "cloister_nats_connected 1") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	base := strings.TrimSuffix(m[1], "/metrics")
	if code, body := get(base + "/readyz"); code != http.StatusOK || !strings.Contains(body, `"ready":true`) {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	if err := p.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(p.output()), "\n")
	if len(lines) < 3 {
		t.Fatalf("too few lines:\n%s", p.output())
	}
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not JSON (%v): %q", i+1, err, line)
		}
		if rec["level"] == "ERROR" {
			t.Errorf("line %d is an ERROR during a normal start: %s", i+1, line)
		}
		if _, ok := rec["msg"]; !ok {
			t.Errorf("line %d has no msg: %s", i+1, line)
		}
	}
}

// TestLogAndMetricsFlagsChecked: a bad --log-format, a --metrics address
// without a host (every interface, silently) and a --trace-endpoint that is
// not an http(s) URL are usage errors.
func TestLogAndMetricsFlagsChecked(t *testing.T) {
	for _, args := range [][]string{
		{"node", "--log-format", "xml"},
		{"node", "--metrics", ":9090"},
		{"run", "--metrics", ":9090", "app.yaml"},
		{"bench", "--log-format", "yaml"},
		{"node", "--trace-endpoint", "127.0.0.1:4318"},
		{"run", "--trace-endpoint", "ftp://x/v1/traces", "app.yaml"},
	} {
		code, _, errOut := runCLI(t, args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d\n%s", args, code, exitUsage, errOut)
		}
	}
}

// TestCoordinatorJSONLogsAndReadiness runs 'cloister coordinator' in
// process with JSON logs and metrics, building its image on first use: every
// line on stderr (the image build's included) is JSON, the coordinator's
// status is a metric, and /readyz says it is not ready while the
// coordinator holds no manifest. Without --state, its state is kept under
// the user config directory, keyed by the node's name, and the place is
// logged.
func TestCoordinatorJSONLogsAndReadiness(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image and starts processes")
	}
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		env := &cliEnv{stdin: strings.NewReader(""), stdout: &syncBuffer{}, stderr: &stderr}
		done <- run(ctx, env, []string{"coordinator", "--nats-listen", "127.0.0.1:-1", "--source", "../..",
			"--name", "json-coord", "--log-format", "json", "--metrics", "127.0.0.1:0"})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
		}
	})
	metricsURL := regexp.MustCompile(`"metrics":"(http://[^"]+)"`)
	deadline := time.Now().Add(5 * time.Minute)
	var m []string
	for {
		if strings.Contains(stderr.String(), `"msg":"cloister node: ready"`) {
			m = metricsURL.FindStringSubmatch(stderr.String())
			break
		}
		select {
		case code := <-done:
			t.Fatalf("coordinator exited %d:\n%s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator not ready:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m == nil {
		t.Fatalf("no metrics address logged:\n%s", stderr.String())
	}
	state := filepath.Join(dir, "config", "cloister", "coordinator", "json-coord")
	if !strings.Contains(stderr.String(), `"msg":"cloister coordinator: state","state":"`+state+`"`) {
		t.Fatalf("the state directory %s was not logged:\n%s", state, stderr.String())
	}
	if entries, err := os.ReadDir(state); err != nil || len(entries) == 0 {
		t.Fatalf("state directory %s: %v, %d entries", state, err, len(entries))
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "cloister_coordinator_up 1") || !strings.Contains(string(body), `cloister_enclave_up{enclave="coordinator",instance="0"} 1`) {
		t.Fatalf("/metrics:\n%s", body)
	}
	resp, err = http.Get(strings.TrimSuffix(m[1], "/metrics") + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"name":"coordinator","reason":"holds no manifest"`) {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
	}
	cancel()
	<-done
	for i, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not JSON (%v): %q", i+1, err, line)
		}
	}
}
