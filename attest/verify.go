package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Verification step names, as found in [VerificationError.Step] and
// [StepResult.Step].
const (
	StepEvidence           = "evidence"
	StepParse              = "parse"
	StepPCKChain           = "pck chain"
	StepQEReportSignature  = "qe report signature"
	StepQEReportData       = "qe report data"
	StepQuoteSignature     = "quote signature"
	StepTCBInfoSignature   = "tcb info signature"
	StepQEIdentitySig      = "qe identity signature"
	StepTCBEvalNumbers     = "tcb evaluation numbers"
	StepCollateralValidity = "collateral validity"
	StepRootCACRL          = "root ca crl"
	StepPCKCRL             = "pck crl"
	StepPCKExtensions      = "pck extensions"
	StepTCBInfo            = "tcb info"
	StepQEIdentity         = "qe identity"
	StepTCBStatus          = "tcb status"
	StepSimulationRefused  = "simulation allowed"
	StepSimPlatformKey     = "simulation platform key"
	StepSimSignature       = "simulated quote signature"
)

// VerificationError reports which verification step failed and why.
type VerificationError struct {
	// Step names the failed step (one of the Step constants).
	Step string
	// Err is the reason.
	Err error
	// Passed lists the steps that succeeded before Step.
	Passed []StepResult
}

// Error names the step and the reason.
func (e *VerificationError) Error() string {
	return fmt.Sprintf("attest: verification failed at step %q: %v", e.Step, e.Err)
}

// Unwrap returns the reason.
func (e *VerificationError) Unwrap() error { return e.Err }

// VerifyOptions configure [Verify].
type VerifyOptions struct {
	// At is the evaluation time for certificates, CRLs and collateral; zero
	// means time.Now().
	At time.Time
	// Collateral, when set, is verified and used to compute TCB statuses.
	Collateral *Collateral
	// AllowSimulation lets simulated evidence be verified at all; without it
	// simulated evidence is refused.
	AllowSimulation bool
	// SimPlatformKeys are the simulation platform public keys trusted
	// (such as [SimulationRoot.PlatformPublicKey]); simulated evidence
	// signed by any other key, or any simulated evidence when it is empty,
	// is refused. Nothing is looked up on the machine.
	SimPlatformKeys []*ecdsa.PublicKey
	// TestOnlyRootCA replaces the pinned Intel SGX Root CA. Only tests may
	// set it: any quote verified under another root proves nothing.
	TestOnlyRootCA *x509.Certificate
}

func (o *VerifyOptions) at() time.Time {
	if o.At.IsZero() {
		return time.Now()
	}
	return o.At
}

func (o *VerifyOptions) root() (*x509.Certificate, error) {
	if o.TestOnlyRootCA != nil {
		return o.TestOnlyRootCA, nil
	}
	return IntelSGXRootCA()
}

// Verifier verifies evidence of every supported type. The zero value is
// ready to use; it holds no state.
type Verifier struct{}

// Verify checks ev as described in the package documentation and returns its
// claims. It does not apply a policy: call [Policy.Check] on the result.
func (Verifier) Verify(ctx context.Context, ev *Evidence, opts VerifyOptions) (*Claims, error) {
	return Verify(ctx, ev, opts)
}

// Verify checks ev as described in the package documentation and returns its
// claims. Failures are [*VerificationError]s naming the step. It does not
// apply a policy: call [Policy.Check] on the result.
func Verify(ctx context.Context, ev *Evidence, opts VerifyOptions) (*Claims, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, &VerificationError{Step: StepEvidence, Err: errors.New("no evidence")}
	}
	switch ev.Type {
	case EvidenceSGXDCAP:
		return verifyDCAP(ev.Quote, &opts)
	case EvidenceSimulated:
		return verifySim(ev.Quote, &opts)
	default:
		return nil, &VerificationError{Step: StepEvidence, Err: fmt.Errorf("unknown evidence type %q", ev.Type)}
	}
}

// stepRunner records the steps passed.
type stepRunner struct {
	passed []StepResult
}

func (s *stepRunner) run(step string, f func() error) error {
	if err := f(); err != nil {
		return &VerificationError{Step: step, Err: err, Passed: append([]StepResult(nil), s.passed...)}
	}
	s.passed = append(s.passed, StepResult{Step: step, Outcome: "ok"})
	return nil
}

func (s *stepRunner) skip(step, why string) {
	s.passed = append(s.passed, StepResult{Step: step, Outcome: "skipped: " + why})
}

// dcapState is what the DCAP steps share.
type dcapState struct {
	opts  *VerifyOptions
	at    time.Time
	root  *x509.Certificate
	quote *Quote
	chain []*x509.Certificate // leaf, PCK CA, root (the pinned one)
	ext   *PCKExtensions
}

func verifyDCAP(raw []byte, opts *VerifyOptions) (*Claims, error) {
	st := &dcapState{opts: opts, at: opts.at()}
	var s stepRunner
	if err := s.run(StepParse, func() (err error) {
		st.quote, err = ParseQuote(raw)
		return err
	}); err != nil {
		return nil, err
	}
	if err := s.run(StepPCKChain, st.verifyPCKChain); err != nil {
		return nil, err
	}
	if err := s.run(StepQEReportSignature, func() error {
		pub, ok := st.chain[0].PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			return errors.New("PCK certificate key is not ECDSA P-256")
		}
		if !verifyRawECDSA(pub, st.quote.QEReportRaw, st.quote.QEReportSig) {
			return errors.New("QE report signature does not verify with the PCK certificate key")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := s.run(StepQEReportData, func() error {
		h := sha256.New()
		h.Write(st.quote.AttestKey)
		h.Write(st.quote.QEAuthData)
		want := h.Sum(nil)
		rd := st.quote.QEReport.ReportData
		if !bytes.Equal(rd[:32], want) || !bytes.Equal(rd[32:], make([]byte, 32)) {
			return errors.New("QE report data is not SHA-256(attestation key || QE auth data) || zeros: the attestation key is not the QE's")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := s.run(StepQuoteSignature, func() error {
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, st.quote.AttestKey...))
		if err != nil {
			return fmt.Errorf("attestation key: %w", err)
		}
		if !verifyRawECDSA(pub, st.quote.Signed, st.quote.Signature) {
			return errors.New("quote signature does not verify with the attestation key")
		}
		return nil
	}); err != nil {
		return nil, err
	}

	r := &st.quote.Report
	c := &Claims{
		Type:       EvidenceSGXDCAP,
		MREnclave:  r.MREnclave,
		MRSigner:   r.MRSigner,
		ProductID:  r.ISVProdID,
		SVN:        r.ISVSVN,
		Debug:      r.Debug(),
		Attributes: r.Attributes,
		ReportData: r.ReportData,
	}
	if ext, err := ParsePCKExtensions(st.chain[0]); err == nil {
		c.FMSPC = fmt.Sprintf("%x", ext.FMSPC)
	}
	if opts.Collateral != nil {
		if err := st.verifyCollateral(&s, c); err != nil {
			return nil, err
		}
	} else {
		s.skip(StepTCBStatus, "no collateral given")
	}
	c.Steps = s.passed
	return c, nil
}

// verifyPCKChain parses the PEM chain of the certification data and verifies
// it to the pinned root at the evaluation time.
func (st *dcapState) verifyPCKChain() error {
	root, err := st.opts.root()
	if err != nil {
		return err
	}
	st.root = root
	pemBytes, err := st.quote.pckChainPEM()
	if err != nil {
		return err
	}
	certs, err := parsePEMChain(pemBytes)
	if err != nil {
		return fmt.Errorf("certification data: %w", err)
	}
	// The chain carries its own copy of the root (certification data type
	// 5 is leaf, PCK CA, root). Intel's verifier requires that copy to be
	// the trusted root; so do we, rather than silently using ours.
	if err := checkEmbeddedRoot("PCK chain", certs, root, true); err != nil {
		return err
	}
	chain, err := verifyChainToRoot(certs, root, st.at)
	if err != nil {
		return err
	}
	if len(chain) != 3 {
		return fmt.Errorf("PCK chain has %d certificates, want leaf, PCK CA and root", len(chain))
	}
	// Only a PCK certificate from a PCK CA may sign QE reports: not, say, a
	// TCB signing certificate, which chains to the same root.
	if cn := chain[0].Subject.CommonName; cn != "Intel SGX PCK Certificate" {
		return fmt.Errorf("PCK chain leaf is %q, not an Intel SGX PCK Certificate", cn)
	}
	if cn := chain[1].Subject.CommonName; cn != "Intel SGX PCK Processor CA" && cn != "Intel SGX PCK Platform CA" {
		return fmt.Errorf("PCK chain CA is %q, not an Intel SGX PCK Processor or Platform CA", cn)
	}
	st.chain = chain
	return nil
}

// parsePEMChain parses a sequence of PEM certificates; only whitespace may
// surround them.
func parsePEMChain(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := b
	for {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("bytes that are not a PEM certificate")
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q, want CERTIFICATE", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs), err)
		}
		certs = append(certs, cert)
		if len(certs) > 8 {
			return nil, errors.New("more than 8 certificates")
		}
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return certs, nil
}

// ErrRootNotPinned is what a [*RootMismatchError] matches with errors.Is: a
// certificate chain carries a root certificate that is not the pinned Intel
// SGX Root CA.
var ErrRootNotPinned = errors.New("attest: the chain's root certificate is not the pinned Intel SGX Root CA")

// RootMismatchError reports a certificate chain that carries a root
// certificate (a self-issued one, or one named like the root) other than
// the pinned root, or, for the PCK chain, that does not end with the
// pinned root. It matches [ErrRootNotPinned].
type RootMismatchError struct {
	// Chain names the chain ("PCK chain", "TCB Info issuer chain", ...).
	Chain string
	// Subject is the embedded root's subject; empty when the chain has no
	// root certificate.
	Subject string
	// SHA256 is the SHA-256 of the embedded root's DER encoding (zero when
	// absent).
	SHA256 [32]byte
	// Pinned is the SHA-256 of the pinned root's DER encoding.
	Pinned [32]byte
}

// Error names the chain, the embedded root and the pinned root.
func (e *RootMismatchError) Error() string {
	if e.Subject == "" && e.SHA256 == ([32]byte{}) {
		return fmt.Sprintf("attest: %s has no root certificate; it must end with the pinned Intel SGX Root CA (DER SHA-256 %x)", e.Chain, e.Pinned)
	}
	return fmt.Sprintf("attest: %s embeds root certificate %q (DER SHA-256 %x), which is not the pinned Intel SGX Root CA (DER SHA-256 %x)",
		e.Chain, e.Subject, e.SHA256, e.Pinned)
}

// Is reports whether target is [ErrRootNotPinned].
func (e *RootMismatchError) Is(target error) bool { return target == ErrRootNotPinned }

// checkEmbeddedRoot requires every self-issued certificate of certs (a root
// the chain carries) to be the pinned root, byte for byte; with requireRoot,
// the last certificate must be that root.
func checkEmbeddedRoot(chain string, certs []*x509.Certificate, root *x509.Certificate, requireRoot bool) error {
	mismatch := func(c *x509.Certificate) error {
		e := &RootMismatchError{Chain: chain, Pinned: sha256.Sum256(root.Raw)}
		if c != nil {
			e.Subject = c.Subject.String()
			e.SHA256 = sha256.Sum256(c.Raw)
		}
		return e
	}
	for _, c := range certs {
		if c.Equal(root) {
			continue
		}
		if bytes.Equal(c.RawSubject, c.RawIssuer) || bytes.Equal(c.RawSubject, root.RawSubject) {
			return mismatch(c)
		}
	}
	if requireRoot && (len(certs) < 2 || !certs[len(certs)-1].Equal(root)) {
		return mismatch(nil)
	}
	return nil
}

// verifyChainToRoot verifies certs[0] through the other certificates to root
// at time at and returns the chain (leaf first, root last).
func verifyChainToRoot(certs []*x509.Certificate, root *x509.Certificate, at time.Time) ([]*x509.Certificate, error) {
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		if !c.Equal(root) {
			inter.AddCert(c)
		}
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%q does not chain to the pinned Intel SGX Root CA at %s: %w",
			certs[0].Subject.CommonName, at.UTC().Format(time.RFC3339), err)
	}
	return chains[0], nil
}

// verifyRawECDSA verifies a 64-byte r||s ECDSA signature over SHA-256(msg).
func verifyRawECDSA(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	h := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}
