package e2e

import (
	"testing"

	"github.com/cloister-dev/cloister/internal/leancheck"
)

// TestImagesAreLean checks the lean-image rule (internal/leancheck) for the
// test service image and the packages the secured-address layer adds to
// every image: no bus, cluster,
// node, host side, NATS or network stack, and no crypto/x509 (attest's
// X.509 parts) in the trusted runtime.
func TestImagesAreLean(t *testing.T) {
	leancheck.Check(t, "./internal/svcimage", "github.com/cloister-dev/cloister/trusted",
		"github.com/cloister-dev/cloister/provision", "github.com/cloister-dev/cloister/secure")
	deps, err := leancheck.Deps("github.com/cloister-dev/cloister/trusted")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps {
		if d == "crypto/x509" {
			t.Error("the trusted runtime depends on crypto/x509")
		}
	}
}
