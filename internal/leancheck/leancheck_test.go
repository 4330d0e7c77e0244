package leancheck

import (
	"slices"
	"testing"
)

func TestForbidden(t *testing.T) {
	deps := []string{"fmt", "net", "net/http", "netip", "github.com/nats-io/nats.go",
		Module + "/bus", Module + "/bus/bustest", Module + "/business", Module + "/trusted",
		Module + "/enclave/inproc", "vendor/golang.org/x/net/dns/dnsmessage"}
	got := Forbidden(deps)
	want := []string{"net", "net/http", "github.com/nats-io/nats.go", Module + "/bus", Module + "/bus/bustest",
		Module + "/enclave/inproc", "vendor/golang.org/x/net/dns/dnsmessage"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

// The check must catch a real violation: net/http is forbidden.
func TestDepsOfNetHTTP(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	deps, err := Deps("net/http")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(Forbidden(deps), "net/http") {
		t.Fatal("net/http not flagged")
	}
}

// Outside must catch real violations: manifest uses modules beyond the
// standard library, and net/http is never allowed.
func TestOutside(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	bad, err := Outside(Module+"/manifest", "go.yaml.in/yaml/v3")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(bad, []string{Module + "/attest"}) {
		t.Fatalf("Outside(manifest) = %q", bad)
	}
	if bad, err := Outside("net/http"); err != nil || !slices.Contains(bad, "net/http") {
		t.Fatalf("Outside(net/http) = %q, %v", bad, err)
	}
	if bad, err := Outside("."); err != nil || len(bad) != 0 {
		t.Fatalf("Outside(leancheck) = %q, %v", bad, err)
	}
}

// TrustedSide are the packages of the trusted side: none may depend on a
// host-only package (IsHostOnly), observability libraries included.
var TrustedSide = []string{"trusted", "boundary", "secure", "seal", "provision", "attest"}

// TestTrustedSideHasNoHostOnlyDeps: the trusted side passes trace headers
// through as plain headers and counts rejections as plain numbers; it
// links no tracing or metrics library, no bus, no NATS, no net/http.
func TestTrustedSideHasNoHostOnlyDeps(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	for _, p := range TrustedSide {
		deps, err := Deps(Module + "/" + p)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range deps {
			if IsHostOnly(d) {
				t.Errorf("%s depends on %s, which belongs to the host side", p, d)
			}
		}
	}
	for _, p := range []string{"go.opentelemetry.io/otel/trace", "github.com/prometheus/client_golang/prometheus", Module + "/tracing", "net/http"} {
		if !IsHostOnly(p) || !IsForbidden(p) {
			t.Errorf("%s is not flagged as host-only", p)
		}
	}
}
