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
