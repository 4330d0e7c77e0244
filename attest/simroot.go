package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Files of a [SimulationRoot] directory.
const (
	// SimPlatformKeyFile holds the platform key (PKCS #8 PEM, mode 0600).
	SimPlatformKeyFile = "sim-platform-key.pem"
	// SimSealSecretFile holds the platform secret (SimSealSecretSize raw
	// bytes, mode 0600).
	SimSealSecretFile = "sim-seal-secret"
	// SimSealSecretSize is the size of a platform secret in bytes.
	SimSealSecretSize = 32
)

// SimulationRoot is the trust root of simulation mode on one machine: the
// platform key that signs simulated quotes and the platform secret that
// simulated seal keys derive from (seal.SimulatedKeySource). Whoever holds
// it can forge any simulated enclave, so simulation promises nothing
// against a malicious host.
//
// No package of this module finds a SimulationRoot on its own: the program
// (a command, an application) decides where it lives and hands it to what
// issues evidence, seals, verifies or provisions. A SimulationRoot is
// immutable and safe for concurrent use.
type SimulationRoot struct {
	key    *ecdsa.PrivateKey
	secret []byte
}

// LoadOrCreateSimulationRoot reads the simulation root kept in dir
// ([SimPlatformKeyFile] and [SimSealSecretFile]), creating whichever file
// is missing (and dir, mode 0700). Creation is atomic, so concurrent first
// uses on one machine agree on one root.
func LoadOrCreateSimulationRoot(dir string) (*SimulationRoot, error) {
	if dir == "" {
		return nil, errors.New("attest: simulation root: no directory given")
	}
	key, err := LoadOrCreateSimPlatformKey(filepath.Join(dir, SimPlatformKeyFile))
	if err != nil {
		return nil, err
	}
	secret, err := loadOrCreateSealSecret(filepath.Join(dir, SimSealSecretFile))
	if err != nil {
		return nil, err
	}
	return &SimulationRoot{key: key, secret: secret}, nil
}

// NewEphemeralSimulationRoot returns a fresh simulation root that lives in
// memory only: for tests, and for programs whose simulated enclaves need
// not outlive them (their sealed state cannot be read by the next run).
func NewEphemeralSimulationRoot() (*SimulationRoot, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("attest: simulation root: %w", err)
	}
	secret := make([]byte, SimSealSecretSize)
	rand.Read(secret)
	return &SimulationRoot{key: key, secret: secret}, nil
}

// PlatformPublicKey returns the public platform key: what verifiers trust
// ([VerifyOptions.SimPlatformKeys]), on this machine or others.
func (r *SimulationRoot) PlatformPublicKey() *ecdsa.PublicKey { return &r.key.PublicKey }

// Issuer returns an issuer of simulated quotes claiming id, signed by the
// platform key.
func (r *SimulationRoot) Issuer(id SimIdentity) *SimIssuer {
	return &SimIssuer{id: id, key: r.key}
}

// SealSecret returns a copy of the platform secret simulated seal keys
// derive from (seal.SimulatedKeySource.Secret; the host hands it to a
// simulated enclave in its Init message).
func (r *SimulationRoot) SealSecret() []byte { return append([]byte(nil), r.secret...) }

// loadOrCreateSealSecret reads the platform secret at path, or creates it
// with SimSealSecretSize random bytes.
func loadOrCreateSealSecret(path string) ([]byte, error) {
	if b, err := readSealSecret(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return b, err
	}
	secret := make([]byte, SimSealSecretSize)
	rand.Read(secret)
	created, err := createExclusive(path, secret)
	if err != nil {
		return nil, fmt.Errorf("attest: create simulation seal secret: %w", err)
	}
	if !created {
		return readSealSecret(path)
	}
	return secret, nil
}

func readSealSecret(path string) ([]byte, error) {
	b, err := readLimited(path, 1<<10)
	if err != nil {
		return nil, fmt.Errorf("attest: simulation seal secret: %w", err)
	}
	if len(b) != SimSealSecretSize {
		return nil, fmt.Errorf("attest: simulation seal secret %s is %d bytes, want %d (corrupt? delete it to start over, losing simulated sealed data)", path, len(b), SimSealSecretSize)
	}
	return b, nil
}
