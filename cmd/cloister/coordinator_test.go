package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/coordinator"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
)

// TestCoordinatorVerbs runs 'cloister coordinator' in process (the
// coordinator image is built into the user cache on first use and runs as
// a child process), hosting the join test image as analytics; then status,
// a secure request, a refused secure request (wrong manifest hash), and
// rotate.
func TestCoordinatorVerbs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images and starts processes")
	}
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	join := filepath.Join(dir, "join.img")
	if code, out, errOut := runCLI(t, "enclave", "build", "-C", "../..", "./coordinator/internal/joinimage", "-o", join); code != exitOK {
		t.Fatalf("build: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ := runCLI(t, "enclave", "measure", join)
	measurement := regexp.MustCompile(`[0-9a-f]{64}`).FindString(out)
	if code != exitOK || measurement == "" {
		t.Fatalf("measure: %d %q", code, out)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	keyFile := filepath.Join(dir, "owner.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	// A client credential, made by the CLI.
	meterKey := filepath.Join(dir, "meter-7.pem")
	code, clientEntry, errOut := runCLI(t, "manifest", "client", "meter-7", "--key", meterKey)
	if code != exitOK || !strings.HasPrefix(clientEntry, "clients:\n  meter-7: {public_key: ") {
		t.Fatalf("manifest client: %d %q %q", code, clientEntry, errOut)
	}
	if code, _, errOut = runCLI(t, "manifest", "client", "meter-7", "--key", meterKey); code != exitFailure || !strings.Contains(errOut, "exists") {
		t.Fatalf("manifest client over an existing key: %d %q", code, errOut)
	}
	mf := filepath.Join(dir, "app.yaml")
	y := fmt.Sprintf(`version: 1
owner:
  public_key: %s
policy:
  allow_simulation: true
services:
  analytics:
    identities:
      - mrenclave: "%s"
addresses:
  water.readings:
    secured: true
    consume: [analytics]
  # The test image's own addresses: it opens the client channel itself.
  analytics.join:
    consume: [analytics]
  analytics.echo:
    clients: true
    consume: [analytics]
%s`, base64.StdEncoding.EncodeToString(pub), measurement, clientEntry)
	if err := os.WriteFile(mf, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := manifestyaml.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		env := &cliEnv{stdin: strings.NewReader(""), stdout: &syncBuffer{}, stderr: &stderr}
		done <- run(ctx, env, []string{"coordinator", "--nats-listen", "127.0.0.1:-1", "--manifest", mf, "--source", "../..",
			"--state-dir", filepath.Join(dir, "state"),
			"--enclave", "name=analytics,image=" + join + ",service=analytics,state=" + filepath.Join(dir, "join-state")})
	}()
	// Registered after t.TempDir, so it runs before the directory goes:
	// even a failed test waits for the node to stop writing there.
	t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(time.Minute):
		}
	})
	// The coordinator's own "ready" comes before the other enclaves start;
	// the node's comes once they all serve.
	url := waitNodeReady(t, "coordinator", &stderr, done, 3*time.Minute)
	if !strings.Contains(stderr.String(), "manifest set") {
		t.Fatalf("the manifest was not set:\n%s", stderr.String())
	}

	code, out, errOut = runCLI(t, "coordinator", "status", "--servers", url)
	if code != exitOK || !strings.Contains(out, m.HashHex()+" (version 1)") || !strings.Contains(out, "key epoch:    1") {
		t.Fatalf("status: %d %q %q", code, out, errOut)
	}
	if !strings.Contains(out, "verified:     NO") {
		t.Fatalf("status without verification does not say so:\n%s", out)
	}
	code, out, errOut = runCLI(t, "coordinator", "status", "--json", "--servers", url)
	if code != exitOK || !strings.Contains(out, `"manifest_hash": "`+m.HashHex()) || !strings.Contains(out, `"verified": false`) {
		t.Fatalf("status --json: %d %q %q", code, out, errOut)
	}
	// The coordinator verified as the client SDK verifies it; the default
	// identity is the coordinator image this cloister built above.
	verify := []string{"coordinator", "verify", "-s", url, "--source", "../.."}
	code, out, errOut = runCLI(t, append(verify, "--manifest", mf, "--allow-simulation")...)
	if code != exitOK || !strings.Contains(out, "coordinator:  VERIFIED") || !strings.Contains(out, m.HashHex()+" (version 1") ||
		!strings.Contains(out, "WARNING: simulated evidence") {
		t.Fatalf("verify: %d %q %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, append(verify, "--manifest-hash", m.HashHex(), "--allow-simulation", "--json")...)
	if code != exitOK || !strings.Contains(out, `"verified": true`) || !strings.Contains(out, `"evidence_type": "simulated"`) {
		t.Fatalf("verify --json: %d %q %q", code, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--manifest", mf}, exitRejected, "coordinator not trusted: evidence"}, // simulation not asked for
		{[]string{"--manifest-hash", strings.Repeat("ab", 32), "--allow-simulation"}, exitRejected, "coordinator not trusted: manifest hash"},
		{[]string{"--manifest", mf, "--allow-simulation", "--coordinator-measurement", measurement}, exitRejected, "coordinator not trusted: policy"},
		{[]string{"--allow-simulation"}, exitUsage, "give --manifest-hash HASH or --manifest FILE"},
		{[]string{"--manifest", mf, "--manifest-hash", m.HashHex()}, exitUsage, "not both"},
		{[]string{"--manifest-hash", "12", "--allow-simulation"}, exitUsage, "--manifest-hash"},
	} {
		code, out, errOut := runCLI(t, append(verify, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) || strings.Contains(out, "VERIFIED") {
			t.Errorf("verify %q: exit %d (want %d)\n%s\n%s", tc.args, code, tc.code, out, errOut)
		}
	}
	code, out, errOut = runCLI(t, "coordinator", "status", "-s", url, "--source", "../..", "--manifest-hash", m.HashHex(), "--allow-simulation")
	if code != exitOK || !strings.Contains(out, "verified:     yes") {
		t.Fatalf("status with verification: %d %q %q", code, out, errOut)
	}
	if code, _, errOut = runCLI(t, "coordinator", "status", "-s", url, "--source", "../..", "--manifest-hash", m.HashHex()); code != exitRejected {
		t.Fatalf("status verified without --allow-simulation: %d %q", code, errOut)
	}
	// The enclave joins (the test image joins when asked).
	if code, out, errOut = runCLI(t, "request", "--servers", url, "analytics.join", ""); code != exitOK || !strings.Contains(out, `"service":"analytics"`) {
		t.Fatalf("join: %d %q %q", code, out, errOut)
	}
	secure := []string{"request", "--servers", url, "--secure", "--service", "analytics", "--allow-simulation",
		"--client", "meter-7", "--client-key", meterKey}
	code, out, errOut = runCLI(t, append(secure, "--manifest-hash", m.HashHex(), "analytics.echo", "meter 7: 12.5 m3")...)
	if code != exitOK || strings.TrimSpace(out) != "echo: meter 7: 12.5 m3" {
		t.Fatalf("secure request: %d %q %q", code, out, errOut)
	}
	wrong := []byte(m.HashHex())
	// Another hex digit (flipping a bit turned an 'f' into a 'g', no hex).
	if wrong[0] == '0' {
		wrong[0] = '1'
	} else {
		wrong[0] = '0'
	}
	code, _, errOut = runCLI(t, append(secure, "--manifest-hash", string(wrong), "analytics.echo", "x")...)
	if code != exitRejected || !strings.Contains(errOut, "manifest") {
		t.Fatalf("wrong manifest hash: exit %d %q", code, errOut)
	}
	// A minimum version the coordinator does not have yet: refused.
	code, _, errOut = runCLI(t, append(secure, "--manifest-hash", m.HashHex(), "--min-manifest-version", "2", "analytics.echo", "x")...)
	if code != exitRejected || !strings.Contains(errOut, "version 1, below the minimum 2") {
		t.Fatalf("secure request with a minimum version: exit %d %q", code, errOut)
	}
	// A signed update to version 2; the same file again is refused.
	mf2 := filepath.Join(dir, "app2.yaml")
	y2 := strings.Replace(y, "version: 1", "version: 2", 1)
	if err := os.WriteFile(mf2, []byte(y2), 0o644); err != nil {
		t.Fatal(err)
	}
	m2, err := manifestyaml.Parse([]byte(y2))
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCLI(t, "coordinator", "update", "--servers", url, "--owner-key", keyFile, mf2)
	if code != exitOK || !strings.Contains(out, m2.HashHex()+" (version 2)") {
		t.Fatalf("update: %d %q %q", code, out, errOut)
	}
	if code, _, errOut = runCLI(t, "coordinator", "update", "--servers", url, "--owner-key", keyFile, mf2); code != exitFailure || !strings.Contains(errOut, "not higher") {
		t.Fatalf("repeated update: %d %q", code, errOut)
	}
	// A client that pinned version 1 follows the signed update.
	code, out, errOut = runCLI(t, append(verify, "--manifest", mf, "--allow-simulation", "--min-manifest-version", "2")...)
	if code != exitOK || !strings.Contains(out, m2.HashHex()+" (version 2; followed 1 signed update(s) from the pinned "+m.HashHex()) {
		t.Fatalf("verify after an update: %d %q %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, append(verify, "--manifest-hash", m.HashHex(), "--allow-simulation", "--json")...)
	if code != exitOK || !strings.Contains(out, `"followed_updates": 1`) || !strings.Contains(out, `"manifest_version": 2`) {
		t.Fatalf("verify --json after an update: %d %q %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, append(verify, "--manifest", mf, "--allow-simulation", "--min-manifest-version", "3")...)
	if code != exitRejected || !strings.Contains(errOut, "below the minimum 3") || strings.Contains(out, "VERIFIED") {
		t.Fatalf("verify with a minimum above the current version: %d %q %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "coordinator", "rotate", "--servers", url, "--owner-key", keyFile, "--grace", "1h")
	if code != exitOK || !strings.Contains(out, "key epoch:    2 (epoch 1 valid until") {
		t.Fatalf("rotate: %d %q %q", code, out, errOut)
	}

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("coordinator exit %d:\n%s", code, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("coordinator did not stop")
	}
}

// The coordinator's configuration trusts this machine's simulation root
// and carries only public keys, even when given a machine's private
// simulation key file.
func TestCoordinatorConfig(t *testing.T) {
	root, err := attest.NewEphemeralSimulationRoot()
	if err != nil {
		t.Fatal(err)
	}
	own, err := coordinator.EncodeSimPlatformKey(root.PlatformPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	b, err := coordinatorConfig("", root, nil)
	var c coordinator.Config
	if err := json.Unmarshal(b, &c); err != nil || len(c.SimPlatformKeys) != 1 || c.SimPlatformKeys[0] != own {
		t.Fatalf("this machine's key only: %s, %v", b, err)
	}
	keyFile := filepath.Join(t.TempDir(), "sim-platform-key.pem")
	if _, err := attest.LoadOrCreateSimPlatformKey(keyFile); err != nil {
		t.Fatal(err)
	}
	b, err = coordinatorConfig("", root, []string{keyFile})
	if err != nil || !strings.Contains(string(b), "PUBLIC KEY") || strings.Contains(string(b), "PRIVATE") {
		t.Fatalf("configuration %s, %v", b, err)
	}
	if err := json.Unmarshal(b, &c); err != nil || len(c.SimPlatformKeys) != 2 {
		t.Fatalf("two keys: %s, %v", b, err)
	}
	if _, err := coordinatorConfig(keyFile, root, nil); err == nil {
		t.Fatal("a key file accepted as collateral")
	}
	bundle := "../../../shared/testdata/sgx/phala_sgx_quote_collateral.json"
	if _, err := os.Stat(bundle); err != nil {
		t.Skip("shared test data absent")
	}
	if b, err = coordinatorConfig(bundle, root, nil); err != nil || !strings.Contains(string(b), `"collateral":{`) {
		t.Fatalf("collateral configuration: %.100s, %v", b, err)
	}
}
