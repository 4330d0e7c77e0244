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
