package seal

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func fuzzSeeds(f *testing.F) *Sealer {
	src := testSource(f)
	s, err := NewSealer(src, PolicyMRENCLAVE)
	if err != nil {
		f.Fatal(err)
	}
	s2, _ := NewSealer(src, PolicyMRSIGNER)
	for _, pt := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("state"), 40)} {
		b, _ := s.Seal(pt, nil)
		f.Add(b)
		b, _ = s2.Seal(pt, []byte("aad"))
		f.Add(b)
	}
	// Real version-1 blobs (sealed by the earlier format with testSource).
	old, _ := filepath.Glob(filepath.Join("testdata", "v1-*.blob"))
	for _, p := range old {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("CLSL"))
	f.Add([]byte{})
	return s
}

// FuzzParseBlob checks that the parser never panics and that what it accepts
// is consistent with the format.
func FuzzParseBlob(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, blob []byte) {
		h, ct, err := ParseBlob(blob)
		if err != nil {
			return
		}
		if (h.Version != Version && h.Version != Version1) || !h.Policy.Valid() || len(ct) < tagSize || len(ct)+HeaderSize != len(blob) {
			t.Fatalf("accepted inconsistent blob: %+v len %d", h, len(blob))
		}
		if enc := appendHeader(nil, &h); !bytes.Equal(enc, blob[:HeaderSize]) {
			t.Fatal("header does not re-encode to itself")
		}
	})
}

// FuzzUnseal checks that Unseal never panics and only accepts blobs it
// produced (any mutation of a real blob must fail).
func FuzzUnseal(f *testing.F) {
	s := fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, blob []byte) {
		pt, err := s.Unseal(blob, nil)
		if err != nil {
			return
		}
		// Accepted: it must re-seal and open to the same plaintext.
		b, err := s.Seal(pt, nil)
		if err != nil {
			t.Fatal(err)
		}
		if pt2, err := s.Unseal(b, nil); err != nil || !bytes.Equal(pt, pt2) {
			t.Fatal("re-seal round trip failed")
		}
	})
}
