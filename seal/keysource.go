package seal

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// PlatformSecretSize is the size of a simulated platform secret in bytes.
const PlatformSecretSize = 32

// SimulatedKeySource derives root keys from a platform secret and the
// MRENCLAVE / MRSIGNER values it is given.
//
// Simulation promises nothing against a malicious host: the secret is a file
// on the host, and the identity is whatever the host reports. Use it only for
// development and tests on machines without SGX.
type SimulatedKeySource struct {
	// Secret is the per-machine platform secret (at least 16 bytes). See
	// LoadOrCreatePlatformSecret.
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
	root := g.Root
	if root == "" {
		root = DefaultAttestationRoot
	}
	path := filepath.Join(root, "keys", name)
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
	root := g.Root
	if root == "" {
		root = DefaultAttestationRoot
	}
	_, err := os.Stat(filepath.Join(root, "keys", "_sgx_mrenclave"))
	return err == nil
}

// DefaultPlatformSecretPath returns os.UserConfigDir()/cloister/sim-seal-secret.
func DefaultPlatformSecretPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("seal: locate platform secret: %w", err)
	}
	return filepath.Join(dir, "cloister", "sim-seal-secret"), nil
}

// LoadOrCreatePlatformSecret reads the simulated platform secret at path
// (DefaultPlatformSecretPath when empty), creating it with
// PlatformSecretSize random bytes and mode 0600 if it does not exist. Creation
// is atomic: the secret is written to a temporary file in the same directory
// and hard-linked into place, so concurrent first uses agree on one secret and
// no reader ever sees a partial file.
func LoadOrCreatePlatformSecret(path string) ([]byte, error) {
	if path == "" {
		p, err := DefaultPlatformSecretPath()
		if err != nil {
			return nil, err
		}
		path = p
	}
	if b, err := readSecret(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("seal: create platform secret directory: %w", err)
	}
	secret := make([]byte, PlatformSecretSize)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("seal: random platform secret: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".sim-seal-secret-*")
	if err != nil {
		return nil, fmt.Errorf("seal: create platform secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("seal: create platform secret: %w", err)
	}
	if _, err := tmp.Write(secret); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("seal: write platform secret: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("seal: write platform secret: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("seal: write platform secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process won the race; use its secret.
			return readSecret(path)
		}
		return nil, fmt.Errorf("seal: install platform secret: %w", err)
	}
	return secret, nil
}

func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seal: read platform secret: %w", err)
	}
	if len(b) != PlatformSecretSize {
		return nil, fmt.Errorf("seal: platform secret %s is %d bytes, want %d (corrupt? delete it to start over, losing simulated sealed data)", path, len(b), PlatformSecretSize)
	}
	return b, nil
}
