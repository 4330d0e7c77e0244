package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestManifestCheckAndHash(t *testing.T) {
	water := filepath.Join("..", "..", "manifest", "testdata", "water.yaml")
	want, err := os.ReadFile(filepath.Join("..", "..", "manifest", "testdata", "water.hash"))
	if err != nil {
		t.Fatal(err)
	}
	hash := strings.TrimSpace(string(want))

	code, out, errOut := runCLI(t, "manifest", "check", water)
	if code != 0 {
		t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
	for _, w := range []string{"OK ", "hash       " + hash, "3 trusted (analytics, archive, coordinator)", "5 (2 secured)", "WARNING: allow_simulation"} {
		if !strings.Contains(out, w) {
			t.Errorf("check output lacks %q:\n%s", w, out)
		}
	}

	code, out, _ = runCLI(t, "manifest", "hash", water)
	if code != 0 || strings.TrimSpace(out) != hash {
		t.Fatalf("hash: exit %d, %q", code, out)
	}

	reordered := filepath.Join(t.TempDir(), "water.yaml")
	src, _ := os.ReadFile(water)
	// Comments and blank lines do not matter.
	var kept []string
	for _, l := range strings.Split(string(src), "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			l = strings.TrimRight(l[:i], " ")
		}
		if strings.TrimSpace(l) != "" {
			kept = append(kept, l)
		}
	}
	if err := os.WriteFile(reordered, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, _ = runCLI(t, "manifest", "hash", reordered); code != 0 || strings.TrimSpace(out) != hash {
		t.Fatalf("without comments: exit %d, %q", code, out)
	}
}

func TestManifestCheckInvalid(t *testing.T) {
	bad := filepath.Join("..", "..", "manifest", "testdata", "invalid.yaml")
	code, out, errOut := runCLI(t, "manifest", "check", bad)
	if code != exitRejected {
		t.Fatalf("exit %d, want %d\n%s%s", code, exitRejected, out, errOut)
	}
	if strings.Contains(out, "OK") {
		t.Fatal("printed OK")
	}
	for _, w := range []string{
		"services.analytics.identities[0].mrenclave (line 6): want 64 hex digits",
		`addresses."water.readings".consume[1] (line 20): service "ingest" has no identities`,
		"owner.public_key (line 26)",
		"invalid manifest (13 errors)",
	} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
	if code, _, _ := runCLI(t, "manifest", "hash", bad); code != exitRejected {
		t.Fatalf("hash of an invalid manifest: exit %d", code)
	}
	if code, _, _ := runCLI(t, "manifest", "check"); code != exitUsage {
		t.Fatalf("no file: exit %d", code)
	}
	if code, _, _ := runCLI(t, "manifest", "check", filepath.Join(t.TempDir(), "absent.yaml")); code != exitFailure {
		t.Fatalf("absent file: exit %d", code)
	}
}

func TestManifestSignAndVerifyUpdate(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	keyFile := filepath.Join(dir, "owner.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	write := func(name string, version int, extra string) string {
		p := filepath.Join(dir, name)
		src := fmt.Sprintf("version: %d\nowner: {public_key: %s}\nservices: {a: {}%s}\n", version, base64.StdEncoding.EncodeToString(pubDER), extra)
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v1 := write("v1.yaml", 1, "")
	v2 := write("v2.yaml", 2, ", b: {}")
	v2b := write("v2b.yaml", 2, ", c: {}")

	code, sig, errOut := runCLI(t, "manifest", "sign", "--key", keyFile, v1, v2)
	if code != 0 {
		t.Fatalf("sign: exit %d: %s", code, errOut)
	}
	if code, out, errOut := runCLI(t, "manifest", "verify-update", v1, v2, strings.TrimSpace(sig)); code != 0 || !strings.Contains(out, "OK version 1 -> 2") {
		t.Fatalf("verify-update: exit %d: %s%s", code, out, errOut)
	}
	sigFile := filepath.Join(dir, "sig")
	os.WriteFile(sigFile, []byte(sig), 0o600)
	if code, _, errOut := runCLI(t, "manifest", "verify-update", v1, v2, sigFile); code != 0 {
		t.Fatalf("verify-update with a file: exit %d: %s", code, errOut)
	}
	// The signature does not cover another NEXT.
	if code, _, errOut := runCLI(t, "manifest", "verify-update", v1, v2b, sigFile); code != exitRejected || !strings.Contains(errOut, "bad update signature") {
		t.Fatalf("other NEXT: exit %d: %s", code, errOut)
	}
	// Signing a downgrade is refused.
	if code, _, errOut := runCLI(t, "manifest", "sign", "--key", keyFile, v2, v1); code != exitRejected || !strings.Contains(errOut, "does not increase the version") {
		t.Fatalf("downgrade: exit %d: %s", code, errOut)
	}
	if code, _, _ := runCLI(t, "manifest", "sign", v1, v2); code != exitUsage {
		t.Fatalf("no --key: exit %d", code)
	}
}
