package attest

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
)

// PCKExtensions are the Intel SGX extensions of a PCK certificate.
type PCKExtensions struct {
	// FMSPC is the family-model-stepping-platform-custom SKU (6 bytes).
	FMSPC [6]byte
	// PCEID identifies the provisioning certification enclave (2 bytes).
	PCEID [2]byte
	// CompSVNs are the 16 SGX TCB component SVNs.
	CompSVNs [16]int
	// PCESVN is the PCE security version number of the PCK's TCB.
	PCESVN int
	// CPUSVN is the raw CPUSVN of the PCK's TCB.
	CPUSVN []byte
}

// oidSGXExtensions is 1.2.840.113741.1.13.1; its arcs are below.
func oidSGX(arcs ...int) asn1.ObjectIdentifier {
	return append(asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}, arcs...)
}

type sgxExtItem struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

func parseSGXItems(b []byte) ([]sgxExtItem, error) {
	var items []sgxExtItem
	rest, err := asn1.Unmarshal(b, &items)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, errors.New("trailing bytes")
	}
	return items, nil
}

// ParsePCKExtensions reads the SGX extension (OID 1.2.840.113741.1.13.1) of a
// PCK certificate: FMSPC, PCE ID, TCB component SVNs and PCESVN.
func ParsePCKExtensions(cert *x509.Certificate) (*PCKExtensions, error) {
	var raw []byte
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidSGX()) {
			if raw != nil {
				return nil, errors.New("PCK certificate has two SGX extensions")
			}
			raw = e.Value
		}
	}
	if raw == nil {
		return nil, errors.New("PCK certificate has no SGX extension (1.2.840.113741.1.13.1)")
	}
	return parseSGXExtension(raw)
}

func parseSGXExtension(raw []byte) (*PCKExtensions, error) {
	items, err := parseSGXItems(raw)
	if err != nil {
		return nil, fmt.Errorf("SGX extension: %w", err)
	}
	out := &PCKExtensions{}
	var haveFMSPC, havePCEID, haveTCB bool
	for _, it := range items {
		switch {
		case it.ID.Equal(oidSGX(4)):
			b, err := octets(it.Value, 6)
			if err != nil {
				return nil, fmt.Errorf("SGX extension FMSPC: %w", err)
			}
			copy(out.FMSPC[:], b)
			haveFMSPC = true
		case it.ID.Equal(oidSGX(3)):
			b, err := octets(it.Value, 2)
			if err != nil {
				return nil, fmt.Errorf("SGX extension PCE ID: %w", err)
			}
			copy(out.PCEID[:], b)
			havePCEID = true
		case it.ID.Equal(oidSGX(2)):
			if err := out.parseTCB(it.Value.FullBytes); err != nil {
				return nil, fmt.Errorf("SGX extension TCB: %w", err)
			}
			haveTCB = true
		}
	}
	if !haveFMSPC || !havePCEID || !haveTCB {
		return nil, fmt.Errorf("SGX extension lacks FMSPC (%t), PCE ID (%t) or TCB (%t)", haveFMSPC, havePCEID, haveTCB)
	}
	return out, nil
}

func (p *PCKExtensions) parseTCB(b []byte) error {
	items, err := parseSGXItems(b)
	if err != nil {
		return err
	}
	var seen [19]bool
	for _, it := range items {
		if len(it.ID) != len(oidSGX())+2 || !it.ID[:len(it.ID)-1].Equal(oidSGX(2)) {
			continue
		}
		n := it.ID[len(it.ID)-1]
		switch {
		case n >= 1 && n <= 17:
			var v int
			if rest, err := asn1.Unmarshal(it.Value.FullBytes, &v); err != nil || len(rest) != 0 {
				return fmt.Errorf("component %d is not an INTEGER", n)
			}
			if v < 0 || v > 65535 {
				return fmt.Errorf("component %d out of range: %d", n, v)
			}
			if n == 17 {
				p.PCESVN = v
			} else {
				p.CompSVNs[n-1] = v
			}
		case n == 18:
			b, err := octets(it.Value, 16)
			if err != nil {
				return fmt.Errorf("CPUSVN: %w", err)
			}
			p.CPUSVN = b
		default:
			continue
		}
		if seen[n] {
			return fmt.Errorf("component %d given twice", n)
		}
		seen[n] = true
	}
	for n := 1; n <= 17; n++ {
		if !seen[n] {
			return fmt.Errorf("component %d missing", n)
		}
	}
	return nil
}

func octets(v asn1.RawValue, size int) ([]byte, error) {
	var b []byte
	rest, err := asn1.Unmarshal(v.FullBytes, &b)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, errors.New("trailing bytes")
	}
	if len(b) != size {
		return nil, fmt.Errorf("%d bytes, want %d", len(b), size)
	}
	return b, nil
}
