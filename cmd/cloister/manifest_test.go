package main

import (
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
