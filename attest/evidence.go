package attest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// EvidenceType says what kind of evidence a quote is.
type EvidenceType string

// Evidence types.
const (
	// EvidenceSimulated is a quote signed by a simulation platform key; it
	// proves nothing against a malicious host.
	EvidenceSimulated EvidenceType = "simulated"
	// EvidenceSGXDCAP is an Intel SGX DCAP ECDSA quote, version 3.
	EvidenceSGXDCAP EvidenceType = "sgx-dcap"
)

// Evidence is a quote and its type, as it travels over the bus and across the
// enclave boundary.
type Evidence struct {
	Type  EvidenceType
	Quote []byte
}

const (
	evidenceMagic      = "CLEV"
	evidenceVersion    = 1
	evidenceHeaderSize = 4 + 1 + 1 + 4
	evidenceTypeSim    = 1
	evidenceTypeDCAP   = 2
)

// ErrMalformedEvidence is wrapped by every evidence decoding error.
var ErrMalformedEvidence = errors.New("malformed evidence")

// MarshalBinary encodes the evidence (see the package documentation for the
// layout).
func (e *Evidence) MarshalBinary() ([]byte, error) {
	var t byte
	switch e.Type {
	case EvidenceSimulated:
		t = evidenceTypeSim
	case EvidenceSGXDCAP:
		t = evidenceTypeDCAP
	default:
		return nil, fmt.Errorf("attest: marshal evidence: unknown type %q", e.Type)
	}
	if len(e.Quote) > MaxQuoteSize {
		return nil, fmt.Errorf("attest: marshal evidence: quote is %d bytes, more than %d", len(e.Quote), MaxQuoteSize)
	}
	out := make([]byte, evidenceHeaderSize, evidenceHeaderSize+len(e.Quote))
	copy(out, evidenceMagic)
	out[4] = evidenceVersion
	out[5] = t
	binary.BigEndian.PutUint32(out[6:10], uint32(len(e.Quote)))
	return append(out, e.Quote...), nil
}

// UnmarshalBinary decodes evidence strictly: right magic and version, a known
// type, an exact length and no trailing bytes. The quote is copied.
func (e *Evidence) UnmarshalBinary(b []byte) error {
	if len(b) < evidenceHeaderSize {
		return fmt.Errorf("attest: %w: %d bytes, shorter than the %d-byte header", ErrMalformedEvidence, len(b), evidenceHeaderSize)
	}
	if !bytes.Equal(b[:4], []byte(evidenceMagic)) {
		return fmt.Errorf("attest: %w: bad magic %q", ErrMalformedEvidence, b[:4])
	}
	if b[4] != evidenceVersion {
		return fmt.Errorf("attest: %w: version %d not supported (need %d)", ErrMalformedEvidence, b[4], evidenceVersion)
	}
	var t EvidenceType
	switch b[5] {
	case evidenceTypeSim:
		t = EvidenceSimulated
	case evidenceTypeDCAP:
		t = EvidenceSGXDCAP
	default:
		return fmt.Errorf("attest: %w: unknown evidence type %d", ErrMalformedEvidence, b[5])
	}
	n := binary.BigEndian.Uint32(b[6:10])
	if n > MaxQuoteSize {
		return fmt.Errorf("attest: %w: quote length %d exceeds %d", ErrMalformedEvidence, n, MaxQuoteSize)
	}
	if uint64(len(b)-evidenceHeaderSize) != uint64(n) {
		return fmt.Errorf("attest: %w: quote length field says %d bytes, %d follow", ErrMalformedEvidence, n, len(b)-evidenceHeaderSize)
	}
	e.Type = t
	e.Quote = bytes.Clone(b[evidenceHeaderSize:])
	if e.Quote == nil {
		e.Quote = []byte{}
	}
	return nil
}

// IsEncodedEvidence reports whether b starts like an encoded [Evidence].
func IsEncodedEvidence(b []byte) bool { return bytes.HasPrefix(b, []byte(evidenceMagic)) }

// DetectEvidence turns raw bytes into evidence: an encoded [Evidence], a raw
// simulated quote (by its magic), or else an SGX DCAP quote.
func DetectEvidence(b []byte) (*Evidence, error) {
	if IsEncodedEvidence(b) {
		var e Evidence
		if err := e.UnmarshalBinary(b); err != nil {
			return nil, err
		}
		return &e, nil
	}
	if bytes.HasPrefix(b, []byte(simQuoteMagic)) {
		return &Evidence{Type: EvidenceSimulated, Quote: bytes.Clone(b)}, nil
	}
	return &Evidence{Type: EvidenceSGXDCAP, Quote: bytes.Clone(b)}, nil
}
