package manifest

import (
	"strings"
	"testing"
)

func TestClientsFlag(t *testing.T) {
	src := `
version: 1
services:
  analytics:
    identities:
      - mrenclave: ` + enclaveA + `
  ingest: {}
addresses:
  water.analytics:
    clients: true
    consume: [analytics]
    send: [ingest]
`
	m := mustParse(t, src)
	if !m.Addresses["water.analytics"].Clients {
		t.Fatal("clients flag not parsed")
	}
	rs := m.AddressesFor("analytics")
	if len(rs) != 1 || !rs[0].Clients || !rs[0].Consume {
		t.Fatalf("rights of analytics: %+v", rs)
	}
	// The flag is bound by the hash, and a manifest without it keeps the
	// hash it had before the flag existed (the field is left out).
	without := mustParse(t, strings.Replace(src, "    clients: true\n", "", 1))
	if without.Hash() == m.Hash() {
		t.Fatal("the clients flag does not change the hash")
	}
	if strings.Contains(string(without.Canonical()), "clients") {
		t.Fatalf("canonical form of a manifest without the flag mentions it: %s", without.Canonical())
	}
	if again := mustParse(t, string(m.Canonical())); again.Hash() != m.Hash() {
		t.Fatal("canonical form does not parse back to the same hash")
	}

	// Clients seal to a trusted consumer's key: a regular consumer is an
	// error naming the field.
	_, err := Parse([]byte(strings.Replace(src, "consume: [analytics]", "consume: [ingest]", 1)))
	if err == nil || !strings.Contains(err.Error(), `addresses."water.analytics".consume`) || !strings.Contains(err.Error(), "open to clients") {
		t.Fatalf("regular consumer of a clients address: %v", err)
	}
}
