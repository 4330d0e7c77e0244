package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func testSimIdentity() SimIdentity {
	return SimIdentity{
		MREnclave: [32]byte{1, 2, 3},
		MRSigner:  [32]byte{4, 5, 6},
		ProductID: 7,
		SVN:       9,
	}
}

func TestSimRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sim-platform-key.pem")
	key, err := LoadOrCreateSimPlatformKey(path)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewSimIssuer(testSimIdentity(), key)
	if err != nil {
		t.Fatal(err)
	}
	var _ Issuer = iss
	var _ Issuer = GramineIssuer{}
	rd := [64]byte{0xaa, 0xbb}
	ev, err := iss.Issue(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	wire, err := ev.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Evidence
	if err := got.UnmarshalBinary(wire); err != nil {
		t.Fatal(err)
	}
	c, err := Verifier{}.Verify(context.Background(), &got, VerifyOptions{AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{&key.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	id := testSimIdentity()
	if c.Type != EvidenceSimulated || c.MREnclave != id.MREnclave || c.MRSigner != id.MRSigner || c.ProductID != 7 || c.SVN != 9 || c.Debug || c.ReportData != rd {
		t.Fatalf("claims %+v", c)
	}
	if !strings.Contains(c.String(), "simulated") {
		t.Errorf("String() = %q does not say simulated", c.String())
	}
	mr := id.MREnclave
	pol := &Policy{MREnclaves: [][32]byte{mr}, AllowSimulation: true, ReportData: &rd}
	if err := pol.Check(c); err != nil {
		t.Errorf("policy allowing simulation: %v", err)
	}
	pol.AllowSimulation = false
	var pe *PolicyError
	if err := pol.Check(c); !errors.As(err, &pe) || pe.Rule != RuleSimulation {
		t.Errorf("policy refusing simulation: %v", err)
	}

	// Verify refuses simulated evidence unless told otherwise.
	_, err = Verify(context.Background(), ev, VerifyOptions{SimPlatformKeys: []*ecdsa.PublicKey{&key.PublicKey}})
	wantStep(t, err, StepSimulationRefused, "simulation is not allowed")

	// Another machine's key is not trusted.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err = Verify(context.Background(), ev, VerifyOptions{AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{&other.PublicKey}})
	wantStep(t, err, StepSimPlatformKey, "untrusted")
	if !iss.PlatformPublicKey().Equal(&key.PublicKey) || iss.Identity() != testSimIdentity() {
		t.Error("issuer accessors")
	}
	// But it can be trusted explicitly.
	if _, err := Verify(context.Background(), ev, VerifyOptions{AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{&other.PublicKey, &key.PublicKey}}); err != nil {
		t.Error(err)
	}
	// No key trusted: refused (nothing is looked up on the machine).
	_, err = Verify(context.Background(), ev, VerifyOptions{AllowSimulation: true})
	wantStep(t, err, StepSimPlatformKey, "no simulation platform key")

	// Every flipped bit is rejected.
	for i := range ev.Quote {
		mut := bytes.Clone(ev.Quote)
		mut[i] ^= 1 << (i % 8)
		if _, err := Verify(context.Background(), &Evidence{Type: EvidenceSimulated, Quote: mut}, VerifyOptions{AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{&key.PublicKey}}); err == nil {
			t.Fatalf("flip at %d accepted", i)
		}
	}
	// A simulated quote is not an SGX quote.
	_, err = Verify(context.Background(), &Evidence{Type: EvidenceSGXDCAP, Quote: ev.Quote}, VerifyOptions{})
	wantStep(t, err, StepParse)
}

func TestSimDebugAndNoKey(t *testing.T) {
	if _, err := NewSimIssuer(testSimIdentity(), nil); err == nil {
		t.Fatal("issuer without a key")
	}
	root, err := NewEphemeralSimulationRoot()
	if err != nil {
		t.Fatal(err)
	}
	id := testSimIdentity()
	id.Debug = true
	ev, err := root.Issuer(id).Issue(context.Background(), [64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(context.Background(), ev, VerifyOptions{AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{root.PlatformPublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Debug {
		t.Error("debug not claimed")
	}
	pol := &Policy{MRSigner: &id.MRSigner, ProductID: 7, AllowSimulation: true}
	var pe *PolicyError
	if err := pol.Check(c); !errors.As(err, &pe) || pe.Rule != RuleDebug {
		t.Errorf("debug refused: %v", err)
	}
}

func TestGramineIssuer(t *testing.T) {
	quote := readTestdata(t, "sgx/phala_sgx_quote.dat")
	root := t.TempDir()
	for name, content := range map[string][]byte{"user_report_data": nil, "quote": quote, "attestation_type": []byte("dcap")} {
		if err := os.WriteFile(filepath.Join(root, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var rd [64]byte
	copy(rd[:], "Hello, world!")
	ev, err := GramineIssuer{Root: root}.Issue(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != EvidenceSGXDCAP || !bytes.Equal(ev.Quote, quote) {
		t.Fatal("wrong evidence")
	}
	written, _ := os.ReadFile(filepath.Join(root, "user_report_data"))
	if !bytes.Equal(written, rd[:]) {
		t.Errorf("user_report_data = %q", written)
	}
	c, err := Verify(context.Background(), ev, VerifyOptions{})
	if err != nil || c.ReportData != rd {
		t.Fatalf("verify Gramine evidence: %v", err)
	}
	// The quote does not carry other report data: refused as stale.
	if _, err := (GramineIssuer{Root: root}).Issue(context.Background(), [64]byte{1}); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Errorf("stale quote: %v", err)
	}
	// Not a DCAP setup.
	os.WriteFile(filepath.Join(root, "attestation_type"), []byte("none"), 0o600)
	if _, err := (GramineIssuer{Root: root}).Issue(context.Background(), rd); err == nil || !strings.Contains(err.Error(), "none") {
		t.Errorf("attestation type none: %v", err)
	}
	// No /dev/attestation at all.
	if _, err := (GramineIssuer{Root: filepath.Join(root, "absent")}).Issue(context.Background(), rd); err == nil {
		t.Error("missing root accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (GramineIssuer{Root: root}).Issue(ctx, rd); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
}

func TestEvidenceEncodingStrict(t *testing.T) {
	ev := &Evidence{Type: EvidenceSGXDCAP, Quote: []byte("quote")}
	b, err := ev.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Evidence
	if err := got.UnmarshalBinary(b); err != nil || got.Type != ev.Type || !bytes.Equal(got.Quote, ev.Quote) {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	bad := map[string][]byte{
		"trailing":  append(bytes.Clone(b), 0),
		"truncated": b[:len(b)-1],
		"short":     b[:5],
		"magic":     append([]byte("XLEV"), b[4:]...),
		"version":   append(append([]byte("CLEV"), 2), b[5:]...),
		"type":      append(append([]byte("CLEV\x01"), 9), b[6:]...),
	}
	for name, in := range bad {
		if err := got.UnmarshalBinary(in); !errors.Is(err, ErrMalformedEvidence) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := (&Evidence{Type: "tdx"}).MarshalBinary(); err == nil {
		t.Error("unknown type marshalled")
	}
	if d, err := DetectEvidence(b); err != nil || d.Type != EvidenceSGXDCAP {
		t.Errorf("detect encoded: %v", err)
	}
	if d, _ := DetectEvidence([]byte(simQuoteMagic + "xx")); d.Type != EvidenceSimulated {
		t.Error("detect sim")
	}
	_, err = Verify(context.Background(), &Evidence{Type: "tdx"}, VerifyOptions{})
	wantStep(t, err, StepEvidence)
}

// TestSimulationRootCreatedOnce: concurrent first uses of one directory
// agree on one platform key and one seal secret, written with mode 0600
// and no temporary file left behind.
func TestSimulationRootCreatedOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cloister")
	var wg sync.WaitGroup
	roots := make([]*SimulationRoot, 8)
	errs := make([]error, 8)
	for i := range roots {
		wg.Go(func() { roots[i], errs[i] = LoadOrCreateSimulationRoot(dir) })
	}
	wg.Wait()
	for i := range roots {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !roots[i].PlatformPublicKey().Equal(roots[0].PlatformPublicKey()) || !bytes.Equal(roots[i].SealSecret(), roots[0].SealSecret()) {
			t.Fatal("concurrent creators disagree")
		}
	}
	if len(roots[0].SealSecret()) != SimSealSecretSize {
		t.Fatalf("seal secret is %d bytes", len(roots[0].SealSecret()))
	}
	for _, name := range []string{SimPlatformKeyFile, SimSealSecretFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("temporary files left: %d entries", len(entries))
	}
	again, err := LoadOrCreateSimulationRoot(dir)
	if err != nil || !again.PlatformPublicKey().Equal(roots[0].PlatformPublicKey()) || !bytes.Equal(again.SealSecret(), roots[0].SealSecret()) {
		t.Fatalf("reload differs: %v", err)
	}
	// The root's issuer signs with the root's key, which verifiers trust
	// only when told to.
	ev, err := again.Issuer(testSimIdentity()).Issue(context.Background(), [64]byte{9})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(context.Background(), ev, VerifyOptions{AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{roots[3].PlatformPublicKey()}}); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(context.Background(), ev, VerifyOptions{AllowSimulation: true})
	wantStep(t, err, StepSimPlatformKey)
	os.WriteFile(filepath.Join(dir, SimSealSecretFile), []byte("short"), 0o600)
	if _, err := LoadOrCreateSimulationRoot(dir); err == nil || !strings.Contains(err.Error(), SimSealSecretFile) {
		t.Fatalf("corrupt seal secret: %v", err)
	}
	if _, err := LoadOrCreateSimulationRoot(""); err == nil {
		t.Fatal("empty directory accepted")
	}
}

func TestEphemeralSimulationRoot(t *testing.T) {
	a, err := NewEphemeralSimulationRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewEphemeralSimulationRoot()
	if a.PlatformPublicKey().Equal(b.PlatformPublicKey()) || bytes.Equal(a.SealSecret(), b.SealSecret()) {
		t.Fatal("two ephemeral roots share keys")
	}
	ev, _ := a.Issuer(testSimIdentity()).Issue(context.Background(), [64]byte{})
	_, err = Verify(context.Background(), ev, VerifyOptions{AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{b.PlatformPublicKey()}})
	wantStep(t, err, StepSimPlatformKey)
}
