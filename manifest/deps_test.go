package manifest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps manifest fit for the coordinator's enclave image:
// besides the standard library only attest, secure and the YAML parser; no
// bus, cluster, node, enclave, NATS or net/http. (crypto/x509, which attest
// needs too, brings in package net for certificate fields; nothing here
// opens a connection.)
func TestDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}|{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := map[string]bool{
		"github.com/cloister-dev/cloister/manifest": true,
		"github.com/cloister-dev/cloister/attest":   true,
		"github.com/cloister-dev/cloister/secure":   true,
		"go.yaml.in/yaml/v3":                        true,
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		nonStd, path, _ := strings.Cut(line, "|")
		if nonStd != "" && !allowed[nonStd] {
			t.Errorf("manifest depends on %s", nonStd)
		}
		if path == "net/http" || strings.HasPrefix(path, "net/http/") {
			t.Errorf("manifest depends on %s", path)
		}
	}
}
