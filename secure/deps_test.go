package secure

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsOnlyStandardLibrary keeps secure fit for enclave images: no
// module outside the standard library, and not even the network stack.
func TestImportsOnlyStandardLibrary(t *testing.T) {
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
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		nonStd, path, _ := strings.Cut(line, "|")
		if nonStd != "" && nonStd != "github.com/cloister-dev/cloister/secure" {
			t.Errorf("secure depends on %s, outside the standard library", nonStd)
		}
		if path == "net" || strings.HasPrefix(path, "net/") {
			t.Errorf("secure depends on %s", path)
		}
	}
}
