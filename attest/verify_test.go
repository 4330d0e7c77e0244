package attest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func dcap(q []byte) *Evidence { return &Evidence{Type: EvidenceSGXDCAP, Quote: q} }

func mustHex32(t testing.TB, s string) [32]byte {
	t.Helper()
	var out [32]byte
	if err := decodeHexInto(out[:], s); err != nil {
		t.Fatal(err)
	}
	return out
}

func stepNames(steps []StepResult) []string {
	var out []string
	for _, s := range steps {
		out = append(out, s.Step+"="+s.Outcome)
	}
	return out
}

func TestRealQuotesVerifyToIntelRoot(t *testing.T) {
	for _, rq := range realQuotes {
		t.Run(filepath.Base(rq.file), func(t *testing.T) {
			raw := readTestdata(t, rq.file)
			// Default evaluation time (now): the PCK chains are valid until 2029 or later.
			c, err := Verify(context.Background(), dcap(raw), VerifyOptions{})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Type != EvidenceSGXDCAP {
				t.Errorf("type = %q", c.Type)
			}
			if got := hex.EncodeToString(c.MREnclave[:]); got != rq.mrenclave {
				t.Errorf("MRENCLAVE = %s, want %s", got, rq.mrenclave)
			}
			if got := hex.EncodeToString(c.MRSigner[:]); got != rq.mrsigner {
				t.Errorf("MRSIGNER = %s, want %s", got, rq.mrsigner)
			}
			if c.Debug != rq.debug {
				t.Errorf("debug = %t, want %t", c.Debug, rq.debug)
			}
			var wantRD [64]byte
			copy(wantRD[:], rq.reportData)
			if c.ReportData != wantRD {
				t.Errorf("report data = %q, want %q", c.ReportData, wantRD)
			}
			if c.ProductID != 0 || c.SVN != 0 {
				t.Errorf("product %d svn %d, want 0 0", c.ProductID, c.SVN)
			}
			if c.TCBStatus != TCBStatusUnknown || c.CollateralChecked {
				t.Errorf("TCB status %q without collateral", c.TCBStatus)
			}
			want := []string{"parse=ok", "pck chain=ok", "qe report signature=ok", "qe report data=ok", "quote signature=ok", "tcb status=skipped: no collateral given"}
			if got := stepNames(c.Steps); !slices.Equal(got, want) {
				t.Errorf("steps = %q, want %q", got, want)
			}
			if s := c.String(); strings.Contains(s, "simulated") || !strings.Contains(s, rq.mrenclave) {
				t.Errorf("String() = %q", s)
			}
			q, err := ParseQuote(raw)
			if err != nil {
				t.Fatal(err)
			}
			if q.CertType != 5 || len(q.QEAuthData) != 32 || q.QEAuthData[31] != 0x1f {
				t.Errorf("cert type %d, QE auth data %x", q.CertType, q.QEAuthData)
			}
			if got := hex.EncodeToString(q.QEReport.MRSigner[:]); got != "8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff" {
				t.Errorf("QE MRSIGNER = %s", got)
			}
		})
	}
}

func loadCollateral(t testing.TB, rel string) *Collateral {
	t.Helper()
	c, err := LoadCollateral(filepath.Join(testdataDir(t), rel))
	if err != nil {
		t.Fatalf("LoadCollateral(%s): %v", rel, err)
	}
	return c
}

func TestPhalaCollateralTCBStatus(t *testing.T) {
	col := loadCollateral(t, "sgx/phala_sgx_quote_collateral.json")
	raw := readTestdata(t, "sgx/phala_sgx_quote.dat")
	for _, at := range []time.Time{phalaAt, time.Date(2025, 6, 19, 10, 56, 12, 0, time.UTC), time.Date(2025, 7, 19, 10, 0, 0, 0, time.UTC)} {
		c, err := Verify(context.Background(), dcap(raw), VerifyOptions{At: at, Collateral: col})
		if err != nil {
			t.Fatalf("at %s: %v", at, err)
		}
		if c.TCBStatus != TCBConfigurationAndSWHardeningNeeded || c.PlatformTCBStatus != TCBConfigurationAndSWHardeningNeeded {
			t.Errorf("TCB status %s (platform %s), want ConfigurationAndSWHardeningNeeded", c.TCBStatus, c.PlatformTCBStatus)
		}
		if !slices.Equal(c.AdvisoryIDs, []string{"INTEL-SA-00289", "INTEL-SA-00615"}) {
			t.Errorf("advisories %q", c.AdvisoryIDs)
		}
		if c.QETCBStatus != TCBUpToDate || len(c.QEAdvisoryIDs) != 0 {
			t.Errorf("QE TCB %s %q, want UpToDate", c.QETCBStatus, c.QEAdvisoryIDs)
		}
		if c.FMSPC != "00a067110000" || !c.CollateralChecked {
			t.Errorf("FMSPC %q, checked %t", c.FMSPC, c.CollateralChecked)
		}
		if !c.TCBDate.Equal(time.Date(2024, 3, 13, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("TCB date %s", c.TCBDate)
		}
		for _, s := range c.Steps {
			if s.Outcome != "ok" && s.Step != StepTCBEvalNumbers {
				t.Errorf("step %s: %s", s.Step, s.Outcome)
			}
		}
		if c.TCBEvaluationDataNumber != 17 || c.QETCBEvaluationDataNumber != 17 || c.LatestTCBEvaluationDataNumber != 0 {
			t.Errorf("TCB evaluation data numbers %d %d %d", c.TCBEvaluationDataNumber, c.QETCBEvaluationDataNumber, c.LatestTCBEvaluationDataNumber)
		}
		if len(c.Steps) != 15 {
			t.Errorf("steps %q", stepNames(c.Steps))
		}
	}
}

func TestAutomataCollateralDir(t *testing.T) {
	col := loadCollateral(t, "sgx/automata_collateral_2025-08")
	if col.RootCACRL != nil || col.PCKCRL == nil || len(col.TCBInfoIssuerChain) != 1 {
		t.Fatalf("collateral dir: root CRL %v, PCK CRL %v, signers %d", col.RootCACRL != nil, col.PCKCRL != nil, len(col.TCBInfoIssuerChain))
	}
	raw := readTestdata(t, "sgx/automata_quotev3.dat")
	// From the TCB Info's issue date (the PCK CRL was issued half an hour
	// later, which is fine: it is newer knowledge) to the QE Identity's next update.
	for _, at := range []time.Time{automataAt, time.Date(2025, 8, 15, 5, 8, 18, 0, time.UTC), time.Date(2025, 9, 14, 4, 36, 46, 0, time.UTC)} {
		c, err := Verify(context.Background(), dcap(raw), VerifyOptions{At: at, Collateral: col})
		if err != nil {
			t.Fatalf("at %s: %v", at, err)
		}
		// The PCK's TCB reaches the first level of the TCB Info (2024-03-13,
		// SWHardeningNeeded); its QE (ISVSVN 8) is UpToDate.
		if c.TCBStatus != TCBSWHardeningNeeded || !slices.Equal(c.AdvisoryIDs, []string{"INTEL-SA-00615"}) {
			t.Errorf("TCB %s %q, want SWHardeningNeeded [INTEL-SA-00615]", c.TCBStatus, c.AdvisoryIDs)
		}
		if c.QETCBStatus != TCBUpToDate {
			t.Errorf("QE TCB %s", c.QETCBStatus)
		}
		if c.FMSPC != "00606a000000" {
			t.Errorf("FMSPC %s", c.FMSPC)
		}
		if c.TCBEvaluationDataNumber != 17 || c.LatestTCBEvaluationDataNumber != 20 {
			t.Errorf("TCB evaluation data number %d, latest %d; want 17, 20", c.TCBEvaluationDataNumber, c.LatestTCBEvaluationDataNumber)
		}
		if !slices.Contains(stepNames(c.Steps), "root ca crl=skipped: collateral has no root CA CRL") || !slices.Contains(stepNames(c.Steps), "tcb evaluation numbers=ok") {
			t.Errorf("steps %q", stepNames(c.Steps))
		}
	}
}

func TestOcclumWithAutomataCollateral(t *testing.T) {
	// The occlum quote's platform has the same FMSPC (00606a000000) as the
	// automata collateral, with an older TCB (PCK issued 2023): OutOfDate.
	col := loadCollateral(t, "sgx/automata_collateral_2025-08")
	c, err := Verify(context.Background(), dcap(readTestdata(t, "sgx/trustee_occlum_quote.dat")), VerifyOptions{At: automataAt, Collateral: col})
	if err != nil {
		t.Fatal(err)
	}
	if c.TCBStatus != TCBOutOfDate || c.QETCBStatus != TCBUpToDate || !slices.Contains(c.AdvisoryIDs, "INTEL-SA-00615") {
		t.Errorf("TCB %s QE %s advisories %q", c.TCBStatus, c.QETCBStatus, c.AdvisoryIDs)
	}
	t.Logf("occlum with automata collateral: %v (TCB date %s)", c, c.TCBDate.Format(time.DateOnly))
}

func TestPCKExtensions(t *testing.T) {
	q, err := ParseQuote(readTestdata(t, "sgx/automata_quotev3.dat"))
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, _ := q.pckChainPEM()
	certs, err := parsePEMChain(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := ParsePCKExtensions(certs[0])
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(ext.FMSPC[:]) != "00606a000000" || ext.PCEID != [2]byte{} {
		t.Errorf("FMSPC %x PCEID %x", ext.FMSPC, ext.PCEID)
	}
	if ext.PCESVN < 13 || ext.CompSVNs[0] < 14 || len(ext.CPUSVN) != 16 {
		t.Errorf("TCB %v PCESVN %d CPUSVN %x", ext.CompSVNs, ext.PCESVN, ext.CPUSVN)
	}
	if _, err := ParsePCKExtensions(certs[1]); err == nil {
		t.Error("the PCK CA certificate has no SGX extension, yet it parsed")
	}
}

func wantStep(t *testing.T, err error, step string, msg ...string) {
	t.Helper()
	var ve *VerificationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v is not a *VerificationError", err)
	}
	if ve.Step != step {
		t.Fatalf("failed step %q (%v), want %q", ve.Step, err, step)
	}
	for _, m := range msg {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

func TestExpiredCollateralRejected(t *testing.T) {
	raw := readTestdata(t, "sgx/phala_sgx_quote.dat")
	col := loadCollateral(t, "sgx/phala_sgx_quote_collateral.json")
	_, err := Verify(context.Background(), dcap(raw), VerifyOptions{Collateral: col})
	wantStep(t, err, StepCollateralValidity, "TCB Info expired at 2025-07-19T10:56:11Z", "QE Identity expired at 2025-07-19T10:01:18Z", "PCK CRL expired at 2025-07-19T10:23:18Z")
	t.Log(err)

	// One second after the QE Identity's next update, only it has expired.
	_, err = Verify(context.Background(), dcap(raw), VerifyOptions{At: time.Date(2025, 7, 19, 10, 1, 19, 0, time.UTC), Collateral: col})
	wantStep(t, err, StepCollateralValidity, "collateral not current at evaluation time 2025-07-19T10:01:19Z: QE Identity expired at 2025-07-19T10:01:18Z")
	if strings.Contains(err.Error(), "TCB Info") {
		t.Errorf("TCB Info named as expired: %v", err)
	}

	raw = readTestdata(t, "sgx/automata_quotev3.dat")
	col = loadCollateral(t, "sgx/automata_collateral_2025-08")
	_, err = Verify(context.Background(), dcap(raw), VerifyOptions{Collateral: col})
	wantStep(t, err, StepCollateralValidity, "TCB Info expired at 2025-09-14T05:08:18Z")
}

func TestMismatchedCollateralRejected(t *testing.T) {
	automata := readTestdata(t, "sgx/automata_quotev3.dat")
	phala := readTestdata(t, "sgx/phala_sgx_quote.dat")
	phalaCol := loadCollateral(t, "sgx/phala_sgx_quote_collateral.json")
	automataCol := loadCollateral(t, "sgx/automata_collateral_2025-08")

	// The automata PCK comes from the Platform CA, the phala CRL is the Processor CA's.
	_, err := Verify(context.Background(), dcap(automata), VerifyOptions{At: phalaAt, Collateral: phalaCol})
	wantStep(t, err, StepPCKCRL, "Intel SGX PCK Processor CA", "Intel SGX PCK Platform CA")

	// Same CA (Processor), other FMSPC.
	mobilecoin := readTestdata(t, "sgx/mobilecoin_hw_quote.dat")
	_, err = Verify(context.Background(), dcap(mobilecoin), VerifyOptions{At: phalaAt, Collateral: phalaCol})
	wantStep(t, err, StepTCBInfo, "FMSPC 00A067110000", "00906ed50000")
	_ = automataCol

	// A PCK CRL with the right issuer name but missing: error.
	noCRL := *phalaCol
	noCRL.PCKCRL = nil
	_, err = Verify(context.Background(), dcap(phala), VerifyOptions{At: phalaAt, Collateral: &noCRL})
	wantStep(t, err, StepPCKCRL, "no PCK CRL")
}

func TestTamperedTCBEvalNumbersRejected(t *testing.T) {
	col := loadCollateral(t, "sgx/automata_collateral_2025-08")
	c := *col
	c.TCBEvaluationNumbers = bytes.Replace(col.TCBEvaluationNumbers, []byte(`"tcbEvaluationDataNumber":20`), []byte(`"tcbEvaluationDataNumber":17`), 1)
	_, err := Verify(context.Background(), dcap(readTestdata(t, "sgx/automata_quotev3.dat")), VerifyOptions{At: automataAt, Collateral: &c})
	wantStep(t, err, StepTCBEvalNumbers, "signature does not verify")
}

func TestTamperedCollateralRejected(t *testing.T) {
	raw := readTestdata(t, "sgx/phala_sgx_quote.dat")
	col := loadCollateral(t, "sgx/phala_sgx_quote_collateral.json")

	c := *col
	c.TCBInfo = bytes.Replace(col.TCBInfo, []byte(`"tcbStatus":"ConfigurationAndSWHardeningNeeded"`), []byte(`"tcbStatus":"UpToDate"                         `), 1)
	_, err := Verify(context.Background(), dcap(raw), VerifyOptions{At: phalaAt, Collateral: &c})
	wantStep(t, err, StepTCBInfoSignature, "signature does not verify")

	c = *col
	c.QEIdentity = bytes.Clone(col.QEIdentity)
	c.QEIdentity[len(c.QEIdentity)/2] ^= 1
	_, err = Verify(context.Background(), dcap(raw), VerifyOptions{At: phalaAt, Collateral: &c})
	wantStep(t, err, StepQEIdentitySig)

	c = *col
	c.TCBInfoSignature = bytes.Clone(col.TCBInfoSignature)
	c.TCBInfoSignature[5] ^= 0x80
	_, err = Verify(context.Background(), dcap(raw), VerifyOptions{At: phalaAt, Collateral: &c})
	wantStep(t, err, StepTCBInfoSignature)

	// Collateral signed under another root: the signing chain is the PCK chain's CA (wrong issuer for TCB).
	c = *col
	c.TCBInfoIssuerChain = col.PCKCRLIssuerChain
	_, err = Verify(context.Background(), dcap(raw), VerifyOptions{At: phalaAt, Collateral: &c})
	wantStep(t, err, StepTCBInfoSignature, "not by the Intel SGX TCB Signing certificate")
}

// syntheticAsType5 rebuilds Intel's sample quote with certification data
// type 5 holding the sample PCK chain, so the chain check is what rejects it.
func syntheticAsType5(t *testing.T) []byte {
	raw := readTestdata(t, "sgx/synthetic/intel_qvl_sample_quote.dat")
	q, err := ParseQuote(raw)
	if err != nil {
		t.Fatalf("parse synthetic quote: %v", err)
	}
	chain := append(readTestdata(t, "sgx/synthetic/intel_qvl_sample_pckCert.pem"), readTestdata(t, "sgx/synthetic/intel_qvl_sample_pckSignChain.pem")...)
	end := len(raw) - len(q.CertData) - 6
	out := bytes.Clone(raw[:end])
	out = binary.LittleEndian.AppendUint16(out, 5)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(chain)))
	out = append(out, chain...)
	binary.LittleEndian.PutUint32(out[QuoteHeaderSize+ReportBodySize:], uint32(len(out)-QuoteHeaderSize-ReportBodySize-4))
	return out
}

func TestSyntheticSampleRejected(t *testing.T) {
	raw := readTestdata(t, "sgx/synthetic/intel_qvl_sample_quote.dat")
	_, err := Verify(context.Background(), dcap(raw), VerifyOptions{})
	wantStep(t, err, StepPCKChain, "certification data type 1")

	t5 := syntheticAsType5(t)
	at := time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err = Verify(context.Background(), dcap(t5), VerifyOptions{At: at})
	// The sample's chain carries its test root, which only shares the real
	// root's name: refused before any signature is looked at.
	wantStep(t, err, StepPCKChain, "not the pinned Intel SGX Root CA")
	if !errors.Is(err, ErrRootNotPinned) {
		t.Errorf("error %v is not ErrRootNotPinned", err)
	}

	// Under the sample's own test root everything verifies: the rejection
	// above is the root's doing and nothing else.
	block, _ := pem.Decode(readTestdata(t, "sgx/synthetic/intel_qvl_sample_trustedRootCaCert.pem"))
	testRoot, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(context.Background(), dcap(t5), VerifyOptions{At: at, TestOnlyRootCA: testRoot}); err != nil {
		t.Fatalf("under the test root: %v", err)
	}
}

// signedRegionEnd is the end of the bytes covered by a signature or by the QE
// report data binding: everything up to the certification data.
func signedRegionEnd(q *Quote) int {
	return QuoteHeaderSize + ReportBodySize + 4 + sigFixedPartLength + 2 + len(q.QEAuthData)
}

func TestBitFlipsRejected(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, rq := range realQuotes {
		t.Run(filepath.Base(rq.file), func(t *testing.T) {
			raw := readTestdata(t, rq.file)
			q, err := ParseQuote(raw)
			if err != nil {
				t.Fatal(err)
			}
			end := signedRegionEnd(q)
			stride := 2
			if testing.Short() {
				stride = 29
			}
			n := 0
			for pos := rng.IntN(stride); pos < end; pos += stride {
				mut := bytes.Clone(raw)
				mut[pos] ^= 1 << rng.IntN(8)
				if c, err := Verify(context.Background(), dcap(mut), VerifyOptions{At: phalaAt}); err == nil {
					t.Fatalf("flip at byte %d accepted: %v", pos, c)
				}
				n++
			}
			t.Logf("%d flips over %d signed bytes rejected", n, end)
		})
	}
}

func TestBitFlipsNameTheStep(t *testing.T) {
	raw := readTestdata(t, "sgx/phala_sgx_quote.dat")
	q, _ := ParseQuote(raw)
	sigStart := QuoteHeaderSize + ReportBodySize + 4
	cases := []struct {
		pos  int
		step string
	}{
		{QuoteHeaderSize + 64, StepQuoteSignature},                   // MRENCLAVE
		{QuoteHeaderSize + 320, StepQuoteSignature},                  // report data
		{40, StepQuoteSignature},                                     // header user data
		{0, StepParse},                                               // version
		{sigStart + 3, StepQuoteSignature},                           // signature
		{sigStart + 70, StepQEReportData},                            // attestation key
		{sigStart + 128 + 10, StepQEReportSignature},                 // QE report
		{sigStart + 128 + ReportBodySize + 1, StepQEReportSignature}, // QE report signature
		{signedRegionEnd(q) - 1, StepQEReportData},                   // QE auth data
		{signedRegionEnd(q) + 50, StepPCKChain},                      // PEM chain
	}
	for _, tc := range cases {
		mut := bytes.Clone(raw)
		mut[tc.pos] ^= 0x10
		_, err := Verify(context.Background(), dcap(mut), VerifyOptions{At: phalaAt})
		var ve *VerificationError
		if !errors.As(err, &ve) || ve.Step != tc.step {
			t.Errorf("flip at %d: %v, want step %q", tc.pos, err, tc.step)
		}
	}
}

func TestParseQuoteBounds(t *testing.T) {
	raw := readTestdata(t, "sgx/phala_sgx_quote.dat")
	for n := 0; n < len(raw); n += 37 {
		if _, err := ParseQuote(raw[:n]); err == nil {
			t.Fatalf("truncated quote (%d bytes) parsed", n)
		}
	}
	if _, err := ParseQuote(append(bytes.Clone(raw), 0)); err == nil {
		t.Fatal("quote with a trailing byte parsed")
	}
	mut := bytes.Clone(raw)
	binary.LittleEndian.PutUint32(mut[QuoteHeaderSize+ReportBodySize:], 0xffffffff)
	if _, err := ParseQuote(mut); err == nil {
		t.Fatal("huge signature length parsed")
	}
	mut = bytes.Clone(raw)
	binary.LittleEndian.PutUint16(mut[QuoteHeaderSize+ReportBodySize+4+sigFixedPartLength:], 0xffff)
	if _, err := ParseQuote(mut); err == nil {
		t.Fatal("huge QE auth data length parsed")
	}
	for _, tdx := range []string{"tdx/go-tdx-guest_tdx_prod_quote_SPR_E4_v4.dat", "tdx/trustee_tdx_quote_5_v5.dat"} {
		_, err := Verify(context.Background(), dcap(readTestdata(t, tdx)), VerifyOptions{})
		wantStep(t, err, StepParse, "not supported")
	}
}

func TestNoPCKChainNUL(t *testing.T) {
	// Phala's and automata's chains end with a NUL, the others do not; both
	// verify (see TestRealQuotesVerifyToIntelRoot). Two NULs do not.
	raw := readTestdata(t, "sgx/phala_sgx_quote.dat")
	if raw[len(raw)-1] != 0 {
		t.Skip("phala quote no longer ends with NUL")
	}
	mut := append(bytes.Clone(raw), 0)
	binary.LittleEndian.PutUint32(mut[QuoteHeaderSize+ReportBodySize:], binary.LittleEndian.Uint32(raw[QuoteHeaderSize+ReportBodySize:])+1)
	q, _ := ParseQuote(raw)
	certLenPos := len(raw) - len(q.CertData) - 4
	binary.LittleEndian.PutUint32(mut[certLenPos:], uint32(len(q.CertData)+1))
	_, err := Verify(context.Background(), dcap(mut), VerifyOptions{})
	wantStep(t, err, StepPCKChain)
}

func TestLoadCollateralDirErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadCollateralDir(dir); err == nil || !strings.Contains(err.Error(), "no TCB Info") {
		t.Errorf("empty dir: %v", err)
	}
	src := filepath.Join(testdataDir(t), "sgx/automata_collateral_2025-08")
	for _, name := range []string{"sgx_tcbinfov3_00606a000000.json", "sgx_qeidentity_v4.json", "intel_sgx_tcb_signing_2025.der"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := LoadCollateralDir(dir); err == nil || !strings.Contains(err.Error(), "no PCK CRL") {
		t.Errorf("no CRL: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.der"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCollateralDir(dir); err == nil || !strings.Contains(err.Error(), "junk.der") {
		t.Errorf("junk: %v", err)
	}
}

func TestParseCollateralBundleErrors(t *testing.T) {
	b := readTestdata(t, "sgx/phala_sgx_quote_collateral.json")
	for _, field := range []string{"tcb_info", "qe_identity", "tcb_info_signature", "pck_crl", "tcb_info_issuer_chain"} {
		mut := bytes.Replace(b, []byte(`"`+field+`"`), []byte(`"x_`+field+`"`), 1)
		if _, err := ParseCollateralBundle(mut); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("without %s: %v", field, err)
		}
	}
	if _, err := ParseCollateralBundle([]byte("{")); err == nil {
		t.Error("truncated JSON parsed")
	}
}

func TestCollateralDirWithBothPCKCRLs(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(testdataDir(t), "sgx/automata_collateral_2025-08")
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600)
	}
	phala := loadCollateral(t, "sgx/phala_sgx_quote_collateral.json")
	os.WriteFile(filepath.Join(dir, "processor_crl.der"), phala.PCKCRL.Raw, 0o600)
	// The root CA certificate as PEM is ignored as a signer.
	os.WriteFile(filepath.Join(dir, "root.pem"), readTestdata(t, "sgx/Intel_SGX_Provisioning_Certification_RootCA.pem"), 0o600)
	col, err := LoadCollateralDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(col.MorePCKCRLs) != 1 {
		t.Fatalf("%d extra PCK CRLs", len(col.MorePCKCRLs))
	}
	c, err := Verify(context.Background(), dcap(readTestdata(t, "sgx/automata_quotev3.dat")), VerifyOptions{At: automataAt, Collateral: col})
	if err != nil || c.TCBStatus != TCBSWHardeningNeeded || c.TCBEvaluationDataNumber != 17 {
		t.Fatalf("%v %v", c, err)
	}
}

func TestCollateralDirByContentAndURLEncodedChains(t *testing.T) {
	// Separate PCS files under other names, plus files to ignore.
	dir := t.TempDir()
	src := filepath.Join(testdataDir(t), "sgx/automata_collateral_2025-08")
	rename := map[string]string{
		"sgx_tcbinfov3_00606a000000.json": "tcb.json",
		"sgx_qeidentity_v4.json":          "identity.json",
		"intel_sgx_tcb_signing_2025.der":  "signer",
		"platform_crl.der":                "crl.crl",
		"sgxtcbeval.json":                 "numbers.json",
	}
	for from, to := range rename {
		b, err := os.ReadFile(filepath.Join(src, from))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, to), b, 0o600)
	}
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("# notes"), 0o600)
	os.WriteFile(filepath.Join(dir, "other.json"), []byte(`{"note": 1}`), 0o600)
	col, err := LoadCollateralDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(context.Background(), dcap(readTestdata(t, "sgx/automata_quotev3.dat")), VerifyOptions{At: automataAt, Collateral: col})
	if err != nil || c.TCBStatus != TCBSWHardeningNeeded || c.LatestTCBEvaluationDataNumber != 20 {
		t.Fatalf("%v %v", c, err)
	}

	// A bundle with tcb_info and qe_identity embedded as objects.
	var raw map[string]json.RawMessage
	json.Unmarshal(readTestdata(t, "sgx/phala_sgx_quote_collateral.json"), &raw)
	for _, k := range []string{"tcb_info", "qe_identity"} {
		var s string
		json.Unmarshal(raw[k], &s)
		raw[k] = json.RawMessage(s)
	}
	b, _ := json.Marshal(raw)
	if !bytes.Contains(b, []byte(`"tcb_info":{"id":"SGX"`)) {
		t.Fatalf("objects not embedded: %.200s", b)
	}
	col, err = ParseCollateralBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Verify(context.Background(), dcap(readTestdata(t, "sgx/phala_sgx_quote.dat")), VerifyOptions{At: phalaAt, Collateral: col}); err != nil || c.TCBStatus != TCBConfigurationAndSWHardeningNeeded {
		t.Fatalf("embedded objects: %v %v", c, err)
	}

	// A bundle whose issuer chains are URL-encoded as in PCS headers, in a dir.
	var m map[string]any
	if err := json.Unmarshal(readTestdata(t, "sgx/phala_sgx_quote_collateral.json"), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"tcb_info_issuer_chain", "qe_identity_issuer_chain", "pck_crl_issuer_chain"} {
		m[k] = url.PathEscape(m[k].(string))
	}
	b, _ = json.Marshal(m)
	dir = t.TempDir()
	os.WriteFile(filepath.Join(dir, "collateral.json"), b, 0o600)
	col, err = LoadCollateral(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err = Verify(context.Background(), dcap(readTestdata(t, "sgx/phala_sgx_quote.dat")), VerifyOptions{At: phalaAt, Collateral: col})
	if err != nil || c.TCBStatus != TCBConfigurationAndSWHardeningNeeded {
		t.Fatalf("%v %v", c, err)
	}
}

// mutateEmbeddedRoot returns raw with the DER of the last certificate of its
// PCK chain changed by f, re-encoded in place (same length, same line breaks).
func mutateEmbeddedRoot(t *testing.T, raw []byte, f func(der []byte)) []byte {
	t.Helper()
	q, err := ParseQuote(raw)
	if err != nil {
		t.Fatal(err)
	}
	certStart := len(raw) - len(q.CertData)
	const begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
	i := bytes.LastIndex(q.CertData, []byte(begin))
	j := bytes.LastIndex(q.CertData, []byte(end))
	if i < 0 || j < i {
		t.Fatal("no PEM certificate in the certification data")
	}
	bodyStart := certStart + i + len(begin)
	body := raw[bodyStart : certStart+j]
	var b64 []byte
	var pos []int
	for k, ch := range body {
		if ch != '\n' && ch != '\r' && ch != ' ' {
			b64 = append(b64, ch)
			pos = append(pos, k)
		}
	}
	der, err := base64.StdEncoding.DecodeString(string(b64))
	if err != nil {
		t.Fatal(err)
	}
	f(der)
	enc := base64.StdEncoding.EncodeToString(der)
	if len(enc) != len(b64) {
		t.Fatalf("re-encoded root is %d characters, was %d", len(enc), len(b64))
	}
	mut := bytes.Clone(raw)
	for k, p := range pos {
		mut[bodyStart+p] = enc[k]
	}
	return mut
}

func TestEmbeddedRootMustBeThePinnedRoot(t *testing.T) {
	for _, rq := range realQuotes {
		t.Run(filepath.Base(rq.file), func(t *testing.T) {
			raw := readTestdata(t, rq.file)
			// A flipped byte in the root's own signature: the certificate
			// still parses and keeps the root's name and key, but it is not
			// the root Intel published.
			mut := mutateEmbeddedRoot(t, raw, func(der []byte) { der[len(der)-5] ^= 0x01 })
			if bytes.Equal(mut, raw) {
				t.Fatal("mutation changed nothing")
			}
			_, err := Verify(context.Background(), dcap(mut), VerifyOptions{})
			wantStep(t, err, StepPCKChain, "not the pinned Intel SGX Root CA")
			var rme *RootMismatchError
			if !errors.As(err, &rme) || !errors.Is(err, ErrRootNotPinned) {
				t.Fatalf("error %v is not a RootMismatchError", err)
			}
			if !strings.Contains(rme.Subject, "Intel SGX Root CA") || rme.SHA256 == rme.Pinned {
				t.Errorf("RootMismatchError = %+v", rme)
			}
			// The unmutated quote still verifies.
			if _, err := Verify(context.Background(), dcap(raw), VerifyOptions{}); err != nil {
				t.Fatalf("original: %v", err)
			}
		})
	}
}

// TestCollateralChainRootMustBeThePinnedRoot: a collateral bundle's issuer
// chain that carries a root other than the pinned one is refused, naming
// the chain.
func TestCollateralChainRootMustBeThePinnedRoot(t *testing.T) {
	raw := readTestdata(t, "sgx/phala_sgx_quote.dat")
	col := loadCollateral(t, "sgx/phala_sgx_quote_collateral.json")
	last := col.TCBInfoIssuerChain[len(col.TCBInfoIssuerChain)-1]
	if last.Subject.CommonName != "Intel SGX Root CA" {
		t.Skipf("the bundle's TCB Info chain ends with %q", last.Subject.CommonName)
	}
	der := bytes.Clone(last.Raw)
	der[len(der)-5] ^= 1 // in the signature: still parses, same name and key
	forged, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	c := *col
	c.TCBInfoIssuerChain = append(slices.Clone(col.TCBInfoIssuerChain[:len(col.TCBInfoIssuerChain)-1]), forged)
	_, err = Verify(context.Background(), dcap(raw), VerifyOptions{At: phalaAt, Collateral: &c})
	wantStep(t, err, StepTCBInfoSignature, "TCB Info issuer chain", "not the pinned Intel SGX Root CA")
	if !errors.Is(err, ErrRootNotPinned) {
		t.Fatalf("error %v is not ErrRootNotPinned", err)
	}
}
