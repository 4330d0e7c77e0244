package manifest

import (
	"testing"

	"github.com/cloister-dev/cloister/internal/leancheck"
)

// TestDependencies keeps manifest fit for the coordinator's enclave image:
// besides the standard library only attest, secure and the YAML parser; no
// bus, cluster, node, enclave, NATS or net/http. (crypto/x509, which attest
// needs too, brings in package net for certificate fields; nothing here
// opens a connection.)
func TestDependencies(t *testing.T) {
	leancheck.Standard(t, ".",
		"github.com/cloister-dev/cloister/attest",
		"github.com/cloister-dev/cloister/secure",
		"go.yaml.in/yaml/v3")
}
