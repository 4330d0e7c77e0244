package seal

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SimulatedKeySource derives root keys from a platform secret and the
// MRENCLAVE / MRSIGNER values it is given.
//
// Simulation promises nothing against a malicious host: the secret comes
// from the host, and the identity is whatever the host reports. Use it only for
// development and tests on machines without SGX.
type SimulatedKeySource struct {
	// Secret is the platform secret (at least 16 bytes), handed in by
	// whoever runs the enclave (attest.SimulationRoot.SealSecret on the
	// host, carried to the image in its Init message).
	Secret []byte
	// MREnclave is the simulated enclave measurement (e.g. the SHA-256 of the
	// image). Required for PolicyMRENCLAVE.
	MREnclave [32]byte
	// MRSigner is the simulated signer identity. Required for
	// PolicyMRSIGNER.
	MRSigner [32]byte
}

// ErrNoIdentity is returned by SimulatedKeySource when the identity the
// policy needs is all zeros (not configured).
var ErrNoIdentity = errors.New("seal: identity for this policy not configured (all zeros)")

// RootKey implements KeySource.
func (s *SimulatedKeySource) RootKey(p Policy) ([]byte, error) {
	if len(s.Secret) < 16 {
		return nil, fmt.Errorf("seal: simulated platform secret is %d bytes, need at least 16", len(s.Secret))
	}
	var id [32]byte
	var info string
	switch p {
	case PolicyMRENCLAVE:
		id, info = s.MREnclave, "cloister/seal/sim/v1/mrenclave"
	case PolicyMRSIGNER:
		id, info = s.MRSigner, "cloister/seal/sim/v1/mrsigner"
	default:
		return nil, fmt.Errorf("%w: %d", ErrUnknownPolicy, uint8(p))
	}
	if id == ([32]byte{}) {
		return nil, fmt.Errorf("%w: %s", ErrNoIdentity, p)
	}
	return hkdf.Key(sha256.New, s.Secret, id[:], info, 32)
}

// DefaultAttestationRoot is the directory Gramine exposes its attestation
// pseudo-files under.
const DefaultAttestationRoot = "/dev/attestation"

// GramineKeySource reads the SGX seal keys Gramine exposes as
// <Root>/keys/_sgx_mrenclave and <Root>/keys/_sgx_mrsigner (16 bytes each).
type GramineKeySource struct {
	// Root is the attestation directory; empty means DefaultAttestationRoot.
	Root string
}

// RootKey implements KeySource.
func (g GramineKeySource) RootKey(p Policy) ([]byte, error) {
	var name string
	switch p {
	case PolicyMRENCLAVE:
		name = "_sgx_mrenclave"
	case PolicyMRSIGNER:
		name = "_sgx_mrsigner"
	default:
		return nil, fmt.Errorf("%w: %d", ErrUnknownPolicy, uint8(p))
	}
	path := filepath.Join(g.Dir(), "keys", name)
	k, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seal: read Gramine seal key: %w", err)
	}
	if len(k) != 16 {
		return nil, fmt.Errorf("seal: Gramine seal key %s is %d bytes, want 16", path, len(k))
	}
	return k, nil
}

// Available reports whether the Gramine MRENCLAVE seal key file exists, i.e.
// whether the process appears to run under Gramine with this root.
func (g GramineKeySource) Available() bool {
	_, err := os.Stat(filepath.Join(g.Dir(), "keys", "_sgx_mrenclave"))
	return err == nil
}

// Dir returns the attestation directory: Root, or DefaultAttestationRoot
// when Root is empty.
func (g GramineKeySource) Dir() string {
	if g.Root == "" {
		return DefaultAttestationRoot
	}
	return g.Root
}
