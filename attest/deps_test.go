package attest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsOnlyStandardLibrary keeps attest fit for enclave images: no
// module outside the standard library and no net/http.
func TestImportsOnlyStandardLibrary(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}|{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		nonStd, path, _ := strings.Cut(line, "|")
		if nonStd != "" && nonStd != "github.com/cloister-dev/cloister/attest" {
			t.Errorf("attest depends on %s, outside the standard library", nonStd)
		}
		if path == "net/http" {
			t.Error("attest depends on net/http")
		}
	}
}
