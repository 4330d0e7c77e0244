package coordinator

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
)

const fuzzManifest = `version: 1
owner:
  public_key: "MCowBQYDK2VwAyEAWgeiQvUwGqu9fiBYvjyvs6p06k/b938b5QnyZkt7iR4="
services:
  analytics:
    identities:
      - mrenclave: "e389fb35acd45ceee94a6c0064f987639a4338f698615da952955dabbe65e0a2"
  ingest: {}
addresses:
  water.readings:
    secured: true
    consume: [analytics]
`

// seeds returns real request bodies of every kind.
func seeds(t testing.TB) [][]byte {
	var out [][]byte
	add := func(v any) {
		b, err := provision.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	nonce := make([]byte, provision.NonceSize)
	rand.Read(nonce)
	key, err := secure.NewServiceKey()
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := attest.NewSimIssuer(attest.SimIdentity{ProductID: 1}, pk)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := iss.Issue(context.Background(), provision.JoinReportData(key.PublicKeyBytes(), nonce))
	if err != nil {
		t.Fatal(err)
	}
	evb, _ := ev.MarshalBinary()
	add(provision.JoinRequest{Service: "analytics", PublicKey: key.PublicKeyBytes(), Nonce: nonce, Evidence: evb})
	add(provision.AttestRequest{Nonce: nonce})
	add(provision.ServiceKeyRequest{Service: "analytics"})
	fm, err := manifestyaml.Parse([]byte(fuzzManifest))
	if err != nil {
		t.Fatal(err)
	}
	y := fm.Canonical()
	add(provision.ManifestSet{Manifest: y})
	add(provision.ManifestUpdate{Manifest: y, Signature: make([]byte, ed25519.SignatureSize)})
	add(provision.RotateRequest{NextEpoch: 2, Grace: "1h", Signature: make([]byte, ed25519.SignatureSize)})
	st, err := newState()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(st)
	out = append(out, b)
	add(provision.ManifestSet{Manifest: []byte(fuzzManifest)}) // the YAML source: refused
	fh := fm.Hash()
	add(provision.ManifestHistoryRequest{Pinned: fh[:]})
	st.Manifest, st.ManifestSignature = y, make([]byte, ed25519.SignatureSize)
	st.History = []provision.ManifestUpdate{{Manifest: y}}
	b, _ = json.Marshal(st)
	out = append(out, b)
	return out
}

// checkRefusal: a decoder's error is always a refusal with a 4xx code.
func checkRefusal(t *testing.T, err error) {
	var e *Error
	if !errors.As(err, &e) || e.Code < 400 || e.Code > 499 || e.Message == "" {
		t.Fatalf("decoder error is not a 4xx refusal: %v", err)
	}
}

func FuzzDecoders(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := decodeJoin(data); err != nil {
			checkRefusal(t, err)
		} else if len(r.Nonce) != provision.NonceSize || r.key == nil || r.evidence == nil || r.Service == "" {
			t.Fatalf("accepted an incomplete join: %+v", r.JoinRequest)
		}
		if r, err := decodeAttest(data); err != nil {
			checkRefusal(t, err)
		} else if len(r.Nonce) != provision.NonceSize {
			t.Fatal("accepted an attest request without a proper nonce")
		}
		if _, err := decodeServiceKey(data); err != nil {
			checkRefusal(t, err)
		}
		if m, err := decodeManifestSet(data); err != nil {
			checkRefusal(t, err)
		} else if again, err := manifest.ParseCanonical(m.Canonical()); err != nil || again.Hash() != m.Hash() {
			t.Fatalf("an accepted manifest does not round-trip: %v", err)
		}
		if _, sig, err := decodeManifestUpdate(data); err != nil {
			checkRefusal(t, err)
		} else if len(sig) == 0 {
			t.Fatal("accepted an unsigned update")
		}
		if r, grace, err := decodeRotate(data); err != nil {
			checkRefusal(t, err)
		} else if len(r.Signature) == 0 || grace < 0 || grace > MaxGrace {
			t.Fatalf("accepted rotation %+v, grace %v", r, grace)
		}
		if _, err := decodeManifestHistory(data); err != nil {
			checkRefusal(t, err)
		}
		_, _ = parseConfig(data)
		if st, _, err := decodeState(data); err == nil && (len(st.Root) != rootSize || st.Epoch == 0) {
			t.Fatalf("accepted a state without a root secret or epoch")
		}
	})
}

func TestSeedsDecode(t *testing.T) {
	s := seeds(t)
	if _, err := decodeJoin(s[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := decodeManifestSet(s[3]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := decodeRotate(s[5]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := decodeState(s[6]); err != nil {
		t.Fatal(err)
	}
	if _, err := decodeManifestSet(s[7]); err == nil || !strings.Contains(err.Error(), "not valid JSON") {
		t.Fatalf("the YAML source was not refused: %v", err)
	}
	if _, err := decodeManifestHistory(s[8]); err != nil {
		t.Fatal(err)
	}
	if st, m, err := decodeState(s[9]); err != nil || m == nil || len(st.chain()) != 2 {
		t.Fatalf("a state with a history: %v", err)
	}
}

// The channel key of a service is a function of the root secret and the
// service name only.
func TestChannelKeyIsDeterministic(t *testing.T) {
	root := make([]byte, rootSize)
	rand.Read(root)
	a, err := channelKey(root, "analytics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := channelKey(root, "analytics")
	c, _ := channelKey(root, "archive")
	if !a.PublicKey().Equal(b.PublicKey()) || a.PublicKey().Equal(c.PublicKey()) {
		t.Fatal("channel keys are not per service and deterministic")
	}
	ab, _ := a.Bytes()
	bb, _ := b.Bytes()
	if string(ab) != string(bb) {
		t.Fatal("private halves differ")
	}
	s1, _ := deriveSecret(root, "analytics", "k", 32)
	s2, _ := deriveSecret(root, "analytics", "k", 32)
	s3, _ := deriveSecret(root, "analytics", "k2", 32)
	if string(s1) != string(s2) || string(s1) == string(s3) {
		t.Fatal("generated secrets are not per name and deterministic")
	}
}

func TestParseConfig(t *testing.T) {
	if pc, err := parseConfig(nil); err != nil || pc.collateral != nil {
		t.Fatalf("empty config: %v", err)
	}
	for _, bad := range []string{`{"x":1}`, `{"collateral":{"tcb_info":1}}`, `{"sim_platform_keys":["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]}`, `{} {}`} {
		if _, err := parseConfig([]byte(bad)); err == nil {
			t.Errorf("config %s accepted", bad)
		}
	}
	// A real collateral bundle, when the shared test data is there.
	b, err := os.ReadFile("../../shared/testdata/sgx/phala_sgx_quote_collateral.json")
	if err != nil {
		t.Skipf("shared test data: %v", err)
	}
	cfg, _ := json.Marshal(Config{Collateral: b})
	pc, err := parseConfig(cfg)
	if err != nil || pc.collateral == nil {
		t.Fatalf("collateral bundle: %v", err)
	}
}

// FuzzChallengeCheck: whatever nonce a joiner sends, checking it never
// panics, and only the coordinator's own unexpired challenges pass; a
// nonce that fails is never recorded.
func FuzzChallengeCheck(f *testing.F) {
	ch, err := newChallenges(provision.DefaultNonceLifetime, 4)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	own, err := ch.mint(now)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(own)
	f.Add(make([]byte, provision.NonceSize))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, nonce []byte) {
		exp, err := ch.check(nonce, now)
		if err == nil {
			if !bytes.Equal(nonce, own) {
				t.Fatalf("a nonce not minted here passed: %x", nonce)
			}
			if !exp.After(now) {
				t.Fatalf("expired nonce passed: %s", exp)
			}
		}
		ch.mu.Lock()
		n := len(ch.spent)
		ch.mu.Unlock()
		if n != 0 {
			t.Fatalf("check recorded %d nonces", n)
		}
	})
}
