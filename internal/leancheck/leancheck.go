// Package leancheck asserts the rule that keeps the trusted side lean:
// packages compiled into enclave images — trusted, boundary, seal, and every
// enclave image — must not depend on the event bus, the cluster transport,
// the node, the host side, NATS, or the network stack. An image then holds
// its handlers, the trusted SDK and crypto, so the code its measurement
// vouches for stays small. (Images that verify DCAP evidence, such as the
// coordinator, need package net through crypto/x509; enclave's lean test
// holds them to no net/http instead of using this package.)
//
// Use it from a test:
//
//	func TestLean(t *testing.T) { leancheck.Check(t, "./examples/counter/enclave") }
package leancheck

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// Module is the module path the forbidden packages live under.
const Module = "github.com/cloister-dev/cloister"

// Forbidden returns the entries of deps (import paths, as printed by
// go list -deps) that an enclave image must not contain.
func Forbidden(deps []string) []string {
	var bad []string
	for _, d := range deps {
		if IsForbidden(d) {
			bad = append(bad, d)
		}
	}
	return bad
}

// IsForbidden reports whether an enclave image must not depend on the
// package with import path p: this module's bus, cluster, node, enclave
// and tracing packages (and their sub-packages), anything from
// github.com/nats-io, OpenTelemetry and the Prometheus client (host-side
// observability), and the network stack (net, net/...,
// vendor/golang.org/x/net/...).
func IsForbidden(p string) bool {
	if p == "net" || strings.HasPrefix(p, "net/") || strings.HasPrefix(p, "vendor/golang.org/x/net/") ||
		IsHostOnly(p) {
		return true
	}
	return false
}

// IsHostOnly reports whether p belongs to the host side alone, so that no
// package of the trusted side (trusted, boundary, secure, seal, provision,
// attest) may depend on it, not even the images that carry package net
// for crypto/x509: this module's bus, cluster, node, enclave and tracing
// packages, NATS, OpenTelemetry, the Prometheus client, and net/http.
func IsHostOnly(p string) bool {
	if p == "net/http" || strings.HasPrefix(p, "net/http/") || strings.HasPrefix(p, "golang.org/x/net/") ||
		strings.HasPrefix(p, "github.com/nats-io/") || strings.HasPrefix(p, "go.opentelemetry.io/") ||
		strings.HasPrefix(p, "github.com/prometheus/") {
		return true
	}
	for _, room := range []string{"bus", "cluster", "node", "enclave", "tracing"} {
		q := Module + "/" + room
		if p == q || strings.HasPrefix(p, q+"/") {
			return true
		}
	}
	return false
}

// Deps runs go list -deps on pkgs (from the current directory) and returns
// the import paths.
func Deps(pkgs ...string) ([]string, error) {
	out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, &listError{err: err, stderr: string(ee.Stderr)}
		}
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

type listError struct {
	err    error
	stderr string
}

// Error includes go list's stderr.
func (e *listError) Error() string { return "go list -deps: " + e.err.Error() + ": " + e.stderr }

// Unwrap returns the exec error.
func (e *listError) Unwrap() error { return e.err }

// Check fails t for every forbidden dependency of pkgs. It is skipped in
// -short mode (it runs the go command).
func Check(t testing.TB, pkgs ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("leancheck runs go list")
	}
	deps, err := Deps(pkgs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(deps) < len(pkgs) {
		t.Fatalf("implausible dependency list for %v: %q", pkgs, deps)
	}
	for _, d := range Forbidden(deps) {
		t.Errorf("%v depends on %s, which an enclave image must not contain", pkgs, d)
	}
}

// Standard fails t if pkg (as go list names it, e.g. ".") depends on a
// package outside the standard library other than pkg itself and the
// import paths in allowed, or on net/http. It is for packages that enclave
// images compile in but that may use crypto/x509 (which brings in package
// net), so it does not forbid net itself; use Check for that. It is skipped
// in -short mode (it runs the go command).
func Standard(t testing.TB, pkg string, allowed ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("leancheck runs go list")
	}
	bad, err := Outside(pkg, allowed...)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Errorf("%s depends on %s (allowed besides the standard library: %v; never net/http)", pkg, b, allowed)
	}
}

// Outside returns what Standard objects to: the dependencies of pkg outside
// the standard library (other than pkg itself and allowed), and net/http.
func Outside(pkg string, allowed ...string) ([]string, error) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}|{{.ImportPath}}", pkg).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, &listError{err: err, stderr: string(ee.Stderr)}
		}
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	self, _, _ := strings.Cut(lines[len(lines)-1], "|") // go list -deps prints pkg last
	var bad []string
	for _, line := range lines {
		nonStd, path, _ := strings.Cut(line, "|")
		switch {
		case nonStd != "" && nonStd != self && !slices.Contains(allowed, nonStd):
			bad = append(bad, nonStd)
		case path == "net/http" || strings.HasPrefix(path, "net/http/"):
			bad = append(bad, path)
		}
	}
	return bad, nil
}
