package trusted

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLeanImports keeps the trusted side lean (DESIGN.md §3): the packages
// compiled into enclave images must not pull in the event bus, the node, the
// host side, NATS, or any networking.
func TestLeanImports(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const mod = "github.com/cloister-dev/cloister/"
	out, err := exec.Command("go", "list", "-deps", mod+"trusted", mod+"boundary", mod+"seal").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("implausible dependency list: %q", deps)
	}
	for _, d := range deps {
		bad := d == "net" || strings.HasPrefix(d, "net/") ||
			strings.HasPrefix(d, "github.com/nats-io/") ||
			strings.HasPrefix(d, "vendor/golang.org/x/net/")
		for _, p := range []string{"bus", "cluster", "node", "enclave"} {
			if d == mod+p || strings.HasPrefix(d, mod+p+"/") {
				bad = true
			}
		}
		if bad {
			t.Errorf("trusted side depends on %s", d)
		}
	}
}
