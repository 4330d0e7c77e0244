package attest

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Sizes of the fixed parts of an SGX DCAP version 3 quote.
const (
	QuoteHeaderSize = 48
	ReportBodySize  = 384
	// MaxQuoteSize bounds every quote this package reads.
	MaxQuoteSize = 1 << 20
)

const (
	quoteVersion3      = 3
	attKeyECDSAP256    = 2
	teeTypeSGX         = 0
	certDataPCKChain   = 5
	ecdsaSigSize       = 64
	ecdsaKeySize       = 64
	sigFixedPartLength = ecdsaSigSize + ecdsaKeySize + ReportBodySize + ecdsaSigSize
)

// intelQEVendorID is the QE vendor ID of Intel's quoting enclave.
const intelQEVendorID = "\x93\x9a\x72\x33\xf7\x9c\x4c\xa9\x94\x0a\x0d\xb3\x95\x7f\x06\x07"

// ReportBody is an SGX enclave report body (384 bytes), as found in a quote
// (the application enclave) and in its signature data (the quoting enclave).
type ReportBody struct {
	// CPUSVN is the security version of the CPU.
	CPUSVN [16]byte
	// MiscSelect is the enclave's MISCSELECT.
	MiscSelect uint32
	// Attributes are the enclave's flags (bit 1: DEBUG) and XFRM.
	Attributes [16]byte
	// MREnclave is the enclave measurement.
	MREnclave [32]byte
	// MRSigner is the hash of the enclave signer's key.
	MRSigner [32]byte
	// ISVProdID is the product ID the signer gave the enclave.
	ISVProdID uint16
	// ISVSVN is the enclave's security version.
	ISVSVN uint16
	// ReportData is the data the enclave bound into the report.
	ReportData [64]byte
}

// Debug reports whether the DEBUG attribute is set.
func (r *ReportBody) Debug() bool { return r.Attributes[0]&0x02 != 0 }

func parseReportBody(b []byte) ReportBody {
	var r ReportBody
	copy(r.CPUSVN[:], b[0:16])
	r.MiscSelect = binary.LittleEndian.Uint32(b[16:20])
	copy(r.Attributes[:], b[48:64])
	copy(r.MREnclave[:], b[64:96])
	copy(r.MRSigner[:], b[128:160])
	r.ISVProdID = binary.LittleEndian.Uint16(b[256:258])
	r.ISVSVN = binary.LittleEndian.Uint16(b[258:260])
	copy(r.ReportData[:], b[320:384])
	return r
}

// Quote is a parsed SGX DCAP version 3 quote with an ECDSA P-256 attestation
// key. The byte slices alias the parsed input.
type Quote struct {
	// Version is the quote version (3).
	Version uint16
	// AttKeyType is the attestation key type (2, ECDSA P-256).
	AttKeyType uint16
	// TEEType is 0 for SGX (reserved in version 3).
	TEEType uint32
	// QESVN and PCESVN are the quoting and provisioning enclaves' SVNs.
	QESVN, PCESVN uint16
	// QEVendorID identifies the quoting enclave's vendor (Intel).
	QEVendorID [16]byte
	// UserData is the header's user data (the first 16 bytes hold the QE ID).
	UserData [20]byte
	// Report is the application enclave's report body.
	Report ReportBody
	// Signature is the 64-byte r||s ECDSA signature over Signed.
	Signature []byte
	// AttestKey is the 64-byte x||y attestation public key.
	AttestKey []byte
	// QEReport is the quoting enclave's report.
	QEReport ReportBody
	// QEReportRaw is the 384-byte QE report body, signed by the PCK key.
	QEReportRaw []byte
	// QEReportSig is the 64-byte r||s signature over QEReportRaw.
	QEReportSig []byte
	// QEAuthData is the QE authentication data, bound by the QE report data.
	QEAuthData []byte
	// CertType is the certification data type (5: PEM PCK chain).
	CertType uint16
	// CertData is the certification data.
	CertData []byte
	// Signed is header || report body, the bytes the quote signature covers.
	Signed []byte
}

// ParseQuote parses an SGX DCAP version 3 ECDSA P-256 quote. It checks the
// bounds of every field and rejects trailing bytes; it verifies nothing
// cryptographic (see [Verify]).
func ParseQuote(b []byte) (*Quote, error) {
	if len(b) > MaxQuoteSize {
		return nil, fmt.Errorf("quote is %d bytes, more than the %d allowed", len(b), MaxQuoteSize)
	}
	if len(b) < QuoteHeaderSize+ReportBodySize+4 {
		return nil, fmt.Errorf("quote is %d bytes, shorter than header, report body and signature length (%d)", len(b), QuoteHeaderSize+ReportBodySize+4)
	}
	q := &Quote{}
	q.Version = binary.LittleEndian.Uint16(b[0:2])
	q.AttKeyType = binary.LittleEndian.Uint16(b[2:4])
	q.TEEType = binary.LittleEndian.Uint32(b[4:8])
	q.QESVN = binary.LittleEndian.Uint16(b[8:10])
	q.PCESVN = binary.LittleEndian.Uint16(b[10:12])
	copy(q.QEVendorID[:], b[12:28])
	copy(q.UserData[:], b[28:48])
	if q.Version != quoteVersion3 {
		return nil, fmt.Errorf("quote version %d not supported (need 3)", q.Version)
	}
	if q.AttKeyType != attKeyECDSAP256 {
		return nil, fmt.Errorf("attestation key type %d not supported (need 2, ECDSA P-256)", q.AttKeyType)
	}
	if q.TEEType != teeTypeSGX {
		return nil, fmt.Errorf("TEE type %#x not supported (need 0, SGX)", q.TEEType)
	}
	if string(q.QEVendorID[:]) != intelQEVendorID {
		return nil, fmt.Errorf("QE vendor ID %x is not Intel's", q.QEVendorID)
	}
	q.Report = parseReportBody(b[QuoteHeaderSize : QuoteHeaderSize+ReportBodySize])
	q.Signed = b[:QuoteHeaderSize+ReportBodySize]

	off := QuoteHeaderSize + ReportBodySize
	sigLen := binary.LittleEndian.Uint32(b[off : off+4])
	off += 4
	rest := b[off:]
	if uint64(sigLen) != uint64(len(rest)) {
		return nil, fmt.Errorf("signature data length field says %d bytes, %d follow", sigLen, len(rest))
	}
	if len(rest) < sigFixedPartLength+2 {
		return nil, fmt.Errorf("signature data is %d bytes, shorter than its fixed part (%d)", len(rest), sigFixedPartLength+2)
	}
	q.Signature = rest[0:64]
	q.AttestKey = rest[64:128]
	q.QEReportRaw = rest[128 : 128+ReportBodySize]
	q.QEReport = parseReportBody(q.QEReportRaw)
	q.QEReportSig = rest[128+ReportBodySize : sigFixedPartLength]
	rest = rest[sigFixedPartLength:]

	authLen := int(binary.LittleEndian.Uint16(rest[0:2]))
	rest = rest[2:]
	if authLen > len(rest) {
		return nil, fmt.Errorf("QE authentication data length %d exceeds the %d bytes left", authLen, len(rest))
	}
	q.QEAuthData = rest[:authLen]
	rest = rest[authLen:]

	if len(rest) < 6 {
		return nil, fmt.Errorf("certification data header needs 6 bytes, %d left", len(rest))
	}
	q.CertType = binary.LittleEndian.Uint16(rest[0:2])
	certLen := binary.LittleEndian.Uint32(rest[2:6])
	rest = rest[6:]
	if uint64(certLen) != uint64(len(rest)) {
		return nil, fmt.Errorf("certification data length field says %d bytes, %d follow", certLen, len(rest))
	}
	q.CertData = rest
	return q, nil
}

// pckChainPEM returns the PEM bytes of a type 5 certification data, without a
// trailing NUL.
func (q *Quote) pckChainPEM() ([]byte, error) {
	if q.CertType != certDataPCKChain {
		return nil, fmt.Errorf("certification data type %d not supported (need 5, PCK certificate chain)", q.CertType)
	}
	// Some quoting libraries end the chain with one NUL byte, some do not.
	return bytes.TrimSuffix(q.CertData, []byte{0}), nil
}
