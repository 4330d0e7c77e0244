package attest

import (
	"testing"

	"github.com/cloister-dev/cloister/internal/leancheck"
)

// TestImportsOnlyStandardLibrary keeps attest fit for enclave images: no
// module outside the standard library and no net/http. (crypto/x509 brings
// in package net for certificate fields; nothing here opens a connection.)
func TestImportsOnlyStandardLibrary(t *testing.T) {
	leancheck.Standard(t, ".")
}
