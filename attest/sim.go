package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
)

const (
	simQuoteMagic  = "CLSIMQ01"
	simQuoteDomain = "cloister simulated quote v1\x00"
	simBodySize    = 8 + 32 + 32 + 2 + 2 + 16 + 64
	simKeyOffset   = simBodySize
	simSigOffset   = simKeyOffset + 65
	// SimQuoteSize is the size of a simulated quote.
	SimQuoteSize = simSigOffset + 64
)

// Issuer produces evidence that binds reportData.
type Issuer interface {
	Issue(ctx context.Context, reportData [64]byte) (*Evidence, error)
}

// SimIdentity is the enclave identity a [SimIssuer] claims.
type SimIdentity struct {
	MREnclave [32]byte
	MRSigner  [32]byte
	ProductID uint16
	SVN       uint16
	Debug     bool
}

// SimIssuer issues simulated quotes: the identity given at construction and
// the report data, signed with a simulation platform key. Simulated evidence
// promises nothing against a malicious host.
type SimIssuer struct {
	id  SimIdentity
	key *ecdsa.PrivateKey
}

// NewSimIssuer returns an issuer of simulated quotes for id, signed with key
// (see also [SimulationRoot.Issuer]).
func NewSimIssuer(id SimIdentity, key *ecdsa.PrivateKey) (*SimIssuer, error) {
	if key == nil {
		return nil, errors.New("attest: simulated issuer needs a simulation platform key")
	}
	if key.Curve != elliptic.P256() {
		return nil, errors.New("attest: simulation platform key must be ECDSA P-256")
	}
	return &SimIssuer{id: id, key: key}, nil
}

// PlatformPublicKey returns the public simulation platform key, for
// verifiers on other machines ([VerifyOptions.SimPlatformKeys]).
func (s *SimIssuer) PlatformPublicKey() *ecdsa.PublicKey { return &s.key.PublicKey }

// Identity returns the identity the issuer claims.
func (s *SimIssuer) Identity() SimIdentity { return s.id }

// Issue returns simulated evidence binding reportData.
func (s *SimIssuer) Issue(ctx context.Context, reportData [64]byte) (*Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q := make([]byte, 0, SimQuoteSize)
	q = append(q, simQuoteMagic...)
	q = append(q, s.id.MREnclave[:]...)
	q = append(q, s.id.MRSigner[:]...)
	q = binary.BigEndian.AppendUint16(q, s.id.ProductID)
	q = binary.BigEndian.AppendUint16(q, s.id.SVN)
	var attr [16]byte
	attr[0] = 0x01 // INIT
	if s.id.Debug {
		attr[0] |= 0x02
	}
	q = append(q, attr[:]...)
	q = append(q, reportData[:]...)
	pub, err := s.key.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("attest: simulation platform key: %w", err)
	}
	q = append(q, pub...)
	sig, err := signRawECDSA(s.key, simSignedBytes(q))
	if err != nil {
		return nil, fmt.Errorf("attest: sign simulated quote: %w", err)
	}
	q = append(q, sig...)
	return &Evidence{Type: EvidenceSimulated, Quote: q}, nil
}

func simSignedBytes(q []byte) []byte {
	return append([]byte(simQuoteDomain), q[:simSigOffset]...)
}

// signRawECDSA signs SHA-256(msg) and returns r||s, 32 bytes each.
func signRawECDSA(key *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	h := sha256.Sum256(msg)
	der, err := ecdsa.SignASN1(rand.Reader, key, h[:])
	if err != nil {
		return nil, err
	}
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	sig.R.FillBytes(out[:32])
	sig.S.FillBytes(out[32:])
	return out, nil
}

// SimQuote is a parsed simulated quote.
type SimQuote struct {
	MREnclave   [32]byte
	MRSigner    [32]byte
	ProductID   uint16
	SVN         uint16
	Attributes  [16]byte
	ReportData  [64]byte
	PlatformKey []byte // 65 bytes, uncompressed P-256 point
	Signature   []byte // 64 bytes r||s
}

// ParseSimQuote parses a simulated quote (layout in the package
// documentation) without checking its signature.
func ParseSimQuote(b []byte) (*SimQuote, error) {
	if len(b) != SimQuoteSize {
		return nil, fmt.Errorf("simulated quote is %d bytes, want %d", len(b), SimQuoteSize)
	}
	if !bytes.HasPrefix(b, []byte(simQuoteMagic)) {
		return nil, errors.New("simulated quote has a bad magic")
	}
	q := &SimQuote{}
	off := 8
	off += copy(q.MREnclave[:], b[off:])
	off += copy(q.MRSigner[:], b[off:])
	q.ProductID = binary.BigEndian.Uint16(b[off:])
	q.SVN = binary.BigEndian.Uint16(b[off+2:])
	off += 4
	off += copy(q.Attributes[:], b[off:])
	copy(q.ReportData[:], b[off:])
	q.PlatformKey = b[simKeyOffset:simSigOffset]
	q.Signature = b[simSigOffset:]
	return q, nil
}

func verifySim(raw []byte, opts *VerifyOptions) (*Claims, error) {
	var s stepRunner
	if err := s.run(StepSimulationRefused, func() error {
		if !opts.AllowSimulation {
			return errors.New("evidence is simulated and simulation is not allowed")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var q *SimQuote
	if err := s.run(StepParse, func() (err error) {
		q, err = ParseSimQuote(raw)
		return err
	}); err != nil {
		return nil, err
	}
	var pub *ecdsa.PublicKey
	if err := s.run(StepSimPlatformKey, func() error {
		if len(opts.SimPlatformKeys) == 0 {
			return errors.New("no simulation platform key is trusted (VerifyOptions.SimPlatformKeys is empty)")
		}
		for _, k := range opts.SimPlatformKeys {
			if k == nil {
				continue
			}
			if b, err := k.Bytes(); err == nil && bytes.Equal(b, q.PlatformKey) {
				pub = k
				return nil
			}
		}
		return errors.New("simulated quote is signed by an untrusted simulation platform key")
	}); err != nil {
		return nil, err
	}
	if err := s.run(StepSimSignature, func() error {
		if !verifyRawECDSA(pub, simSignedBytes(raw), q.Signature) {
			return errors.New("simulated quote signature does not verify")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	s.skip(StepTCBStatus, "simulated evidence has no TCB")
	return &Claims{
		Type:       EvidenceSimulated,
		MREnclave:  q.MREnclave,
		MRSigner:   q.MRSigner,
		ProductID:  q.ProductID,
		SVN:        q.SVN,
		Debug:      q.Attributes[0]&0x02 != 0,
		Attributes: q.Attributes,
		ReportData: q.ReportData,
		Steps:      s.passed,
	}, nil
}

// LoadOrCreateSimPlatformKey reads the simulation platform key (PKCS #8 PEM)
// at path, or creates it: a new ECDSA P-256 key written with mode 0600
// atomically (a concurrent creator's key wins and is returned).
func LoadOrCreateSimPlatformKey(path string) (*ecdsa.PrivateKey, error) {
	key, err := LoadSimPlatformKey(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return key, err
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("attest: create simulation platform key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("attest: create simulation platform key: %w", err)
	}
	created, err := createExclusive(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		return nil, fmt.Errorf("attest: create simulation platform key: %w", err)
	}
	if !created {
		return LoadSimPlatformKey(path)
	}
	return key, nil
}

// createExclusive writes data to path with mode 0600 unless path exists,
// creating its directory (mode 0700) if needed. The file appears whole or
// not at all (written beside it, synced, then hard-linked into place), so
// concurrent creators agree on one content: it reports false, writing
// nothing, when another creator won.
func createExclusive(path string, data []byte) (created bool, err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	// Link fails if the file exists: whoever linked first wins.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// LoadSimPlatformKey reads a simulation platform private key (PKCS #8 or SEC 1
// PEM, ECDSA P-256).
func LoadSimPlatformKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := readLimited(path, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("attest: simulation platform key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("attest: simulation platform key %s is not PEM", path)
	}
	var key *ecdsa.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("attest: simulation platform key %s: %w", path, err)
		}
		var ok bool
		if key, ok = k.(*ecdsa.PrivateKey); !ok {
			return nil, fmt.Errorf("attest: simulation platform key %s is not ECDSA", path)
		}
	case "EC PRIVATE KEY":
		if key, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			return nil, fmt.Errorf("attest: simulation platform key %s: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("attest: simulation platform key %s: PEM block %q", path, block.Type)
	}
	if key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("attest: simulation platform key %s is not P-256", path)
	}
	return key, nil
}

// LoadSimPlatformPublicKey reads the public half of a simulation platform
// key file: a private key (see [LoadSimPlatformKey]) or a PKIX "PUBLIC KEY"
// PEM, so verifiers can trust another machine's key without its secret.
func LoadSimPlatformPublicKey(path string) (*ecdsa.PublicKey, error) {
	b, err := readLimited(path, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("attest: simulation platform key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block != nil && block.Type == "PUBLIC KEY" {
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("attest: simulation platform key %s: %w", path, err)
		}
		pub, ok := k.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("attest: simulation platform key %s is not ECDSA P-256", path)
		}
		return pub, nil
	}
	key, err := LoadSimPlatformKey(path)
	if err != nil {
		return nil, err
	}
	return &key.PublicKey, nil
}
