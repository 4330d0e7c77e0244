package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
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
