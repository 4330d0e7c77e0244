package manifestyaml

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/attest"

	. "github.com/cloister-dev/cloister/manifest"
)

func mustParseFile(t testing.TB, name string) *Manifest {
	t.Helper()
	m, err := ParseFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustParse(t testing.TB, s string) *Manifest {
	t.Helper()
	m, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	return m
}

const (
	enclaveA = "e389fb35acd45ceee94a6c0064f987639a4338f698615da952955dabbe65e0a2"
	signerS  = "4761ed38eb3b366d44a57519e72ccd2ee7e13c2c156762eac28bfa13efdc597a"
)

func TestWaterManifest(t *testing.T) {
	m := mustParseFile(t, "water.yaml")
	if m.Version != 1 || m.Owner == nil {
		t.Fatalf("version %d owner %v", m.Version, m.Owner)
	}
	if _, ok := m.Owner.PublicKey.(ed25519.PublicKey); !ok {
		t.Fatalf("owner key %T", m.Owner.PublicKey)
	}
	if got := m.ServiceNames(); !slices.Equal(got, []string{"alerts", "analytics", "archive", "coordinator", "dashboard", "ingest"}) {
		t.Fatalf("services %v", got)
	}
	if !m.Services["analytics"].Trusted() || m.Services["ingest"].Trusted() || m.Services["dashboard"].Trusted() {
		t.Fatal("trusted flags")
	}
	if sec := m.Services["analytics"].Secrets["stats-key"]; sec.Generate != 32 {
		t.Fatalf("secret %+v", sec)
	}
	if !slices.Equal(m.Policy.AcceptedTCB, []attest.TCBStatus{attest.TCBSWHardeningNeeded, attest.TCBUpToDate}) || !m.Policy.AllowSimulation {
		t.Fatalf("policy %+v", m.Policy)
	}
	// Rights.
	for _, c := range []struct {
		fn      func(string, string) bool
		svc, at string
		want    bool
	}{
		{m.CanConsume, "analytics", "water.analytics", true},
		{m.CanSend, "ingest", "water.analytics", true},
		{m.CanConsume, "ingest", "water.analytics", false},
		{m.CanPublish, "analytics", "water.alerts", true},
		{m.CanPublish, "ingest", "water.alerts", false},
		{m.CanSend, "analytics", "water.archive.query", true},
		{m.CanConsume, "archive", "water.stats", true},
		{m.CanConsume, "analytics", "no.such.address", false},
		{m.CanConsume, "nobody", "water.stats", false},
	} {
		if got := c.fn(c.svc, c.at); got != c.want {
			t.Errorf("%s on %s: %v, want %v", c.svc, c.at, got, c.want)
		}
	}
	got := m.AddressesFor("analytics")
	want := []Right{
		{Address: "water.alerts", Publish: true},
		{Address: "water.analytics", Durable: true, Clients: true, Consume: true},
		{Address: "water.archive.query", Secured: true, Send: true},
		{Address: "water.stats", Secured: true, Durable: true, Publish: true},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("AddressesFor(analytics) = %+v", got)
	}
	if got := m.AddressesFor("coordinator"); len(got) != 0 {
		t.Fatalf("coordinator rights %+v", got)
	}
}

func TestPoliciesAndCheck(t *testing.T) {
	m := mustParseFile(t, "water.yaml")
	ps, err := m.Policies("analytics")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 {
		t.Fatalf("%d policies", len(ps))
	}
	var e, s [32]byte
	copy(e[:], mustHex(enclaveA))
	copy(s[:], mustHex(signerS))
	if len(ps[0].MREnclaves) != 1 || ps[0].MREnclaves[0] != e || ps[0].MRSigner != nil {
		t.Fatalf("policy 0 %+v", ps[0])
	}
	if ps[1].MRSigner == nil || *ps[1].MRSigner != s || ps[1].ProductID != 1 || ps[1].MinSVN != 2 || len(ps[1].MREnclaves) != 0 {
		t.Fatalf("policy 1 %+v", ps[1])
	}
	for _, p := range ps {
		if !p.AllowSimulation || p.AllowDebug || len(p.AcceptedTCB) != 2 {
			t.Fatalf("policy %+v", p)
		}
	}
	sim := func(mre, mrs [32]byte, prod, svn uint16) *attest.Claims {
		return &attest.Claims{Type: attest.EvidenceSimulated, MREnclave: mre, MRSigner: mrs, ProductID: prod, SVN: svn}
	}
	// The pinned build, with any signer.
	if err := m.Check("analytics", sim(e, [32]byte{9}, 0, 0)); err != nil {
		t.Fatal(err)
	}
	// Another build by the signer, product 1, SVN 2.
	if err := m.Check("analytics", sim([32]byte{7}, s, 1, 2)); err != nil {
		t.Fatal(err)
	}
	// SVN too low, wrong product, unknown measurement: refused, saying why.
	for _, c := range []*attest.Claims{sim([32]byte{7}, s, 1, 1), sim([32]byte{7}, s, 2, 5), sim([32]byte{7}, [32]byte{8}, 1, 5)} {
		err := m.Check("analytics", c)
		var pe *attest.PolicyError
		if err == nil || !errors.As(err, &pe) {
			t.Fatalf("claims %+v: %v", c, err)
		}
	}
	// A debug enclave is refused (debug not allowed).
	c := sim(e, s, 1, 2)
	c.Debug = true
	if err := m.Check("analytics", c); err == nil || !strings.Contains(err.Error(), "debug") {
		t.Fatalf("debug: %v", err)
	}
	// Simulation refused when the manifest forbids it.
	m2 := mustParseFile(t, "minimal.json")
	var pe *attest.PolicyError
	if err := m2.Check("echo", sim(e, s, 0, 0)); !errors.As(err, &pe) || pe.Rule != attest.RuleSimulation {
		t.Fatalf("simulation: %v", err)
	}
	if got := m.ServicesFor(sim(e, [32]byte{9}, 0, 0)); !slices.Equal(got, []string{"analytics"}) {
		t.Fatalf("ServicesFor(pinned analytics build) = %v", got)
	}
	if got := m.ServicesFor(sim([32]byte{7}, s, 2, 0)); !slices.Equal(got, []string{"archive"}) {
		t.Fatalf("ServicesFor(archive by signer) = %v", got)
	}
	if got := m.ServicesFor(sim([32]byte{7}, [32]byte{8}, 0, 0)); len(got) != 0 {
		t.Fatalf("ServicesFor(unknown) = %v", got)
	}
	if _, err := m.Policies("ingest"); !errors.Is(err, ErrNotTrusted) {
		t.Fatalf("regular service: %v", err)
	}
	if err := m.Check("nobody", c); !errors.Is(err, ErrUnknownService) {
		t.Fatalf("unknown service: %v", err)
	}
}

func mustHex(s string) []byte {
	b := make([]byte, len(s)/2)
	for i := range b {
		fmt.Sscanf(s[2*i:2*i+2], "%02x", &b[i])
	}
	return b
}

func TestJSONManifest(t *testing.T) {
	m := mustParseFile(t, "minimal.json")
	if _, ok := m.Owner.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Fatalf("owner %T", m.Owner.PublicKey)
	}
	if !m.CanSend("echo", "echo.secure") || m.CanSend("client", "echo.secure") {
		t.Fatal("rights")
	}
	if !slices.Equal(m.Policy.AcceptedTCB, []attest.TCBStatus{attest.TCBUpToDate}) {
		t.Fatalf("default TCB %v", m.Policy.AcceptedTCB)
	}
}

func TestHashIndependentOfFormatting(t *testing.T) {
	a := mustParse(t, `
version: 2
services:
  b: {}
  a:
    identities:
      - mrsigner: `+signerS+`
        product_id: 3
      - mrenclave: `+enclaveA+`
    secrets:
      k: {value: "base64:AAECAw=="}
addresses:
  x.y:
    consume: [a, b]
    send: [b]
policy: {accepted_tcb: [UpToDate, OutOfDate]}
`)
	b := mustParse(t, `{"policy": {"accepted_tcb": ["OutOfDate", "UpToDate"], "allow_simulation": false},
 "addresses": {"x.y": {"send": ["b"], "consume": ["b", "a"], "secured": false, "publish": []}},
 "services": {"a": {"secrets": {"k": {"value": "hex:00010203"}}, "debug": false,
   "identities": [{"mrenclave": "`+strings.ToUpper(enclaveA)+`", "min_svn": 0}, {"product_id": 3, "mrsigner": "`+signerS+`"}]},
  "b": null},
 "version": 2}`)
	if a.Hash() != b.Hash() {
		t.Fatalf("hashes differ:\n%s\n%s", a.Canonical(), b.Canonical())
	}
	// Canonical JSON parses back to the same hash.
	c, err := Parse(a.Canonical())
	if err != nil {
		t.Fatal(err)
	}
	if c.Hash() != a.Hash() {
		t.Fatal("canonical form does not round-trip")
	}
	// Any semantic change changes the hash.
	d := mustParse(t, strings.Replace(string(a.Canonical()), `"version":2`, `"version":3`, 1))
	e := mustParse(t, strings.Replace(string(a.Canonical()), `"allow_simulation":false`, `"allow_simulation":true`, 1))
	f := mustParse(t, strings.Replace(string(a.Canonical()), `"send":["b"]`, `"send":["a"]`, 1))
	g := mustParse(t, strings.Replace(string(a.Canonical()), `00010203`, `00010204`, 1))
	seen := map[[32]byte]bool{a.Hash(): true}
	for _, x := range []*Manifest{d, e, f, g} {
		if seen[x.Hash()] {
			t.Fatal("a change kept the hash")
		}
		seen[x.Hash()] = true
	}
	if h, err := ParseHash(a.HashHex()); err != nil || h != a.Hash() {
		t.Fatal("ParseHash")
	}
}

// expectErrors parses src and checks that each want (a "path (line N)"
// prefix or a substring) appears among the errors.
func expectErrors(t *testing.T, src string, wants ...string) {
	t.Helper()
	_, err := Parse([]byte(src))
	if err == nil {
		t.Fatalf("accepted:\n%s", src)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error does not match ErrInvalid: %v", err)
	}
	msg := err.Error()
	for _, w := range wants {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in:\n%s", w, msg)
		}
	}
}

func TestInvalidFileReportsEverything(t *testing.T) {
	_, err := ParseFile(filepath.Join("..", "testdata", "invalid.yaml"))
	fe := FieldErrors(err)
	if len(fe) != 13 {
		t.Fatalf("%d errors:\n%v", len(fe), err)
	}
	for _, w := range []string{
		"version (line 2): want an integer ≥ 1",
		"services.analytics.identities[0].mrenclave (line 6): want 64 hex digits",
		"services.analytics.identities[1].product_id (line 8)",
		"services.analytics.secrets.k.generate (line 10)",
		"services.analytics.secrets.v.value (line 11)",
		"services.analytics.debgu (line 12): unknown field",
		"services.ingest.debug (line 14)",
		"services.ingest.secrets (line 16)",
		`addresses."water.readings".consume[2] (line 20): unknown service "nobody"`,
		`addresses."water.readings".consume[1] (line 20): service "ingest" has no identities`,
		`addresses."water.*" (line 21): invalid address: wildcards`,
		`policy.accepted_tcb[1] (line 24): unknown TCB status "Fine"`,
		"owner.public_key (line 26)",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q", w)
		}
	}
	for i := 1; i < len(fe); i++ {
		if fe[i].Line < fe[i-1].Line {
			t.Fatal("errors not in line order")
		}
	}
}

func TestStrictness(t *testing.T) {
	svc := "services:\n  a:\n    identities:\n      - mrenclave: " + enclaveA + "\n"
	expectErrors(t, "", "empty manifest")
	expectErrors(t, "version: 1\n", "services (line 1): missing")
	expectErrors(t, "services: {a: {}}\n", "version (line 1): missing")
	expectErrors(t, "version: 1\nversion: 2\nservices: {a: {}}\n", "version (line 2): duplicate key")
	expectErrors(t, "version: 1\nservices: {a: {}}\nextra: 1\n", "extra (line 3): unknown field")
	expectErrors(t, "version: 1\nservices: {a: {}}\n---\nversion: 2\n", "more than one YAML document")
	expectErrors(t, "version: '1'\nservices: {a: {}}\n", "version (line 1): want an integer, got a string")
	expectErrors(t, "version: 1\nservices: []\n", "services (line 2): want a mapping, got a list")
	expectErrors(t, "version: 1\nservices: {}\n", "services (line 2): no services")
	expectErrors(t, "version: 1\nservices: {a: {}}\n: [\n", "not valid YAML")
	expectErrors(t, "version: 1\nservices:\n  a: &x {}\n  b: *x\n", "services.b (line 4): aliases are not allowed")
	expectErrors(t, "version: 1\nservices:\n  'bad name': {}\n", "services.bad name (line 3): service names")
	expectErrors(t, "version: 1\n"+svc+"    debug: yes\n", "services.a.debug (line 6): want true or false, got a string")
	expectErrors(t, "version: 1\n"+svc+"        mrsigner: "+signerS+"\n", "services.a.identities[0] (line 5): give either mrenclave or mrsigner")
	expectErrors(t, "version: 1\n"+svc+"        product_id: 1\n", "services.a.identities[0].product_id (line 6): product_id applies to mrsigner")
	expectErrors(t, "version: 1\n"+svc+"      - mrenclave: "+enclaveA+"\n", "services.a.identities[1] (line 6): duplicate identity")
	expectErrors(t, "version: 1\nservices:\n  a:\n    identities:\n      - min_svn: 1\n", "services.a.identities[0] (line 5): want mrenclave or mrsigner")
	expectErrors(t, "version: 1\nservices:\n  a:\n    identities:\n      - mrenclave: "+strings.Repeat("g", 64)+"\n", "mrenclave (line 5): want 64 hex digits")
	expectErrors(t, "version: 1\n"+svc+"    secrets:\n      k: {generate: 32, value: 'hex:00'}\n", "services.a.secrets.k (line 7): want exactly one of generate")
	expectErrors(t, "version: 1\n"+svc+"    secrets:\n      k: {value: 'hex:'}\n", "services.a.secrets.k.value (line 7): want 1 to 4096 bytes")
	expectErrors(t, "version: 1\n"+svc+"    secrets:\n      k: {value: 'base64:!!'}\n", "services.a.secrets.k.value (line 7): bad encoding")
	expectErrors(t, "version: 1\nservices: {a: {}}\naddresses:\n  x: {consume: [a, a]}\n", `addresses."x".consume[1] (line 4): service "a" listed twice`)
	expectErrors(t, "version: 1\nservices: {a: {}}\naddresses:\n  x:\n", `addresses."x" (line 4): an address needs at least one right`)
	expectErrors(t, "version: 1\nservices: {a: {}}\naddresses:\n  x: {durable: true}\n", `addresses."x" (line 4): an address needs at least one right`)
	for _, bad := range []string{"a..b", ".a", "a.", "$sys", "a b", "a.>", strings.Repeat("a", 256)} {
		expectErrors(t, fmt.Sprintf("version: 1\nservices: {a: {}}\naddresses:\n  %q: {consume: [a]}\n", bad), "invalid address")
	}
	expectErrors(t, "version: 1\nservices: {a: {}}\npolicy: {accepted_tcb: []}\n", "policy.accepted_tcb (line 3): empty")
	expectErrors(t, "version: 1\nservices: {a: {}}\npolicy: {accepted_tcb: [UpToDate, UpToDate]}\n", "policy.accepted_tcb[1] (line 3): duplicate")
	expectErrors(t, "version: 1\nservices: {a: {}}\nowner: {}\n", "owner.public_key (line 3): missing")
	// Secured addresses: every right holder needs identities.
	expectErrors(t, "version: 1\n"+svc+"  b: {}\naddresses:\n  s:\n    secured: true\n    consume: [a]\n    publish: [b]\n",
		`addresses."s".publish[0] (line 11): service "b" has no identities`)
	// Too big.
	if _, err := Parse(make([]byte, MaxSize+1)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("too big: %v", err)
	}
}

func TestOwnerKeys(t *testing.T) {
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der := func(k any) []byte {
		b, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, s := range map[string]string{
		"ed25519 raw":  base64.StdEncoding.EncodeToString(edPub),
		"ed25519 pkix": base64.StdEncoding.EncodeToString(der(edPub)),
		"ed25519 pem":  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der(edPub)})),
		"p256 pem":     string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der(&ecKey.PublicKey)})),
	} {
		if _, err := ParseOwnerKey(s); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, s := range map[string]string{
		"p384":      base64.StdEncoding.EncodeToString(der(&p384.PublicKey)),
		"cert type": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der(edPub)})),
		"garbage":   "AAAA",
	} {
		if _, err := ParseOwnerKey(s); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	a, _ := ParseOwnerKey(base64.StdEncoding.EncodeToString(edPub))
	b, _ := ParseOwnerKey(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der(edPub)})))
	if !a.Equal(b) {
		t.Fatal("same key in two spellings differs")
	}
}

func manifestWithOwner(t *testing.T, version int, owner crypto.PublicKey, extra string) *Manifest {
	t.Helper()
	d, err := x509.MarshalPKIXPublicKey(owner)
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(t, fmt.Sprintf("version: %d\nowner: {public_key: %q}\nservices: {a: {}%s}\n", version, base64.StdEncoding.EncodeToString(d), extra))
}

func TestSignedUpdates(t *testing.T) {
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, k := range map[string]struct {
		pub  crypto.PublicKey
		priv crypto.Signer
	}{
		"ed25519":    {edPub, edPriv},
		"ecdsa-p256": {&ecKey.PublicKey, ecKey},
	} {
		t.Run(name, func(t *testing.T) {
			cur := manifestWithOwner(t, 1, k.pub, "")
			next := manifestWithOwner(t, 2, k.pub, ", b: {}")
			sig, err := SignUpdate(k.priv, cur, next)
			if err != nil {
				t.Fatal(err)
			}
			if err := cur.VerifyUpdate(next, sig); err != nil {
				t.Fatal(err)
			}
			// Same version, or lower: refused even when signed.
			same := manifestWithOwner(t, 1, k.pub, ", c: {}")
			sig2, _ := SignUpdate(k.priv, cur, same)
			if err := cur.VerifyUpdate(same, sig2); !errors.Is(err, ErrNotNewer) {
				t.Fatalf("same version: %v", err)
			}
			// The signature covers the next manifest: another one fails.
			other := manifestWithOwner(t, 2, k.pub, ", c: {}")
			if err := cur.VerifyUpdate(other, sig); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("other manifest: %v", err)
			}
			// ... and the current one: a signature from version 2 to 3 does not
			// move version 1 to 3.
			three := manifestWithOwner(t, 3, k.pub, "")
			sig23, _ := SignUpdate(k.priv, next, three)
			if err := cur.VerifyUpdate(three, sig23); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("signature for another base: %v", err)
			}
			if err := next.VerifyUpdate(three, sig23); err != nil {
				t.Fatal(err)
			}
			// Another key's signature fails.
			_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
			sig3, _ := SignUpdate(otherPriv, cur, next)
			if err := cur.VerifyUpdate(next, sig3); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("other key: %v", err)
			}
			// Key rotation: next names a new owner; the old key signs it, and
			// from then on only the new key counts.
			newPub, newPriv, _ := ed25519.GenerateKey(rand.Reader)
			rotated := manifestWithOwner(t, 2, newPub, "")
			sigR, _ := SignUpdate(k.priv, cur, rotated)
			if err := cur.VerifyUpdate(rotated, sigR); err != nil {
				t.Fatal(err)
			}
			after := manifestWithOwner(t, 3, newPub, ", z: {}")
			sigOld, _ := SignUpdate(k.priv, rotated, after)
			if err := rotated.VerifyUpdate(after, sigOld); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("old key after rotation: %v", err)
			}
			sigNew, _ := SignUpdate(newPriv, rotated, after)
			if err := rotated.VerifyUpdate(after, sigNew); err != nil {
				t.Fatal(err)
			}
		})
	}
	noOwner := mustParse(t, "version: 1\nservices: {a: {}}\n")
	if err := noOwner.VerifyUpdate(noOwner, nil); !errors.Is(err, ErrNoOwner) {
		t.Fatalf("no owner: %v", err)
	}
}

func TestTestdataHashesStable(t *testing.T) {
	// The hash of the example is what a client of the water app pins; a
	// change to the canonical encoding must be deliberate (and versioned).
	m := mustParseFile(t, "water.yaml")
	b, err := os.ReadFile(filepath.Join("..", "testdata", "water.hash"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.HashHex(), strings.TrimSpace(string(b)); got != want {
		t.Fatalf("hash %s, testdata/water.hash says %s", got, want)
	}
}

func TestParseSigningKey(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pk8 := func(k any) []byte {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b})
	}
	sec1, _ := x509.MarshalECPrivateKey(ecKey)
	for name, b := range map[string][]byte{
		"ed25519 pkcs8": pk8(edPriv),
		"p256 pkcs8":    pk8(ecKey),
		"p256 sec1":     pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}),
	} {
		s, err := ParseSigningKey(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// It signs updates the matching owner verifies.
		cur := manifestWithOwner(t, 1, s.Public(), "")
		next := manifestWithOwner(t, 2, s.Public(), ", b: {}")
		sig, err := SignUpdate(s, cur, next)
		if err != nil || cur.VerifyUpdate(next, sig) != nil {
			t.Fatalf("%s: sign/verify: %v", name, err)
		}
	}
	for name, b := range map[string][]byte{
		"p384":    pk8(p384),
		"garbage": []byte("nope"),
		"public":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}),
	} {
		if _, err := ParseSigningKey(b); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
