package manifest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// updateLabel domain-separates update signatures.
const updateLabel = "cloister manifest update v1\n"

// Update errors, for errors.Is.
var (
	// ErrNoOwner: the current manifest names no owner key, so it cannot be
	// updated.
	ErrNoOwner = errors.New("manifest: no owner key, updates are not possible")
	// ErrNotNewer: the update's version is not higher than the current one.
	ErrNotNewer = errors.New("manifest: update does not increase the version")
	// ErrBadSignature: the signature is not the current owner's over this
	// update.
	ErrBadSignature = errors.New("manifest: bad update signature")
)

// UpdateMessage returns the message an owner signs to move from the
// manifest with hash current to the one with hash next.
func UpdateMessage(current, next [32]byte) []byte {
	b := make([]byte, 0, len(updateLabel)+64)
	b = append(b, updateLabel...)
	b = append(b, current[:]...)
	return append(b, next[:]...)
}

// SignUpdate signs the update from current to next with the owner's private
// key (ed25519.PrivateKey or *ecdsa.PrivateKey on P-256, or any
// crypto.Signer for such keys).
func SignUpdate(owner crypto.Signer, current, next *Manifest) ([]byte, error) {
	msg := UpdateMessage(current.Hash(), next.Hash())
	switch owner.Public().(type) {
	case ed25519.PublicKey:
		sig, err := owner.Sign(rand.Reader, msg, crypto.Hash(0))
		if err != nil {
			return nil, fmt.Errorf("manifest: sign update: %w", err)
		}
		return sig, nil
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		sig, err := owner.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("manifest: sign update: %w", err)
		}
		return sig, nil
	}
	return nil, fmt.Errorf("manifest: sign update: %T key, want ECDSA P-256 or Ed25519", owner.Public())
}

// Verify checks the owner's signature over msg.
func (o *Owner) Verify(msg, sig []byte) bool {
	switch k := o.PublicKey.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		return ecdsa.VerifyASN1(k, d[:], sig)
	}
	return false
}

// PKIX returns the key's PKIX DER encoding.
func (o *Owner) PKIX() []byte { return append([]byte(nil), o.der...) }

// Equal reports whether o and other are the same key.
func (o *Owner) Equal(other *Owner) bool {
	return other != nil && string(o.der) == string(other.der)
}

// VerifyUpdate accepts next as the successor of m: next's version must be
// higher, and sig must be m's owner's signature over [UpdateMessage] of the
// two hashes. Errors wrap [ErrNoOwner], [ErrNotNewer] or [ErrBadSignature].
func (m *Manifest) VerifyUpdate(next *Manifest, sig []byte) error {
	if m.Owner == nil {
		return ErrNoOwner
	}
	if next == nil {
		return fmt.Errorf("manifest: no update given")
	}
	if next.Version <= m.Version {
		return fmt.Errorf("%w: version %d after %d", ErrNotNewer, next.Version, m.Version)
	}
	if !m.Owner.Verify(UpdateMessage(m.Hash(), next.Hash()), sig) {
		return fmt.Errorf("%w: from %s (version %d) to %s (version %d)", ErrBadSignature, m.HashHex()[:16], m.Version, next.HashHex()[:16], next.Version)
	}
	return nil
}

// ParseSigningKey decodes an owner private key from PEM: PKCS #8
// ("PRIVATE KEY", Ed25519 or ECDSA P-256) or SEC 1 ("EC PRIVATE KEY",
// P-256), as openssl writes them. It is for the owner's tools (the CLI);
// the private key never belongs in a manifest.
func ParseSigningKey(pemBytes []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		return nil, errors.New("manifest: signing key: no PEM block")
	}
	var k any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("manifest: signing key: PEM block %q, want \"PRIVATE KEY\" or \"EC PRIVATE KEY\"", blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("manifest: signing key: %w", err)
	}
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("manifest: signing key: ECDSA on %s, want P-256", k.Curve.Params().Name)
		}
		return k, nil
	}
	return nil, fmt.Errorf("manifest: signing key: %T, want Ed25519 or ECDSA P-256", k)
}
