package secure

import (
	"testing"

	"github.com/cloister-dev/cloister/internal/leancheck"
)

// TestImportsOnlyStandardLibrary keeps secure fit for enclave images: no
// module outside the standard library, and not even the network stack.
func TestImportsOnlyStandardLibrary(t *testing.T) {
	leancheck.Standard(t, ".")
	leancheck.Check(t, ".")
}
