package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Collateral is the verification collateral of an SGX DCAP quote, as
// published by Intel's PCS: TCB Info, QE Identity, their signatures and
// issuer chains, and CRLs. The JSON values are kept as the exact bytes that
// were signed.
type Collateral struct {
	// TCBInfo is the exact "tcbInfo" JSON value (TCB Info version 3).
	TCBInfo []byte
	// TCBInfoSignature is the raw r||s ECDSA P-256 signature over TCBInfo.
	TCBInfoSignature []byte
	// TCBInfoIssuerChain starts with the TCB signing certificate.
	TCBInfoIssuerChain []*x509.Certificate
	// QEIdentity is the exact "enclaveIdentity" JSON value (QE Identity v2).
	QEIdentity []byte
	// QEIdentitySignature is the raw r||s signature over QEIdentity.
	QEIdentitySignature []byte
	// QEIdentityIssuerChain starts with the TCB signing certificate.
	QEIdentityIssuerChain []*x509.Certificate
	// RootCACRL is the Intel SGX Root CA CRL; it may be nil (the check is
	// then skipped and reported as skipped).
	RootCACRL *x509.RevocationList
	// PCKCRL is the CRL of the PCK CA (Processor or Platform) that issued the
	// quote's PCK certificate.
	PCKCRL *x509.RevocationList
	// MorePCKCRLs are further PCK CA CRLs (a directory may hold both the
	// Processor and the Platform CA's); the one whose issuer is the quote's
	// PCK CA is used.
	MorePCKCRLs []*x509.RevocationList
	// TCBEvaluationNumbers is the exact "tcbEvaluationDataNumbers" JSON value
	// of a PCS TCB evaluation data numbers response (sgxtcbeval.json), and
	// TCBEvaluationNumbersSignature its r||s signature; both optional. When
	// given they are verified like the TCB Info and the highest number is
	// reported in the claims.
	TCBEvaluationNumbers          []byte
	TCBEvaluationNumbersSignature []byte
	// PCKCRLIssuerChain is informative: the PCK CRL is verified with the PCK
	// CA certificate of the quote's own (verified) chain.
	PCKCRLIssuerChain []*x509.Certificate
}

// collateralBundle is the layout of phala_sgx_quote_collateral.json
// (dcap-qvl's QuoteCollateralV3).
type collateralBundle struct {
	PCKCRLIssuerChain     *string         `json:"pck_crl_issuer_chain"`
	RootCACRL             *string         `json:"root_ca_crl"`
	PCKCRL                *string         `json:"pck_crl"`
	TCBInfoIssuerChain    *string         `json:"tcb_info_issuer_chain"`
	TCBInfo               json.RawMessage `json:"tcb_info"`
	TCBInfoSignature      *string         `json:"tcb_info_signature"`
	QEIdentityIssuerChain *string         `json:"qe_identity_issuer_chain"`
	QEIdentity            json.RawMessage `json:"qe_identity"`
	QEIdentitySignature   *string         `json:"qe_identity_signature"`
}

// maxCollateralSize bounds every collateral file read.
const maxCollateralSize = 4 << 20

// ParseCollateralBundle parses collateral in the JSON layout of dcap-qvl's
// QuoteCollateralV3 (phala_sgx_quote_collateral.json): tcb_info and
// qe_identity are the signed JSON values as strings, signatures and CRLs are
// hex, issuer chains are PEM (URL-encoded PEM is accepted too). tcb_info and
// qe_identity may also be embedded JSON objects, whose exact bytes are then
// what was signed. root_ca_crl and pck_crl_issuer_chain may be absent.
func ParseCollateralBundle(b []byte) (*Collateral, error) {
	if len(b) > maxCollateralSize {
		return nil, fmt.Errorf("collateral bundle is %d bytes, more than %d", len(b), maxCollateralSize)
	}
	var cb collateralBundle
	if err := json.Unmarshal(b, &cb); err != nil {
		return nil, fmt.Errorf("collateral bundle: %w", err)
	}
	need := func(name string, v *string) (string, error) {
		if v == nil || *v == "" {
			return "", fmt.Errorf("collateral bundle: %s missing", name)
		}
		return *v, nil
	}
	c := &Collateral{}
	var err error
	var s string
	if c.TCBInfo, err = signedValue("tcb_info", cb.TCBInfo); err != nil {
		return nil, err
	}
	if c.QEIdentity, err = signedValue("qe_identity", cb.QEIdentity); err != nil {
		return nil, err
	}
	if s, err = need("tcb_info_signature", cb.TCBInfoSignature); err != nil {
		return nil, err
	}
	if c.TCBInfoSignature, err = decodeSig("tcb_info_signature", s); err != nil {
		return nil, err
	}
	if s, err = need("qe_identity_signature", cb.QEIdentitySignature); err != nil {
		return nil, err
	}
	if c.QEIdentitySignature, err = decodeSig("qe_identity_signature", s); err != nil {
		return nil, err
	}
	if s, err = need("tcb_info_issuer_chain", cb.TCBInfoIssuerChain); err != nil {
		return nil, err
	}
	if c.TCBInfoIssuerChain, err = parsePEMChain(pemText(s)); err != nil {
		return nil, fmt.Errorf("collateral bundle: tcb_info_issuer_chain: %w", err)
	}
	if s, err = need("qe_identity_issuer_chain", cb.QEIdentityIssuerChain); err != nil {
		return nil, err
	}
	if c.QEIdentityIssuerChain, err = parsePEMChain(pemText(s)); err != nil {
		return nil, fmt.Errorf("collateral bundle: qe_identity_issuer_chain: %w", err)
	}
	if s, err = need("pck_crl", cb.PCKCRL); err != nil {
		return nil, err
	}
	if c.PCKCRL, err = parseCRLText(s); err != nil {
		return nil, fmt.Errorf("collateral bundle: pck_crl: %w", err)
	}
	if cb.RootCACRL != nil && *cb.RootCACRL != "" {
		if c.RootCACRL, err = parseCRLText(*cb.RootCACRL); err != nil {
			return nil, fmt.Errorf("collateral bundle: root_ca_crl: %w", err)
		}
	}
	if cb.PCKCRLIssuerChain != nil && *cb.PCKCRLIssuerChain != "" {
		if c.PCKCRLIssuerChain, err = parsePEMChain(pemText(*cb.PCKCRLIssuerChain)); err != nil {
			return nil, fmt.Errorf("collateral bundle: pck_crl_issuer_chain: %w", err)
		}
	}
	return c, nil
}

// signedValue returns the signed bytes of a bundle's tcb_info or
// qe_identity: the content of a JSON string, or an embedded object exactly as
// it appears in the file.
func signedValue(name string, raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil, fmt.Errorf("collateral bundle: %s missing", name)
	case raw[0] == '{':
		return bytes.Clone(raw), nil
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("collateral bundle: %s: %w", name, err)
		}
		if s == "" {
			return nil, fmt.Errorf("collateral bundle: %s missing", name)
		}
		return []byte(s), nil
	default:
		return nil, fmt.Errorf("collateral bundle: %s is neither a JSON string nor an object", name)
	}
}

// pemText returns PEM text, URL-decoding it first if it is still encoded the
// way PCS sends issuer chains in HTTP headers.
func pemText(s string) []byte {
	if strings.HasPrefix(strings.TrimSpace(s), "-----BEGIN%20") {
		if d, err := url.PathUnescape(s); err == nil {
			return []byte(d)
		}
	}
	return []byte(s)
}

func decodeSig(name, s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("collateral: %s is not hex: %w", name, err)
	}
	if len(b) != 64 {
		return nil, fmt.Errorf("collateral: %s is %d bytes, want 64 (r||s)", name, len(b))
	}
	return b, nil
}

// parseCRLText parses a CRL given as hex DER or PEM.
func parseCRLText(s string) (*x509.RevocationList, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		block, rest := pem.Decode([]byte(s))
		if block == nil || len(bytes.TrimSpace(rest)) != 0 {
			return nil, errors.New("not a single PEM block")
		}
		return x509.ParseRevocationList(block.Bytes)
	}
	der, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("neither PEM nor hex: %w", err)
	}
	return x509.ParseRevocationList(der)
}

// signedPCSFile is the layout of a PCS JSON response: one signed value and a
// hex signature.
func parseSignedPCSFile(b []byte, key string) (value, sig []byte, err error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil, err
	}
	v, ok := m[key]
	if !ok {
		return nil, nil, fmt.Errorf("no %q", key)
	}
	var sigHex string
	if err := json.Unmarshal(m["signature"], &sigHex); err != nil {
		return nil, nil, fmt.Errorf("signature: %w", err)
	}
	sig, err = decodeSig("signature", sigHex)
	if err != nil {
		return nil, nil, err
	}
	return bytes.Clone(v), sig, nil
}

// LoadCollateralDir reads collateral kept as separate PCS files in dir, like
// automata_collateral_2025-08. Files are recognised by content: a TCB Info
// response ({"tcbInfo":…,"signature":…}), a QE Identity response
// ({"enclaveIdentity":…,"signature":…}, whatever its file name says),
// optionally TCB evaluation data numbers ({"tcbEvaluationDataNumbers":…}),
// certificates (DER or PEM, e.g. the TCB signing certificate; self-signed
// roots are ignored, the pinned root is used) and CRLs (DER or PEM; the one
// issued by the root CA is the root CA CRL, the others PCK CRLs). A directory
// holding one collateral bundle (see [ParseCollateralBundle]) instead is read
// as that bundle. Other JSON files, and files other than .json, .der, .pem,
// .crt, .cer, .crl or without extension, are ignored.
func LoadCollateralDir(dir string) (*Collateral, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("collateral dir: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	c := &Collateral{}
	var certs []*x509.Certificate
	var crls []*x509.RevocationList
	var bundle *Collateral
	for _, name := range names {
		lower := strings.ToLower(name)
		ext := filepath.Ext(lower)
		switch ext {
		case ".json", ".der", ".pem", ".crt", ".cer", ".crl", "":
		default:
			continue // README.md, hex dumps and the like
		}
		b, err := readLimited(filepath.Join(dir, name), maxCollateralSize)
		if err != nil {
			return nil, fmt.Errorf("collateral dir: %w", err)
		}
		if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
			// A JSON file, recognised by its content, not its name
			// (automata's sgx_qeidentity_v4.json holds a version 2 identity).
			var m map[string]json.RawMessage
			if err := json.Unmarshal(t, &m); err != nil {
				return nil, fmt.Errorf("collateral dir: %s: %w", name, err)
			}
			var dst, sig *[]byte
			var key, what string
			switch {
			case m["tcbInfo"] != nil:
				dst, sig, key, what = &c.TCBInfo, &c.TCBInfoSignature, "tcbInfo", "TCB Info"
			case m["enclaveIdentity"] != nil:
				dst, sig, key, what = &c.QEIdentity, &c.QEIdentitySignature, "enclaveIdentity", "QE Identity"
			case m["tcbEvaluationDataNumbers"] != nil:
				dst, sig, key, what = &c.TCBEvaluationNumbers, &c.TCBEvaluationNumbersSignature, "tcbEvaluationDataNumbers", "TCB evaluation data numbers"
			case m["tcb_info"] != nil:
				if bundle != nil {
					return nil, fmt.Errorf("collateral dir: two collateral bundles (second: %s)", name)
				}
				if bundle, err = ParseCollateralBundle(t); err != nil {
					return nil, fmt.Errorf("collateral dir: %s: %w", name, err)
				}
				continue
			default:
				continue // not collateral
			}
			if *dst != nil {
				return nil, fmt.Errorf("collateral dir: two %s files (second: %s)", what, name)
			}
			if *dst, *sig, err = parseSignedPCSFile(t, key); err != nil {
				return nil, fmt.Errorf("collateral dir: %s: %w", name, err)
			}
			continue
		}
		ders := [][]byte{b}
		if bytes.Contains(b, []byte("-----BEGIN")) {
			ders = nil
			rest := b
			for {
				var block *pem.Block
				block, rest = pem.Decode(rest)
				if block == nil {
					break
				}
				ders = append(ders, block.Bytes)
			}
		}
		for _, der := range ders {
			if cert, err := x509.ParseCertificate(der); err == nil {
				certs = append(certs, cert)
			} else if crl, err := x509.ParseRevocationList(der); err == nil {
				crls = append(crls, crl)
			} else {
				return nil, fmt.Errorf("collateral dir: %s is neither a certificate nor a CRL", name)
			}
		}
	}
	if bundle != nil {
		if c.TCBInfo != nil || c.QEIdentity != nil {
			return nil, errors.New("collateral dir: both a collateral bundle and separate PCS files")
		}
		return bundle, nil
	}
	if c.TCBInfo == nil {
		return nil, errors.New(`collateral dir: no TCB Info file ({"tcbInfo":…,"signature":…})`)
	}
	if c.QEIdentity == nil {
		return nil, errors.New(`collateral dir: no QE Identity file ({"enclaveIdentity":…,"signature":…})`)
	}
	for _, crl := range crls {
		if crl.Issuer.CommonName == "Intel SGX Root CA" {
			if c.RootCACRL != nil {
				return nil, errors.New("collateral dir: two root CA CRLs")
			}
			c.RootCACRL = crl
		} else {
			if c.PCKCRL == nil {
				c.PCKCRL = crl
				continue
			}
			for _, have := range append([]*x509.RevocationList{c.PCKCRL}, c.MorePCKCRLs...) {
				if bytes.Equal(have.RawIssuer, crl.RawIssuer) {
					return nil, fmt.Errorf("collateral dir: two CRLs of %q", crl.Issuer.CommonName)
				}
			}
			c.MorePCKCRLs = append(c.MorePCKCRLs, crl)
		}
	}
	if c.PCKCRL == nil {
		return nil, errors.New("collateral dir: no PCK CRL")
	}
	var signers []*x509.Certificate
	for _, cert := range certs {
		if !bytes.Equal(cert.RawSubject, cert.RawIssuer) {
			signers = append(signers, cert)
		}
	}
	if len(signers) == 0 {
		return nil, errors.New("collateral dir: no TCB signing certificate")
	}
	// Put the signing certificate first; the rest serve as intermediates.
	sort.SliceStable(signers, func(i, j int) bool {
		return strings.Contains(signers[i].Subject.CommonName, "TCB Signing") && !strings.Contains(signers[j].Subject.CommonName, "TCB Signing")
	})
	c.TCBInfoIssuerChain = signers
	c.QEIdentityIssuerChain = signers
	return c, nil
}

// LoadCollateral reads collateral from a directory of PCS files or a JSON
// bundle file.
func LoadCollateral(path string) (*Collateral, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("collateral: %w", err)
	}
	if fi.IsDir() {
		return LoadCollateralDir(path)
	}
	b, err := readLimited(path, maxCollateralSize)
	if err != nil {
		return nil, fmt.Errorf("collateral: %w", err)
	}
	return ParseCollateralBundle(b)
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than %d", path, fi.Size(), limit)
	}
	b := make([]byte, 0, fi.Size())
	buf := bytes.NewBuffer(b)
	if _, err := buf.ReadFrom(io.LimitReader(f, limit+1)); err != nil {
		return nil, err
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("%s is more than %d bytes", path, limit)
	}
	return buf.Bytes(), nil
}

// --- TCB Info and QE Identity ---

type tcbInfoV3 struct {
	ID                      string       `json:"id"`
	Version                 int          `json:"version"`
	IssueDate               string       `json:"issueDate"`
	NextUpdate              string       `json:"nextUpdate"`
	FMSPC                   string       `json:"fmspc"`
	PCEID                   string       `json:"pceId"`
	TCBType                 int          `json:"tcbType"`
	TCBEvaluationDataNumber int          `json:"tcbEvaluationDataNumber"`
	TCBLevels               []tcbLevelV3 `json:"tcbLevels"`
}

type tcbLevelV3 struct {
	TCB struct {
		SGXTCBComponents []struct {
			SVN int `json:"svn"`
		} `json:"sgxtcbcomponents"`
		PCESVN int `json:"pcesvn"`
	} `json:"tcb"`
	TCBDate     string    `json:"tcbDate"`
	TCBStatus   TCBStatus `json:"tcbStatus"`
	AdvisoryIDs []string  `json:"advisoryIDs"`
}

type tcbEvalNumbersV1 struct {
	ID             string `json:"id"`
	Version        int    `json:"version"`
	IssueDate      string `json:"issueDate"`
	NextUpdate     string `json:"nextUpdate"`
	TCBEvalNumbers []struct {
		TCBEvaluationDataNumber int    `json:"tcbEvaluationDataNumber"`
		TCBRecoveryEventDate    string `json:"tcbRecoveryEventDate"`
		TCBDate                 string `json:"tcbDate"`
	} `json:"tcbEvalNumbers"`
}

func parseTCBEvalNumbers(b []byte) (*tcbEvalNumbersV1, error) {
	var te tcbEvalNumbersV1
	if err := json.Unmarshal(b, &te); err != nil {
		return nil, fmt.Errorf("TCB evaluation data numbers: %w", err)
	}
	if te.ID != "SGX" || te.Version != 1 {
		return nil, fmt.Errorf("TCB evaluation data numbers id %q version %d not supported (need SGX, 1)", te.ID, te.Version)
	}
	if len(te.TCBEvalNumbers) == 0 {
		return nil, errors.New("TCB evaluation data numbers list is empty")
	}
	return &te, nil
}

type qeIdentityV2 struct {
	ID                      string         `json:"id"`
	Version                 int            `json:"version"`
	IssueDate               string         `json:"issueDate"`
	NextUpdate              string         `json:"nextUpdate"`
	TCBEvaluationDataNumber int            `json:"tcbEvaluationDataNumber"`
	MiscSelect              string         `json:"miscselect"`
	MiscSelectMask          string         `json:"miscselectMask"`
	Attributes              string         `json:"attributes"`
	AttributesMask          string         `json:"attributesMask"`
	MRSigner                string         `json:"mrsigner"`
	ISVProdID               int            `json:"isvprodid"`
	TCBLevels               []qeTCBLevelV2 `json:"tcbLevels"`
}

type qeTCBLevelV2 struct {
	TCB struct {
		ISVSVN int `json:"isvsvn"`
	} `json:"tcb"`
	TCBDate     string    `json:"tcbDate"`
	TCBStatus   TCBStatus `json:"tcbStatus"`
	AdvisoryIDs []string  `json:"advisoryIDs"`
}

func parseTCBInfo(b []byte) (*tcbInfoV3, error) {
	var ti tcbInfoV3
	if err := json.Unmarshal(b, &ti); err != nil {
		return nil, fmt.Errorf("TCB Info: %w", err)
	}
	if ti.ID != "SGX" {
		return nil, fmt.Errorf("TCB Info id %q, want SGX", ti.ID)
	}
	if ti.Version != 3 {
		return nil, fmt.Errorf("TCB Info version %d not supported (need 3)", ti.Version)
	}
	if ti.TCBType != 0 {
		return nil, fmt.Errorf("TCB Info tcbType %d not supported (need 0)", ti.TCBType)
	}
	if len(ti.TCBLevels) == 0 {
		return nil, errors.New("TCB Info has no TCB levels")
	}
	for i, l := range ti.TCBLevels {
		if len(l.TCB.SGXTCBComponents) != 16 {
			return nil, fmt.Errorf("TCB Info level %d has %d SGX TCB components, want 16", i, len(l.TCB.SGXTCBComponents))
		}
		if !l.TCBStatus.Valid() {
			return nil, fmt.Errorf("TCB Info level %d has unknown status %q", i, l.TCBStatus)
		}
	}
	return &ti, nil
}

func parseQEIdentity(b []byte) (*qeIdentityV2, error) {
	var qi qeIdentityV2
	if err := json.Unmarshal(b, &qi); err != nil {
		return nil, fmt.Errorf("QE Identity: %w", err)
	}
	if qi.ID != "QE" {
		return nil, fmt.Errorf("QE Identity id %q, want QE", qi.ID)
	}
	if qi.Version != 2 {
		return nil, fmt.Errorf("QE Identity version %d not supported (need 2)", qi.Version)
	}
	if len(qi.TCBLevels) == 0 {
		return nil, errors.New("QE Identity has no TCB levels")
	}
	for i, l := range qi.TCBLevels {
		if !l.TCBStatus.Valid() {
			return nil, fmt.Errorf("QE Identity level %d has unknown status %q", i, l.TCBStatus)
		}
	}
	return &qi, nil
}

// ParseCollateral checks that collateral parses completely: TCB Info v3 and
// QE Identity v2 JSON and the sizes of the signatures. It verifies nothing
// cryptographic.
func ParseCollateral(c *Collateral) error {
	if c == nil {
		return errors.New("no collateral")
	}
	if _, err := parseTCBInfo(c.TCBInfo); err != nil {
		return err
	}
	if _, err := parseQEIdentity(c.QEIdentity); err != nil {
		return err
	}
	if len(c.TCBInfoSignature) != 64 || len(c.QEIdentitySignature) != 64 {
		return errors.New("collateral signatures must be 64 bytes (r||s)")
	}
	return nil
}

func parseTime(what, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", what, err)
	}
	return t, nil
}

// verifySignedJSON verifies sig over value with the first certificate of
// chain, after verifying that certificate to the root at time at.
func verifySignedJSON(what string, value, sig []byte, chain []*x509.Certificate, root *x509.Certificate, at time.Time) ([]*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s has no issuer chain", what)
	}
	// A bundle's chain may carry the root (a directory's never does): if
	// it does, it must be the pinned one.
	if err := checkEmbeddedRoot(what+" issuer chain", chain, root, false); err != nil {
		return nil, err
	}
	verified, err := verifyChainToRoot(chain, root, at)
	if err != nil {
		return nil, fmt.Errorf("%s issuer chain: %w", what, err)
	}
	// Only Intel's TCB signing certificate, issued by the root itself, signs
	// collateral: a PCK key (held by a platform) must not be able to.
	if cn := verified[0].Subject.CommonName; cn != "Intel SGX TCB Signing" || len(verified) != 2 {
		return nil, fmt.Errorf("%s is signed by %q (chain of %d), not by the Intel SGX TCB Signing certificate under the root", what, cn, len(verified))
	}
	pub, ok := verified[0].PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s signing key is not ECDSA P-256", what)
	}
	if !verifyRawECDSA(pub, value, sig) {
		return nil, fmt.Errorf("%s signature does not verify with %q", what, verified[0].Subject.CommonName)
	}
	return verified, nil
}
