package enclave

import (
	"context"
	"fmt"
	"testing"
)

func TestCountLines(t *testing.T) {
	src := "package p\n\n// a comment\nvar x = 1 // trailing\n/* block\n   comment */\nvar s = `raw\nstring`\n\nfunc f() {\n}\n"
	lines, code := CountLines([]byte(src))
	if lines != 11 || code != 6 { // package, var x, var s (2 lines), func, }
		t.Fatalf("lines %d, code %d; want 11, 6", lines, code)
	}
	if l, c := CountLines([]byte("package p")); l != 1 || c != 1 {
		t.Fatalf("no final newline: %d, %d", l, c)
	}
}

// The footprint of the wire package: the package itself and the standard
// library, nothing of other modules; Without cuts what only one import
// brings in.
func TestMeasureFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	f, err := MeasureFootprint(context.Background(), "", SDKModule+"/wire")
	if err != nil {
		t.Fatal(err)
	}
	s := f.Figures()
	if f.Image != SDKModule+"/wire" || s.OwnPackages != 1 || s.OwnCodeLines == 0 || s.OwnLines <= s.OwnCodeLines || s.StdPackages == 0 || s.OtherPackages != 0 {
		t.Fatalf("figures %+v", s)
	}
	if !f.Has("fmt") || f.Without("fmt").Has("fmt") || f.Without("fmt").Figures().StdPackages >= s.StdPackages {
		t.Fatal("Without(fmt) keeps fmt or what only it imports")
	}
	if _, err := MeasureFootprint(context.Background(), "", SDKModule+"/..."); err == nil {
		t.Fatal("measured many packages at once")
	}
}

// The figures cloister enclave build prints, and what X.509 parsing costs
// an image that verifies evidence.
func ExampleMeasureFootprint() {
	f, err := MeasureFootprint(context.Background(), "", "github.com/cloister-dev/cloister/coordinator/image")
	if err != nil {
		panic(err)
	}
	fmt.Println(f.Figures())
	fmt.Println(f.Without("crypto/x509").Figures())
}
