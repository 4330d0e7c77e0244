package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func canonicalSeeds(t testing.TB) map[string][]byte {
	files, err := filepath.Glob(filepath.Join("testdata", "*.canonical.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no canonical manifests in testdata: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = b
	}
	return out
}

// The canonical forms in testdata (written by Manifest.Canonical from the
// YAML of package manifestyaml's testdata) decode to manifests whose
// canonical form is the input, and the water manifest keeps its pinned
// hash.
func TestParseCanonical(t *testing.T) {
	for name, b := range canonicalSeeds(t) {
		m, err := ParseCanonical(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(m.Canonical(), b) {
			t.Fatalf("%s: canonical form differs", name)
		}
		if strings.Contains(name, "water") {
			want, err := os.ReadFile(filepath.Join("testdata", "water.hash"))
			if err != nil {
				t.Fatal(err)
			}
			if m.HashHex() != strings.TrimSpace(string(want)) {
				t.Fatalf("water: hash %s, want %s", m.HashHex(), want)
			}
		}
	}
}

// Anything but the canonical form is refused, with a field error saying
// what is wrong.
func TestParseCanonicalRefuses(t *testing.T) {
	water := canonicalSeeds(t)[filepath.Join("testdata", "water.canonical.json")]
	var indented bytes.Buffer
	if err := json.Indent(&indented, water, "", "  "); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in, want string
	}{
		{"indented", indented.String(), "not in canonical form"},
		{"yaml", "version: 1\nservices: {a: {}}\n", "not valid JSON"},
		{"two values", string(water) + "{}", "more than one JSON value"},
		{"empty", "", "empty manifest"},
		{"deep", strings.Repeat("[", 40) + strings.Repeat("]", 40), "nested more than"},
		{"invalid field", strings.Replace(string(water), `"version":`, `"version":0,"x":`, 1), "version"},
		{"truncated", string(water[:len(water)/2]), "not valid JSON"},
	} {
		_, err := ParseCanonical([]byte(tc.in))
		if err == nil || !errors.Is(err, ErrInvalid) || len(FieldErrors(err)) == 0 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v (want a field error with %q)", tc.name, err, tc.want)
		}
	}
}

// FuzzParseCanonical: the coordinator's enclave decodes manifests from the
// host with ParseCanonical. Whatever the bytes, it returns field errors or
// a manifest whose canonical form is exactly the input.
func FuzzParseCanonical(f *testing.F) {
	for _, b := range canonicalSeeds(f) {
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseCanonical(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || len(FieldErrors(err)) == 0 {
				t.Fatalf("error without field errors: %v", err)
			}
			return
		}
		if !bytes.Equal(m.Canonical(), b) {
			t.Fatalf("accepted a non-canonical form:\n%s", b)
		}
	})
}
