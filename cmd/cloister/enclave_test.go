package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/internal/syncbuf"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer = syncbuf.Buffer

var clientsURL = regexp.MustCompile(`clients=(nats://[0-9.:]+)`)

// waitNodeReady waits until a node (or coordinator) that run() started in
// this process has printed "cloister node: ready", which comes once every
// hosted enclave serves, and returns its NATS client URL. It fails the
// test if the command exits first (its exit code arrives on done) or
// patience runs out.
func waitNodeReady(t *testing.T, what string, stderr *syncBuffer, done <-chan int, patience time.Duration) string {
	t.Helper()
	var url string
	deadline := time.Now().Add(patience)
	for url == "" || !strings.Contains(stderr.String(), "cloister node: ready") {
		if m := clientsURL.FindStringSubmatch(stderr.String()); m != nil {
			url = m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready:\n%s", what, stderr.String())
		}
		select {
		case code := <-done:
			t.Fatalf("%s exited %d:\n%s", what, code, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return url
}

func buildCounterImage(t *testing.T, dir string) string {
	t.Helper()
	img := filepath.Join(dir, "counter.img")
	code, out, errOut := runCLI(t, "enclave", "build", "-C", "../..", "./examples/counter/enclave", "-o", img, "--product-id", "3", "--svn", "2")
	if code != exitOK {
		t.Fatalf("build: exit %d\n%s\n%s", code, out, errOut)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}  `).MatchString(out) || !strings.Contains(errOut, "product 3, svn 2") {
		t.Fatalf("build output %q %q", out, errOut)
	}
	return img
}

func TestEnclaveBuildMeasureManifest(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(t.TempDir(), "config"))
	dir := t.TempDir()
	img := buildCounterImage(t, dir)
	code, out, errOut := runCLI(t, "enclave", "measure", img)
	if code != exitOK || !strings.Contains(errOut, "matches") {
		t.Fatalf("measure: %d %q %q", code, out, errOut)
	}
	hash := strings.Fields(out)[0]

	code, out, errOut = runCLI(t, "enclave", "gramine-manifest", img, "--threads", "24", "--enclave-size", "1G", "--pass-env", "TZ")
	if code != exitOK {
		t.Fatalf("gramine-manifest: %d %s", code, errOut)
	}
	for _, want := range []string{`sgx.max_threads = 24`, `sgx.enclave_size = "1G"`, `sgx.remote_attestation = "dcap"`, `sgx.debug = false`, `loader.env.TZ = { passthrough = true }`, hash, `"file:` + img + `"`} {
		if !strings.Contains(out, want) {
			t.Errorf("manifest lacks %s", want)
		}
	}
	mf := filepath.Join(dir, "counter.manifest")
	code, _, errOut = runCLI(t, "enclave", "gramine-manifest", img, "-o", mf)
	if code != exitOK || !strings.Contains(errOut, "gramine-sgx-sign --manifest counter.manifest --output counter.manifest.sgx") || !strings.Contains(errOut, "gramine-sgx counter") {
		t.Fatalf("gramine-manifest -o: %d %q", code, errOut)
	}
	if code, _, errOut = runCLI(t, "enclave", "gramine-manifest", img, "--enclave-size", "300M"); code != exitFailure || !strings.Contains(errOut, "power of two") {
		t.Fatalf("bad size: %d %q", code, errOut)
	}

	// A changed image is a rejection.
	data, _ := os.ReadFile(img)
	data[len(data)/3] ^= 1
	os.WriteFile(img, data, 0o755)
	code, _, errOut = runCLI(t, "enclave", "measure", img)
	if code != exitRejected || !strings.Contains(errOut, "does not match its metadata") {
		t.Fatalf("measure of a changed image: %d %q", code, errOut)
	}
	if code, _, _ = runCLI(t, "enclave", "measure", img, "--write"); code != exitOK {
		t.Fatalf("measure --write: %d", code)
	}
	if code, _, _ = runCLI(t, "enclave", "build", "./x"); code != exitUsage {
		t.Fatalf("build without -o: %d", code)
	}
}

func TestParseEnclaveSpec(t *testing.T) {
	c, err := parseEnclaveSpec("name=counter,image=/i/c.img,addresses=counter.inc,counter.get,instances=2,workers=4,memory=32M,state=/s,local=true,backend=gramine,transport=pipe")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "counter" || c.Image != "/i/c.img" || len(c.Addresses) != 2 || c.Addresses[1] != "counter.get" ||
		c.Instances != 2 || c.Workers != 4 || c.MemoryLimit != 32<<20 || c.StateDir != "/s" || !c.Local || c.Backend != "gramine" || c.Transport != "pipe" {
		t.Fatalf("%+v", c)
	}
	for _, bad := range []string{"image=x", "name=x", "name=x,image=y,colour=red", "name=x,image=y,stray", "name=x,image=y,instances=many"} {
		if _, err := parseEnclaveSpec(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestLoadEnclaveConfigs(t *testing.T) {
	dir := t.TempDir()
	y := filepath.Join(dir, "node.yaml")
	os.WriteFile(y, []byte("enclaves:\n  - name: counter\n    image: counter.img\n    addresses: [counter.*]\n    instances: 2\n    restart_backoff: 250ms\n"), 0o644)
	cs, err := loadEnclaveConfigs(y)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].Image != filepath.Join(dir, "counter.img") || cs[0].Instances != 2 || cs[0].RestartBackoff != 250*time.Millisecond {
		t.Fatalf("%+v", cs)
	}
	j := filepath.Join(dir, "node.json")
	os.WriteFile(j, []byte(`[{"name": "a", "image": "/abs/a.img", "backend": "process"}]`), 0o644)
	if cs, err = loadEnclaveConfigs(j); err != nil || len(cs) != 1 || cs[0].Image != "/abs/a.img" {
		t.Fatalf("%+v %v", cs, err)
	}
	// The example's configuration file parses.
	cs, err = loadEnclaveConfigs("../../examples/counter/node.yaml")
	if err != nil || len(cs) != 1 || cs[0].Name != "counter" || cs[0].Addresses[0] != "counter.*" || !strings.HasSuffix(cs[0].StateDir, "counter.state") {
		t.Fatalf("example config: %+v %v", cs, err)
	}
	os.WriteFile(y, []byte("enclaves:\n  - name: x\n    image: y\n    colour: red\n"), 0o644)
	if _, err := loadEnclaveConfigs(y); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("unknown field: %v", err)
	}
}

// TestNodeHostsEnclave runs 'cloister node --enclave ...' and calls the
// enclave with 'cloister request', as a user would.
func TestNodeHostsEnclave(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(t.TempDir(), "config"))
	dir := t.TempDir()
	img := buildCounterImage(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		env := &cliEnv{stdin: strings.NewReader(""), stdout: &syncBuffer{}, stderr: &stderr}
		done <- run(ctx, env, []string{"node", "--nats-listen", "127.0.0.1:-1",
			"--enclave", "name=counter,image=" + img + ",addresses=counter.inc,counter.get,state=" + filepath.Join(dir, "state")})
	}()
	url := waitNodeReady(t, "node", &stderr, done, time.Minute)
	if !strings.Contains(stderr.String(), "enclave counter/0: pid") {
		t.Fatalf("no enclave line:\n%s", stderr.String())
	}
	for i, want := range []string{"1", "2"} {
		code, out, errOut := runCLI(t, "request", "--servers", url, "counter.inc", "alice")
		if code != exitOK || strings.TrimSpace(out) != want {
			t.Fatalf("request %d: %d %q %q", i, code, out, errOut)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("node exit %d:\n%s", code, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("node did not stop")
	}
	if !strings.Contains(stderr.String(), "enclave: stopped") {
		t.Fatalf("enclave not stopped:\n%s", stderr.String())
	}
}
