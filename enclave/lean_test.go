package enclave

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestTrustedSideIsLean checks from go list -deps that the trusted side
// and every enclave image import no bus, cluster, node, enclave, NATS or
// net/http: an image holds its handlers, the trusted SDK and crypto, and
// nothing of the host's transport.
func TestTrustedSideIsLean(t *testing.T) {
	pkgs := []string{
		"github.com/cloister-dev/cloister/trusted",
		"github.com/cloister-dev/cloister/boundary",
		"github.com/cloister-dev/cloister/boundary/shm",
		"github.com/cloister-dev/cloister/seal",
		"github.com/cloister-dev/cloister/attest",
		"github.com/cloister-dev/cloister/enclave/internal/testimage",
		"github.com/cloister-dev/cloister/coordinator/image",
	}
	if _, err := os.Stat("../examples/counter/enclave"); err == nil {
		pkgs = append(pkgs, "github.com/cloister-dev/cloister/examples/counter/enclave")
	}
	forbidden := []string{
		"github.com/cloister-dev/cloister/bus",
		"github.com/cloister-dev/cloister/cluster",
		"github.com/cloister-dev/cloister/node",
		"github.com/cloister-dev/cloister/enclave",
		"github.com/nats-io/",
		"net/http",
	}
	for _, p := range pkgs {
		out, err := exec.Command("go", "list", "-deps", p).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", p, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if dep == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) || (f != "net/http" && strings.HasPrefix(dep, f+"/") && !strings.HasPrefix(dep, "github.com/cloister-dev/cloister/enclave/internal/")) {
					t.Errorf("%s depends on %s", p, dep)
				}
			}
		}
	}
}
