package app

import (
	"context"
	"github.com/cloister-dev/cloister/internal/testenv"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// chromiumPath is where Debian's chromium package puts the browser.
const chromiumPath = "/usr/bin/chromium"

// dumpDOM loads url in headless Chromium, lets the page's scripts run for
// a few seconds of virtual time, and returns the DOM without the scripts.
func dumpDOM(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, chromiumPath, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
		"--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(), "--virtual-time-budget=5000", "--dump-dom", url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	// The page's script holds the markup it renders: look at the DOM only.
	return regexp.MustCompile(`(?s)<script>.*?</script>`).ReplaceAllString(string(out), "")
}

// TestDashboardInBrowser: a real browser loads the dashboard, which shows
// the attestation and no alert; after a leak the alert appears.
func TestDashboardInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must have %s (.ci/run installs Debian's chromium package): %v", chromiumPath, err)
		}
		t.Skipf("no %s: install Debian's chromium package (apt-get install -y chromium) to run the browser test", chromiumPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := testConfig(t, 3)
	a := startApp(t, ctx, cfg)
	url := a.DashboardURL()
	testenv.WaitFor(ctx, t, "analytics attested and readings past the warm-up", func() bool {
		st := a.State()
		if len(st.Attestation) == 0 || st.Analytics.Accepted < 3*30 {
			return false
		}
		for _, att := range st.Attestation {
			if !att.Verified {
				return false
			}
		}
		return true
	})

	dom := dumpDOM(t, ctx, url)
	for _, want := range []string{`id="no-alerts"`, `class="evidence"><span class="sim">simulated</span>`, a.Image().Measurement.String(), `data-service="analytics"`,
		a.coordImg.Measurement.String(), `data-service="coordinator"`} {
		if !strings.Contains(dom, want) {
			t.Fatalf("the dashboard lacks %q before the leak:\n%s", want, dom)
		}
	}
	if strings.Contains(dom, `class="alert"`) {
		t.Fatalf("an alert before the leak:\n%s", dom)
	}

	if err := a.InjectLeak(ctx, "s-002"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(ctx, t, "the alert in the dashboard's state", func() bool { return len(a.State().Alerts) > 0 })
	dom = dumpDOM(t, ctx, url)
	rows := regexp.MustCompile(`<tr class="alert"[^>]*>`).FindAllString(dom, -1)
	if len(rows) != 1 || !strings.Contains(rows[0], `data-sensor="s-002"`) || !strings.Contains(rows[0], `data-kind="leak"`) ||
		!strings.Contains(rows[0], `data-severity="warning"`) {
		t.Fatalf("alert rows %q in:\n%s", rows, dom)
	}
	// The rates are live numbers, not placeholders.
	if !regexp.MustCompile(`data-service="sensors".*?class="num rate">[1-9]`).MatchString(dom) {
		t.Fatalf("no sensor rate shown:\n%s", dom)
	}
}
