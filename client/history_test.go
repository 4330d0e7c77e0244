package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
	"github.com/cloister-dev/cloister/provision"
)

// chain is a sequence of real manifests, each update signed by the owner.
type chain struct {
	owner ed25519.PrivateKey
	ms    []*manifest.Manifest
	sigs  [][]byte // sigs[i] made ms[i] current (nil for ms[0])
}

// ownedManifest is a manifest of version v whose owner is owner; salt
// makes two manifests of one version differ.
func ownedManifest(t *testing.T, v int, owner ed25519.PrivateKey, salt string) *manifest.Manifest {
	t.Helper()
	ownerLine := ""
	if owner != nil {
		ownerLine = "owner:\n  public_key: " + base64.StdEncoding.EncodeToString(owner.Public().(ed25519.PublicKey)) + "\n"
	}
	m, err := manifestyaml.Parse(fmt.Appendf(nil, `version: %d
%sservices:
  svc:
    identities:
      - mrenclave: "%064x"
addresses:
  water.readings%s:
    secured: true
    consume: [svc]
`, v, ownerLine, v, salt))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// newChain makes manifests of versions 1 to n, each signed over by the
// owner from the one before.
func newChain(t *testing.T, n int) *chain {
	t.Helper()
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	c := &chain{owner: owner}
	for v := 1; v <= n; v++ {
		c.add(t, ownedManifest(t, v, owner, ""), owner)
	}
	return c
}

// add appends m, signed over by signer from the last manifest.
func (c *chain) add(t *testing.T, m *manifest.Manifest, signer ed25519.PrivateKey) {
	t.Helper()
	var sig []byte
	if len(c.ms) > 0 {
		var err error
		if sig, err = manifest.SignUpdate(signer, c.ms[len(c.ms)-1], m); err != nil {
			t.Fatal(err)
		}
	}
	c.ms, c.sigs = append(c.ms, m), append(c.sigs, sig)
}

// history is the answer for a client pinned to ms[from].
func (c *chain) history(from int) *provision.ManifestHistory { return c.span(from, len(c.ms)) }

// span is the history from ms[from] to ms[to-1].
func (c *chain) span(from, to int) *provision.ManifestHistory {
	h := &provision.ManifestHistory{}
	for i := from; i < to; i++ {
		h.Entries = append(h.Entries, provision.ManifestUpdate{Manifest: c.ms[i].Canonical(), Signature: c.sigs[i]})
	}
	return h
}

// serveHistory makes r serve h on provision.AddressManifestHistory (a 404
// when h is nil) and attest to manifest current.
func (r *rogue) serveHistory(t *testing.T, current *manifest.Manifest, h *provision.ManifestHistory) *bus.Bus {
	t.Helper()
	r.hash = current.Hash()
	b := r.serve(t)
	if _, err := b.Consumer(provision.AddressManifestHistory, bus.HandlerFunc(func(_ context.Context, m *bus.Message) {
		var req provision.ManifestHistoryRequest
		if err := provision.Decode(m.Body(), &req); err != nil || h == nil {
			_ = m.Fail(provision.CodeNotFound, "manifest not in the history")
			return
		}
		body, _ := provision.Encode(h)
		_ = m.Reply(body)
	})); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConnectFollowsSignedUpdates(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 3)
	r := newRogue(t)
	b := r.serveHistory(t, c.ms[2], c.history(0))
	o := r.options(t)
	o.ManifestHash = c.ms[0].Hash()
	cl, err := client.Connect(ctx, b, o)
	if err != nil {
		t.Fatal(err)
	}
	if cl.ManifestHash() != c.ms[2].Hash() || cl.ManifestVersion() != 3 || cl.FollowedUpdates() != 2 {
		t.Fatalf("after following: hash %x, version %d, %d updates", cl.ManifestHash(), cl.ManifestVersion(), cl.FollowedUpdates())
	}
	// Sessions and service keys go under the new hash (the rogue's service
	// opens requests under it).
	out, err := cl.Request(ctx, "svc.echo", "svc", []byte("v3"))
	if err != nil || string(out) != "echo: sensor-1: v3" {
		t.Fatalf("request after following updates: %q, %v", out, err)
	}
	// A client made with As pins the same.
	if other := cl.As(r.credential(t, "sensor-2")); other.ManifestHash() != cl.ManifestHash() || other.FollowedUpdates() != 2 {
		t.Fatal("As lost the pinned manifest")
	}

	// An update accepted after the evidence was made (the history goes on
	// to v3, the evidence binds v2): the client stops at the attested one.
	r2 := newRogue(t)
	o2 := r2.options(t)
	o2.ManifestHash = c.ms[0].Hash()
	cl, err = client.Connect(ctx, r2.serveHistory(t, c.ms[1], c.history(0)), o2)
	if err != nil || cl.ManifestHash() != c.ms[1].Hash() || cl.ManifestVersion() != 2 || cl.FollowedUpdates() != 1 {
		t.Fatalf("history past the attested manifest: %v", err)
	}

	// With RefuseUpdates the pinned hash only.
	o.RefuseUpdates = true
	_, err = client.Connect(ctx, b, o)
	var mm *client.ManifestMismatchError
	if !errors.As(err, &mm) || mm.Reason != nil {
		t.Fatalf("RefuseUpdates: %v", err)
	}
}

func TestConnectRefusesForgedHistory(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 3)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)

	forged := newChain(t, 0)
	forged.owner = c.owner
	forged.ms, forged.sigs = append(forged.ms, c.ms[:2]...), append(forged.sigs, c.sigs[:2]...)
	forged.add(t, ownedManifest(t, 3, c.owner, "-x"), stranger) // signed by someone else

	older := newChain(t, 0)
	older.ms, older.sigs = append(older.ms, c.ms[:2]...), append(older.sigs, c.sigs[:2]...)
	older.add(t, ownedManifest(t, 2, c.owner, "-again"), c.owner) // the owner's, but not a higher version

	tampered := c.history(0)
	tampered.Entries[1].Manifest = ownedManifest(t, 2, c.owner, "-tampered").Canonical() // the signature was over another

	other := newChain(t, 3) // another owner's chain: not from the pinned manifest

	for _, tc := range []struct {
		name    string
		current *manifest.Manifest
		h       *provision.ManifestHistory
		entry   int
		want    error
	}{
		{"bad signature", forged.ms[2], forged.history(0), 2, manifest.ErrBadSignature},
		{"tampered manifest", c.ms[2], tampered, 1, manifest.ErrBadSignature},
		{"version not higher", older.ms[2], older.history(0), 2, manifest.ErrNotNewer},
		{"wrong first manifest", other.ms[2], other.history(0), 0, client.ErrHistoryStart},
		{"last not the attested one", c.ms[2], c.span(0, 2), 1, client.ErrHistoryEnd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRogue(t)
			o := r.options(t)
			o.ManifestHash = c.ms[0].Hash()
			_, err := client.Connect(ctx, r.serveHistory(t, tc.current, tc.h), o)
			var he *client.HistoryError
			untrusted(t, err, "manifest hash")
			if !errors.As(err, &he) || he.Entry != tc.entry || !errors.Is(err, tc.want) || !errors.Is(err, client.ErrHistory) || !errors.Is(err, client.ErrManifestMismatch) {
				t.Fatalf("want entry %d to fail with %v, got %v", tc.entry, tc.want, err)
			}
		})
	}

	// A manifest without owner key cannot be updated.
	plain := ownedManifest(t, 1, nil, "")
	noOwner := &provision.ManifestHistory{Entries: []provision.ManifestUpdate{{Manifest: plain.Canonical()}, {Manifest: c.ms[1].Canonical(), Signature: c.sigs[1]}}}
	r := newRogue(t)
	o := r.options(t)
	o.ManifestHash = plain.Hash()
	_, err := client.Connect(ctx, r.serveHistory(t, c.ms[1], noOwner), o)
	if !errors.Is(err, manifest.ErrNoOwner) {
		t.Fatalf("update of a manifest without owner: %v", err)
	}

	// The coordinator does not know the pinned manifest (404).
	r = newRogue(t)
	o = r.options(t)
	o.ManifestHash = c.ms[0].Hash()
	_, err = client.Connect(ctx, r.serveHistory(t, c.ms[2], nil), o)
	var re *bus.ReplyError
	if !errors.Is(err, client.ErrManifestMismatch) || !errors.As(err, &re) || re.Code != provision.CodeNotFound {
		t.Fatalf("pinned manifest unknown to the coordinator: %v", err)
	}
}

func TestMinManifestVersion(t *testing.T) {
	ctx := context.Background()
	c := newChain(t, 3)

	// A coordinator still at version 1 (as a rolled-back one would be),
	// even one that reports version 3: refused.
	r := newRogue(t)
	o := r.options(t)
	o.ManifestHash = c.ms[0].Hash()
	o.MinManifestVersion = 3
	_, err := client.Connect(ctx, r.serveHistory(t, c.ms[0], c.span(0, 1)), o)
	var ve *client.ManifestVersionError
	untrusted(t, err, "manifest version")
	if !errors.Is(err, client.ErrManifestTooOld) || !errors.As(err, &ve) || ve.Version != 1 || ve.Min != 3 {
		t.Fatalf("rolled-back coordinator: %v", err)
	}
	// At version 3: accepted, from the pinned v1 or v3.
	for _, from := range []int{0, 2} {
		r = newRogue(t)
		o = r.options(t)
		o.ManifestHash = c.ms[from].Hash()
		o.MinManifestVersion = 3
		cl, err := client.Connect(ctx, r.serveHistory(t, c.ms[2], c.history(from)), o)
		if err != nil || cl.ManifestVersion() != 3 || cl.FollowedUpdates() != 2-from {
			t.Fatalf("pinned at version %d, minimum 3, coordinator at 3: %v", from+1, err)
		}
	}
}
