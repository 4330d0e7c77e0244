package monitor

import (
	"testing"

	"github.com/cloister-dev/cloister/internal/leancheck"
)

// TestLean: the analytics enclave image and this package, compiled into
// it, stay lean — no bus, no NATS, no network stack — so that the code an
// enclave measurement vouches for is only the handlers, the trusted SDK and
// crypto (see internal/leancheck).
func TestLean(t *testing.T) {
	leancheck.Check(t, "github.com/cloister-dev/cloister/examples/water/analytics", "github.com/cloister-dev/cloister/examples/water/monitor")
}
