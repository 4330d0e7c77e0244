package node

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// trafficUntil requests ops.echo in a loop until the returned stop is
// called.
func trafficUntil(t *testing.T, n *Node) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			_, _ = n.Bus().Request(ctx, "ops.echo", "x")
			time.Sleep(time.Millisecond)
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// echoRate returns the last request rate of ops.echo in the page's state.
func echoRate(st OpsState) float64 {
	for _, s := range st.Series {
		if s.Address == "ops.echo" && s.Kind == "requests" && len(s.Points) > 0 {
			return s.Points[len(s.Points)-1]
		}
	}
	return 0
}

// TestOperatorPage: the page is served beside the metrics, and the state
// it draws shows the enclave with its attestation and a request rate that
// moves with traffic.
func TestOperatorPage(t *testing.T) {
	n := clusteredNode(t, OpsOptions{})
	ctx := context.Background()
	if _, err := n.Deploy(ctx, func() Service { return opsEcho{} }, DeployOptions{Name: "echo"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.DeployEnclave(ctx, EnclaveConfig{Name: "vault", Image: enclaveImage(t), Addresses: []string{"test.*"}, StateDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	stop := trafficUntil(t, n)
	defer stop()
	deadline := time.Now().Add(time.Minute)
	for echoRate(n.OpsState(ctx)) <= 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no request rate for ops.echo: %+v", n.OpsState(ctx).Series)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := n.OpsState(ctx)
	if len(st.Enclaves) != 1 || st.Enclaves[0].Measurement == "" || st.Enclaves[0].Evidence != "simulated" || st.Enclaves[0].State != "up" {
		t.Fatalf("enclaves on the page: %+v", st.Enclaves)
	}
	resp, err := http.Get("http://" + n.OpsAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `id="charts"`) {
		t.Fatalf("GET /: %d\n%s", resp.StatusCode, page)
	}

	// In a real browser, when one is installed: the chart of ops.echo is
	// drawn with a rate above zero.
	t.Run("browser", func(t *testing.T) {
		const chromium = "/usr/bin/chromium"
		if _, err := os.Stat(chromium); err != nil {
			t.Skipf("no %s: install Debian's chromium package to check the page in a browser", chromium)
		}
		cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
			"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(),
			"--virtual-time-budget=3000", "--dump-dom", "http://"+n.OpsAddr()+"/")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		dom := regexp.MustCompile(`(?s)<script>.*?</script>`).ReplaceAllString(string(out), "")
		m := regexp.MustCompile(`<svg[^>]*data-address="ops\.echo"[^>]*data-max="([0-9.]+)"`).FindStringSubmatch(dom)
		if m == nil {
			t.Fatalf("no chart of ops.echo in:\n%s", dom)
		}
		if v, _ := strconv.ParseFloat(m[1], 64); v <= 0 {
			t.Fatalf("the chart of ops.echo is flat (max %s)", m[1])
		}
		for _, want := range []string{`data-enclave="vault/0"`, `data-state="up"`, `class="sim"`, st.Enclaves[0].Measurement, `data-ready="true"`} {
			if !strings.Contains(dom, want) {
				t.Fatalf("the page lacks %q:\n%s", want, dom)
			}
		}
	})
}
