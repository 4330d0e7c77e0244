package manifest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// hashLabel prefixes the canonical encoding when hashing.
const hashLabel = "cloister manifest v1\n"

// identityKey is an identity's canonical form, for sorting and duplicates.
func identityKey(id Identity) string {
	if id.MREnclave != nil {
		return fmt.Sprintf("e:%x:%05d", id.MREnclave[:], id.MinSVN)
	}
	if id.MRSigner != nil {
		return fmt.Sprintf("s:%x:%05d:%05d", id.MRSigner[:], id.ProductID, id.MinSVN)
	}
	return ""
}

func canonicalIdentity(id Identity) map[string]any {
	out := map[string]any{"min_svn": id.MinSVN}
	if id.MREnclave != nil {
		out["mrenclave"] = hex.EncodeToString(id.MREnclave[:])
	}
	if id.MRSigner != nil {
		out["mrsigner"] = hex.EncodeToString(id.MRSigner[:])
		out["product_id"] = id.ProductID
	}
	return out
}

func sortedCopy(s []string) []string {
	out := append([]string{}, s...)
	slices.Sort(out)
	return out
}

// Canonical returns the canonical JSON encoding of the manifest: sorted
// keys, every field present, lists sorted, byte strings in lowercase hex.
// It parses back to a manifest with the same hash.
func (m *Manifest) Canonical() []byte {
	services := map[string]any{}
	for name, s := range m.Services {
		ids := slices.Clone(s.Identities)
		slices.SortFunc(ids, func(a, b Identity) int { return strings.Compare(identityKey(a), identityKey(b)) })
		idList := make([]any, 0, len(ids))
		for _, id := range ids {
			idList = append(idList, canonicalIdentity(id))
		}
		secrets := map[string]any{}
		for sn, sec := range s.Secrets {
			if sec.Value != nil {
				secrets[sn] = map[string]any{"value": "hex:" + hex.EncodeToString(sec.Value)}
			} else {
				secrets[sn] = map[string]any{"generate": sec.Generate}
			}
		}
		services[name] = map[string]any{"identities": idList, "debug": s.Debug, "secrets": secrets}
	}
	addresses := map[string]any{}
	for name, a := range m.Addresses {
		ad := map[string]any{
			"secured": a.Secured, "durable": a.Durable,
			"consume": sortedCopy(a.Consume), "send": sortedCopy(a.Send), "publish": sortedCopy(a.Publish),
		}
		// Present only when set, so that the hashes of manifests written
		// before the field existed do not change.
		if a.Clients {
			ad["clients"] = true
		}
		addresses[name] = ad
	}
	tcb := make([]string, 0, len(m.Policy.AcceptedTCB))
	for _, s := range m.Policy.AcceptedTCB {
		tcb = append(tcb, string(s))
	}
	slices.Sort(tcb)
	tcb = slices.Compact(tcb)
	doc := map[string]any{
		"version":   m.Version,
		"services":  services,
		"addresses": addresses,
		"policy":    map[string]any{"accepted_tcb": tcb, "allow_simulation": m.Policy.AllowSimulation},
	}
	// Present only when the manifest names clients, so that the hashes of
	// manifests written before the section existed do not change.
	if len(m.Clients) > 0 {
		clients := make(map[string]any, len(m.Clients))
		for name, k := range m.Clients {
			clients[name] = map[string]any{"public_key": base64.StdEncoding.EncodeToString(k)}
		}
		doc["clients"] = clients
	}
	// Present only when set, so that the hashes of manifests written
	// before the section existed do not change.
	if f := m.Freshness; f != nil {
		doc["freshness"] = map[string]any{"replicas": f.Replicas, "checkpoint": f.Checkpoint.String()}
	}
	if m.Owner != nil {
		doc["owner"] = map[string]any{"public_key": base64.StdEncoding.EncodeToString(m.Owner.der)}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		// Only strings, numbers, booleans, lists and maps: cannot fail.
		panic("manifest: canonical encoding: " + err.Error())
	}
	return b
}

// Hash returns SHA-256 over "cloister manifest v1\n" ‖ [Manifest.Canonical]:
// the value clients pin.
func (m *Manifest) Hash() [32]byte { return HashCanonical(m.Canonical()) }

// HashCanonical returns the hash of the manifest whose canonical JSON is
// canonical (as ParseCanonical accepts it), without parsing it: equal to
// [Manifest.Hash] of that manifest.
func HashCanonical(canonical []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(hashLabel))
	h.Write(canonical)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// HashHex returns [Manifest.Hash] in lowercase hex.
func (m *Manifest) HashHex() string {
	h := m.Hash()
	return hex.EncodeToString(h[:])
}

// ParseHash decodes a hash written by [Manifest.HashHex].
func ParseHash(s string) ([32]byte, error) {
	var h [32]byte
	if len(s) != 64 {
		return h, fmt.Errorf("manifest hash: want 64 hex digits, got %d characters", len(s))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("manifest hash: %w", err)
	}
	return h, nil
}
