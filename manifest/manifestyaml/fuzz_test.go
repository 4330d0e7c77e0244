package manifestyaml

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	. "github.com/cloister-dev/cloister/manifest"
)

// FuzzParse feeds arbitrary bytes to Parse, seeded with the example
// manifests. Nothing may panic; every rejection is a FieldError with
// ErrInvalid; every accepted manifest's canonical form parses back to the
// same hash, and its rights and policies are consistent.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "*.*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("version: 1\nservices: {a: {}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || len(FieldErrors(err)) == 0 {
				t.Fatalf("error without field errors: %v", err)
			}
			return
		}
		c, err := Parse(m.Canonical())
		if err != nil {
			t.Fatalf("canonical form rejected: %v\n%s", err, m.Canonical())
		}
		if c.Hash() != m.Hash() {
			t.Fatalf("canonical form changes the hash:\n%s\n%s", m.Canonical(), c.Canonical())
		}
		for name, s := range m.Services {
			ps, err := m.Policies(name)
			if s.Trusted() != (err == nil) || len(ps) != len(s.Identities) {
				t.Fatalf("service %q: %d policies, %v", name, len(ps), err)
			}
			for _, r := range m.AddressesFor(name) {
				if r.Secured && !s.Trusted() {
					t.Fatalf("regular service %q holds a right on secured %q", name, r.Address)
				}
				if r.Consume != m.CanConsume(name, r.Address) || r.Send != m.CanSend(name, r.Address) || r.Publish != m.CanPublish(name, r.Address) {
					t.Fatal("AddressesFor disagrees with Can*")
				}
			}
		}
	})
}

// BenchmarkParse measures parsing and validating the water manifest.
func BenchmarkParse(b *testing.B) {
	src, err := os.ReadFile(filepath.Join("..", "testdata", "water.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(src); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHash measures the canonical hash of the water manifest.
func BenchmarkHash(b *testing.B) {
	m := mustParseFile(b, "water.yaml")
	b.ReportAllocs()
	for b.Loop() {
		m.Hash()
	}
}
