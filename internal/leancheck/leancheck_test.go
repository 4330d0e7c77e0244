package leancheck

import (
	"context"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/enclave"
)

func measure(t *testing.T, pkg string) *enclave.Footprint {
	t.Helper()
	f, err := enclave.MeasureFootprint(context.Background(), "", Module+"/"+pkg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestBudget holds the table: every image and package of the trusted side
// links only what its row allows, within its budget of code lines of our
// own. The figures are logged (go test -v) for the review.
func TestBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	for _, r := range Table {
		f := measure(t, r.Package)
		fig := f.Figures()
		t.Logf("%-32s %5d code lines of our own (budget %d)", r.Package, fig.OwnCodeLines, r.Budget)
		for _, err := range Check(r, f) {
			t.Error(err)
		}
	}
}

// The check must catch real violations: the bus links NATS-free host code
// of this module and the network stack; the trusted runtime links more
// than no-one's budget.
func TestCheckCatchesViolations(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	errs := Check(Rule{Package: "cluster", Budget: 1}, measure(t, "cluster"))
	var all []string
	for _, err := range errs {
		all = append(all, err.Error())
	}
	s := strings.Join(all, "\n")
	for _, want := range []string{Module + "/bus,", "github.com/nats-io/nats.go", "links net/http: no image may", "links net: its row allows no network stack", "over its budget of 1"} {
		if !strings.Contains(s, want) {
			t.Errorf("no error naming %q in:\n%s", want, s)
		}
	}
	if errs := Check(Rule{Package: "wire", Budget: 1000}, measure(t, "wire")); len(errs) != 0 {
		t.Errorf("wire: %v", errs)
	}
}
