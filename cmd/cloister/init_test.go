package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInitBuildsTestsAndRuns: cloister init writes an application outside
// the checkout that passes its own go test and runs with cloister run at
// once, and its regular and trusted services answer: the trusted one only
// to the outside client over a verified session.
func TestInitBuildsTestsAndRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs an application")
	}
	dir := filepath.Join(t.TempDir(), "hello")
	code, out, errOut := runCLI(t, "init", dir)
	if code != 0 || !strings.Contains(out, "development build") || !strings.Contains(out, "replaces github.com/cloister-dev/cloister") {
		t.Fatalf("init: %d\n%s\n%s", code, out, errOut)
	}
	for _, f := range []string{"go.mod", "go.sum", "app.yaml", "main.go", "front.go", "vault/main.go", "app_test.go", ".gitignore"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("init did not write %s: %v", f, err)
		}
	}
	// A second init into the same directory refuses.
	if code, _, errOut := runCLI(t, "init", dir); code == 0 || !strings.Contains(errOut, "not empty") {
		t.Errorf("init into a full directory: %d %s", code, errOut)
	}
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // simulation keys of the test's own, here and in the children
	env := append(os.Environ(), "GOFLAGS=-mod=mod")
	gt := exec.Command("go", "test", "./...")
	gt.Dir, gt.Env = dir, env
	if b, err := gt.CombinedOutput(); err != nil {
		t.Fatalf("go test in the new application: %v\n%s", err, b)
	}

	// cloister run, on a free port rather than app.yaml's 4222.
	desc := filepath.Join(dir, "app.yaml")
	b, err := os.ReadFile(desc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(desc, []byte(strings.Replace(string(b), "127.0.0.1:4222", "127.0.0.1:-1", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, stdout, stderr := startCloister(t, dir, env, "run", "app.yaml")
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	var log strings.Builder
	url := ""
	for url == "" && sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if m := regexp.MustCompile(`^hello: ready \(NATS (nats://\S+);`).FindStringSubmatch(sc.Text()); m != nil {
			url = m[1]
		}
	}
	if url == "" {
		t.Fatalf("the application never got ready:\n%s\n%s", log.String(), stderr.String())
	}
	go io.Copy(io.Discard, stdout)

	if code, out, errOut := runCLI(t, "request", "-s", url, "front.hello", "ada"); code != 0 || strings.TrimSpace(out) != "hello, ada" {
		t.Fatalf("front.hello: %d %q %s", code, out, errOut)
	}
	code, meas, errOut := runCLI(t, "enclave", "measure", filepath.Join(dir, "state", "images", "n1", "coordinator.img"))
	if code != 0 {
		t.Fatalf("measure: %d %s", code, errOut)
	}
	secure := []string{"request", "-s", url, "--secure", "--allow-simulation",
		"--coordinator-measurement", strings.Fields(meas)[0], "--manifest", filepath.Join(dir, "state", "manifest.yaml"),
		"--service", "vault", "--client", "meter-7", "--client-key", filepath.Join(dir, "state", "meter-7.pem"),
		"vault.count", "alice"}
	if code, out, errOut := runCLI(t, secure...); code != 0 || strings.TrimSpace(out) != "1" {
		t.Fatalf("vault.count as meter-7: %d %q %s", code, out, errOut)
	}
	if code, _, _ := runCLI(t, "request", "-s", url, "vault.count", "alice"); code == 0 {
		t.Fatal("a plain request to the secured address was answered")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("cloister run did not stop on SIGTERM")
	}
}
