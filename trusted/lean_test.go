package trusted

import (
	"testing"

	"github.com/cloister-dev/cloister/internal/leancheck"
)

// TestLeanImports keeps the trusted side lean (see internal/leancheck): the packages
// compiled into enclave images must not pull in the event bus, the node, the
// host side, NATS, or any networking (not even package net).
func TestLeanImports(t *testing.T) {
	const mod = leancheck.Module + "/"
	leancheck.Check(t, mod+"trusted", mod+"boundary", mod+"seal")
}
