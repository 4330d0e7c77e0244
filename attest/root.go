package attest

import (
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"errors"
	"fmt"
)

// intelSGXRootCAPEM is the Intel SGX Root CA certificate (P-256, valid
// 2018-05-21 to 2049-12-31, DER SHA-256
// 44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3), the
// trust anchor of every DCAP quote and collateral item.
//
//go:embed intel_sgx_root_ca.pem
var intelSGXRootCAPEM string

// IntelSGXRootCA returns a freshly parsed copy of the pinned Intel SGX Root CA.
func IntelSGXRootCA() (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(intelSGXRootCAPEM))
	if block == nil {
		return nil, errors.New("attest: embedded Intel SGX root CA is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("attest: parse embedded Intel SGX root CA: %w", err)
	}
	return cert, nil
}
