package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
	"github.com/cloister-dev/cloister/provision"
)

// FuzzVerifyHistory: whatever a coordinator answers on
// provision.AddressManifestHistory, verifyHistory either refuses it or
// returns the manifest with the attested hash. Seeded with a real chain of
// owner-signed updates.
func FuzzVerifyHistory(f *testing.F) {
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	var ms []*manifest.Manifest
	h := provision.ManifestHistory{}
	for v := 1; v <= 3; v++ {
		m, err := manifestyaml.Parse(fmt.Appendf(nil, "version: %d\nowner:\n  public_key: %s\nservices:\n  svc: {}\n",
			v, base64.StdEncoding.EncodeToString(owner.Public().(ed25519.PublicKey))))
		if err != nil {
			f.Fatal(err)
		}
		var sig []byte
		if len(ms) > 0 {
			if sig, err = manifest.SignUpdate(owner, ms[len(ms)-1], m); err != nil {
				f.Fatal(err)
			}
		}
		ms = append(ms, m)
		h.Entries = append(h.Entries, provision.ManifestUpdate{Manifest: m.Canonical(), Signature: sig})
	}
	for from := range h.Entries {
		b, err := provision.Encode(provision.ManifestHistory{Entries: h.Entries[from:]})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	pinned, attested := ms[0].Hash(), ms[2].Hash()
	if m, n, err := verifyHistory(pinned, attested, mustEncode(f, h)); err != nil || n != 2 || m.Version != 3 {
		f.Fatalf("the real chain: %v", err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, n, err := verifyHistory(pinned, attested, data)
		if err != nil {
			return
		}
		if m.Hash() != attested || n < 1 {
			t.Fatalf("accepted a history ending at %x after %d updates", m.Hash(), n)
		}
	})
}

func mustEncode(f *testing.F, v any) []byte {
	b, err := provision.Encode(v)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
