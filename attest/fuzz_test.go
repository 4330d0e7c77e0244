package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"testing"
)

// seedFile returns a test data file, or nil when the shared test data is
// absent (fuzz targets then run on their other seeds).
func seedFile(f *testing.F, rel string) []byte {
	dir, err := os.Getwd()
	if err != nil {
		return nil
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir = parent
	}
	b, err := os.ReadFile(filepath.Join(dir, "..", "shared", "testdata", rel))
	if err != nil {
		return nil
	}
	return b
}

var quoteSeeds = []string{
	"sgx/mobilecoin_hw_quote.dat", "sgx/phala_sgx_quote.dat", "sgx/trustee_occlum_quote.dat",
	"sgx/automata_quotev3.dat", "sgx/synthetic/intel_qvl_sample_quote.dat",
	"tdx/go-tdx-guest_tdx_prod_quote_SPR_E4_v4.dat",
}

// The real quotes and collateral are kilobytes long; Go's fuzzer spends
// minutes minimizing each new input of that size. Fuzz with
//
//	go test -run '^$' -fuzz '^FuzzParseQuote$' -fuzzminimizetime 1x ./attest
//
// (and likewise for the other targets).

func FuzzParseQuote(f *testing.F) {
	for _, s := range quoteSeeds {
		if b := seedFile(f, s); b != nil {
			f.Add(b)
		}
	}
	f.Add([]byte{3, 0, 2, 0})
	// Only parsing is fuzzed: under coverage instrumentation the P-256
	// arithmetic of a full verification is too slow to explore anything.
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuote(b)
		if err != nil {
			return
		}
		if len(q.Signature) != 64 || len(q.AttestKey) != 64 || len(q.QEReportRaw) != ReportBodySize || len(q.QEReportSig) != 64 || len(q.Signed) != QuoteHeaderSize+ReportBodySize {
			t.Fatalf("field sizes wrong: %d %d %d %d", len(q.Signature), len(q.AttestKey), len(q.QEReportRaw), len(q.QEReportSig))
		}
		if got := signedRegionEnd(q) + 6 + len(q.CertData); got != len(b) {
			t.Fatalf("fields cover %d of %d bytes", got, len(b))
		}
		if p, err := q.pckChainPEM(); err == nil {
			if certs, err := parsePEMChain(p); err == nil && len(certs) == 0 {
				t.Fatal("empty chain parsed")
			}
		}
	})
}

// FuzzVerifyQuote runs the whole verification on mutated real quotes: none
// may verify unless it is byte-for-byte a seed.
func FuzzVerifyQuote(f *testing.F) {
	var seeds [][]byte
	for _, s := range quoteSeeds[:4] {
		if b := seedFile(f, s); b != nil {
			f.Add(b)
			seeds = append(seeds, b)
		}
	}
	if len(seeds) == 0 {
		// Without the real quotes the check below cannot tell a genuine
		// quote in the cached corpus from a forged one.
		f.Skip("the shared SGX quotes are absent")
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Verify(context.Background(), dcap(b), VerifyOptions{At: phalaAt})
		if err != nil {
			return
		}
		q, _ := ParseQuote(b)
		for _, s := range seeds {
			if sq, _ := ParseQuote(s); bytes.Equal(sq.Signed, q.Signed) {
				return // same signed content, e.g. another certification data encoding
			}
		}
		t.Fatalf("mutated quote verified: %v", c)
	})
}

func FuzzParseCollateral(f *testing.F) {
	if b := seedFile(f, "sgx/phala_sgx_quote_collateral.json"); b != nil {
		f.Add(b)
	}
	f.Add([]byte(`{"tcb_info":"{}","qe_identity":"{}"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCollateralBundle(b)
		if err != nil {
			return
		}
		if c.PCKCRL == nil || len(c.TCBInfoSignature) != 64 || len(c.QEIdentitySignature) != 64 || len(c.TCBInfoIssuerChain) == 0 {
			t.Fatal("incomplete collateral parsed")
		}
		_ = ParseCollateral(c)
	})
}

// FuzzTCBEvaluation fuzzes the TCB Info and QE Identity JSON values behind a
// valid signature check, which a fuzzer cannot reach through the bundle.
func FuzzTCBEvaluation(f *testing.F) {
	if b := seedFile(f, "sgx/phala_sgx_quote_collateral.json"); b != nil {
		var m map[string]string
		if json.Unmarshal(b, &m) == nil {
			f.Add([]byte(m["tcb_info"]), []byte(m["qe_identity"]))
		}
	}
	for _, name := range []string{"sgx/automata_collateral_2025-08/sgx_tcbinfov3_00606a000000.json", "sgx/automata_collateral_2025-08/sgx_qeidentity_v4.json"} {
		if b := seedFile(f, name); b != nil {
			f.Add(b, b)
		}
	}
	var qeReport ReportBody
	qeReport.MRSigner = [32]byte{0x8c, 0x4f}
	qeReport.ISVProdID = 1
	qeReport.ISVSVN = 8
	ext := &PCKExtensions{PCESVN: 13, CompSVNs: [16]int{14, 14, 3, 3, 255, 255, 1}}
	f.Fuzz(func(t *testing.T, tcbInfo, qeIdentity []byte) {
		if ti, err := parseTCBInfo(tcbInfo); err == nil {
			if l, err := matchTCBLevel(ti, ext); err == nil && !l.TCBStatus.Valid() {
				t.Fatalf("invalid status %q accepted", l.TCBStatus)
			}
		}
		if qi, err := parseQEIdentity(qeIdentity); err == nil {
			if l, err := matchQEIdentity(qi, &qeReport); err == nil && !l.TCBStatus.Valid() {
				t.Fatalf("invalid QE status %q accepted", l.TCBStatus)
			}
		}
	})
}

func FuzzPCKExtensions(f *testing.F) {
	for _, s := range quoteSeeds[:4] {
		b := seedFile(f, s)
		if b == nil {
			continue
		}
		q, err := ParseQuote(b)
		if err != nil {
			continue
		}
		p, _ := q.pckChainPEM()
		certs, err := parsePEMChain(p)
		if err != nil {
			continue
		}
		for _, e := range certs[0].Extensions {
			if e.Id.Equal(oidSGX()) {
				f.Add(e.Value)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ext, err := parseSGXExtension(b)
		if err != nil {
			return
		}
		for _, v := range ext.CompSVNs {
			if v < 0 || v > 65535 {
				t.Fatalf("component SVN %d out of range", v)
			}
		}
	})
}

func FuzzEvidence(f *testing.F) {
	e := &Evidence{Type: EvidenceSGXDCAP, Quote: []byte("quote")}
	b, _ := e.MarshalBinary()
	f.Add(b)
	f.Add([]byte("CLEV\x01\x01\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Evidence
		if err := e.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := e.MarshalBinary()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("round trip: %v %x vs %x", err, out, b)
		}
	})
}

func FuzzSimQuote(f *testing.F) {
	key, err := LoadOrCreateSimPlatformKey(filepath.Join(f.TempDir(), "k.pem"))
	if err != nil {
		f.Fatal(err)
	}
	iss, _ := NewSimIssuer(testSimIdentity(), key)
	ev, err := iss.Issue(context.Background(), [64]byte{1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ev.Quote)
	// Parsing and the key check are fuzzed; signatures are checked by
	// TestSimRoundTrip (instrumented P-256 arithmetic is too slow here).
	opts := VerifyOptions{AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{{Curve: elliptic.P256(), X: big.NewInt(1), Y: big.NewInt(1)}}}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseSimQuote(b)
		if err != nil {
			return
		}
		if len(q.PlatformKey) != 65 || len(q.Signature) != 64 {
			t.Fatal("bad field sizes")
		}
		if _, err := Verify(context.Background(), &Evidence{Type: EvidenceSimulated, Quote: b}, opts); err == nil {
			t.Fatal("quote under an untrusted key verified")
		}
	})
}

func FuzzPolicyJSON(f *testing.F) {
	f.Add([]byte(`{"mrenclaves":["33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"],"accepted_tcb":["UpToDate"]}`))
	f.Add([]byte(`{"mrsigner":"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6","product_id":1,"min_svn":2,"allow_debug":true,"allow_simulation":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := ParsePolicy(out)
		if err != nil {
			t.Fatalf("re-parse %s: %v", out, err)
		}
		out2, _ := json.Marshal(p2)
		if !bytes.Equal(out, out2) {
			t.Fatalf("not stable: %s vs %s", out, out2)
		}
	})
}
