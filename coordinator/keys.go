package coordinator

import (
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/cloister-dev/cloister/secure"
)

// Derivation labels; each output of the root secret has its own.
const (
	labelSecret  = "cloister/coordinator/v1/secret"
	labelChannel = "cloister/coordinator/v1/channel-key"
)

// frame appends length-prefixed fields to label, so that no two field
// lists give the same info.
func frame(label string, fields ...string) string {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(label)))
	b = append(b, label...)
	for _, f := range fields {
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	return string(b)
}

// derive is every key the root secret gives: HKDF-SHA256(root, info =
// frame(label, fields...)), size bytes.
func derive(root []byte, size int, label string, fields ...string) ([]byte, error) {
	return hkdf.Key(sha256.New, root, nil, frame(label, fields...), size)
}

// deriveSecret derives the generated secret name of service.
func deriveSecret(root []byte, service, name string, size int) ([]byte, error) {
	k, err := derive(root, size, labelSecret, service, name)
	if err != nil {
		return nil, fmt.Errorf("coordinator: derive secret %s of %s: %w", name, service, err)
	}
	return k, nil
}

// channelKey derives the client-channel key of service (X-Wing, the
// default suite): every instance of the service, before and after any
// restart of the coordinator, gets the same key.
func channelKey(root []byte, service string) (*secure.ServiceKey, error) {
	ikm, err := derive(root, 32, labelChannel, service)
	if err != nil {
		return nil, fmt.Errorf("coordinator: derive channel key of %s: %w", service, err)
	}
	defer clear(ikm)
	kem := hpke.MLKEM768X25519()
	priv, err := kem.DeriveKeyPair(ikm)
	if err != nil {
		return nil, fmt.Errorf("coordinator: derive channel key of %s: %w", service, err)
	}
	raw, err := priv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("coordinator: channel key of %s: %w", service, err)
	}
	// raw is priv's own seed (crypto/hpke does not copy it); priv is
	// dropped here, and ParseServiceKey copies what it keeps.
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(raw)), uint16(secure.SuiteHybrid))
	b = append(b, raw...)
	k, err := secure.ParseServiceKey(b)
	clear(b)
	clear(raw)
	if err != nil {
		return nil, fmt.Errorf("coordinator: channel key of %s: %w", service, err)
	}
	return k, nil
}
