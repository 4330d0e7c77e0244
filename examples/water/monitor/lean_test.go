package monitor

import (
	"testing"

	"github.com/cloister-dev/cloister/internal/leancheck"
)

// TestLean: the analytics enclave image and this package, compiled into
// it, stay lean — no bus, no NATS, no network stack (DESIGN.md §3).
func TestLean(t *testing.T) {
	leancheck.Check(t, "github.com/cloister-dev/cloister/examples/water/analytics", "github.com/cloister-dev/cloister/examples/water/monitor")
}
