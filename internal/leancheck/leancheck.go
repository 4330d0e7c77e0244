// Package leancheck holds the budget of the trusted side in one table:
// for every enclave image, and every package the images are built from,
// what it may link and how many code lines of our own (non-blank,
// non-comment lines of this module's non-test Go files, as
// enclave.MeasureFootprint counts them) it may hold. One test checks the
// table against go list -deps.
//
// What an image may link is a closed list of this module's packages: no
// bus, cluster, node, enclave or tracing package, so no NATS, no
// observability library and no net/http, and, unless a row says Net,
// not even package net (which crypto/x509 brings in for the images that
// verify attestation evidence). Modules other than this one are refused
// unless a row names them.
//
// The minimal image — a handler with protected storage and no secured
// addresses, examples/counter/enclave — is held to MinimalBudget: the
// secured-address layer (trusted/secured) and the shared-memory boundary
// (boundary/shm) are opt-in parts of the SDK it does not link.
package leancheck

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cloister-dev/cloister/enclave"
)

// Module is this module's path.
const Module = enclave.SDKModule

// MinimalBudget is the most code lines of our own the minimal image may
// hold: the trusted core every image links (wire, boundary, seal,
// trusted), Gramine's seal keys and in-enclave evidence included, and the
// image's own handlers.
const MinimalBudget = 3000

// Rule is one row of the table.
type Rule struct {
	// Package is the image's (or library's) import path, relative to
	// Module.
	Package string
	// Links are the packages of this module it may link besides itself
	// (relative to Module).
	Links []string
	// Modules are the other modules it may link.
	Modules []string
	// Net allows package net and what it imports (crypto/x509 needs it
	// for certificate fields). net/http is never allowed.
	Net bool
	// Budget is the most code lines of our own it may hold.
	Budget int
}

// The SDK's parts, as the rows below name them.
var (
	core    = []string{"wire", "boundary", "seal", "trusted"}
	secured = []string{"secure", "provision", "trusted/fresh", "trusted/secured"}
	fast    = []string{"boundary/shm"}
)

func list(parts ...[]string) []string { return slices.Concat(parts...) }

// Table is the budget: every enclave image of the module, then the
// packages of the trusted side (and the manifest's YAML front-end, which
// must stay out of them).
var Table = []Rule{
	{Package: "examples/counter/enclave", Links: list(core, []string{"examples/counter/count"}), Budget: MinimalBudget},
	{Package: "examples/counter/secured", Links: list(core, secured, []string{"examples/counter/count"}), Budget: 6950},
	{Package: "enclave/internal/testimage", Links: list(core, fast, []string{"internal/testapp"}), Budget: 4000},
	// Freshness (trusted/fresh and its use in trusted/secured) and the
	// record of handled client handshakes added about 740 lines to every
	// image with the secured layer.
	{Package: "examples/water/analytics", Links: list(core, fast, secured, []string{"examples/water/monitor"}), Budget: 8400},
	{Package: "e2e/internal/svcimage", Links: list(core, fast, secured), Budget: 7750},
	{Package: "coordinator/internal/joinimage", Links: list(core, secured), Budget: 7000},
	// The replica group (quorum memory, admission, recovery) took it from
	// 9,663 to about 11,400.
	{Package: "coordinator/image", Links: list(core, []string{"secure", "provision", "attest", "manifest", "freshness", "coordinator"}), Net: true, Budget: 11700},

	{Package: "wire", Budget: 130},
	{Package: "boundary", Links: []string{"wire"}, Budget: 1480},
	{Package: "boundary/shm", Links: []string{"wire", "boundary"}, Budget: 2220},
	{Package: "seal", Budget: 400},
	{Package: "trusted", Links: []string{"wire", "boundary", "seal"}, Budget: 3100},
	{Package: "secure", Links: []string{"wire"}, Budget: 2130},
	{Package: "provision", Budget: 420}, // the freshness messages: 241 → 382
	{Package: "freshness", Budget: 260},
	{Package: "trusted/fresh", Links: core, Budget: 3400},
	{Package: "trusted/secured", Links: list(core, []string{"secure", "provision", "trusted/fresh"}), Budget: 6900},
	{Package: "attest", Net: true, Budget: 2300},
	{Package: "manifest", Links: []string{"wire", "attest", "secure"}, Net: true, Budget: 3650},
	{Package: "manifest/manifestyaml", Links: []string{"wire", "attest", "secure", "manifest"}, Modules: []string{"go.yaml.in/yaml/v3"}, Net: true, Budget: 3700},
}

// Check returns what f, the footprint of r.Package, breaks of r: every
// package it may not link, and its code lines beyond the budget.
func Check(r Rule, f *enclave.Footprint) []error {
	var errs []error
	self := Module + "/" + r.Package
	for _, p := range f.Packages {
		switch {
		case p.ImportPath == self:
		case p.Own:
			if !slices.Contains(r.Links, strings.TrimPrefix(p.ImportPath, Module+"/")) {
				errs = append(errs, fmt.Errorf("%s links %s, which is not in its row (links: %v)", r.Package, p.ImportPath, r.Links))
			}
		case p.Module != "":
			if !slices.Contains(r.Modules, p.Module) {
				errs = append(errs, fmt.Errorf("%s links %s of module %s, which is not in its row (modules: %v)", r.Package, p.ImportPath, p.Module, r.Modules))
			}
		case p.ImportPath == "net/http" || strings.HasPrefix(p.ImportPath, "net/http/"):
			errs = append(errs, fmt.Errorf("%s links %s: no image may", r.Package, p.ImportPath))
		case !r.Net && IsNet(p.ImportPath):
			errs = append(errs, fmt.Errorf("%s links %s: its row allows no network stack", r.Package, p.ImportPath))
		}
	}
	if got := f.Figures().OwnCodeLines; got > r.Budget {
		errs = append(errs, fmt.Errorf("%s holds %d code lines of our own, over its budget of %d", r.Package, got, r.Budget))
	}
	return errs
}

// IsHostOnly reports whether p belongs to the host side alone, so that no
// enclave image — ours, in the table, or a user's, checked by cloister
// enclave build — may link it: this module's bus, cluster, node, enclave
// and tracing packages, NATS, OpenTelemetry, the Prometheus client, and
// net/http.
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

// IsNet reports whether the standard-library package p belongs to the
// network stack: net, its sub-packages, the vendored x/net, and
// crypto/x509 (which imports net).
func IsNet(p string) bool {
	return p == "net" || strings.HasPrefix(p, "net/") || strings.HasPrefix(p, "vendor/golang.org/x/net/") || p == "crypto/x509"
}
