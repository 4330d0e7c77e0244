package manifestyaml

import (
	"crypto/ed25519"
	"encoding/base64"
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

func TestClientCredentials(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(pub)
	src := `
version: 1
services:
  analytics:
    identities:
      - mrenclave: ` + enclaveA + `
clients:
  s-001:
    public_key: ` + b64 + `
addresses:
  water.analytics:
    clients: true
    consume: [analytics]
`
	m := mustParse(t, src)
	if !m.Clients["s-001"].Equal(pub) {
		t.Fatalf("clients %v", m.Clients)
	}
	// The canonical form keeps the clients and parses to the same hash.
	back, err := Parse(m.Canonical())
	if err != nil {
		t.Fatal(err)
	}
	if back.Hash() != m.Hash() || !back.Clients["s-001"].Equal(pub) {
		t.Fatal("clients lost in the canonical form")
	}
	without := mustParse(t, strings.Replace(src, "clients:\n  s-001:\n    public_key: "+b64+"\n", "", 1))
	if without.Hash() == m.Hash() || strings.Contains(string(without.Canonical()), `"clients":{`) {
		t.Fatal("the clients section does not change the hash, or appears empty")
	}
	for _, bad := range []struct{ key, want string }{
		{"AAAA", "clients.s-001.public_key (line 9)"},
		{`"not base64!"`, "clients.s-001.public_key"},
	} {
		_, err := Parse([]byte(strings.Replace(src, b64, bad.key, 1)))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Fatalf("client key %s: %v", bad.key, err)
		}
	}
	_, err = Parse([]byte(strings.Replace(src, "  s-001:", "  \"s 001\":", 1)))
	if err == nil || !strings.Contains(err.Error(), "invalid client name") {
		t.Fatalf("bad client name: %v", err)
	}
}
