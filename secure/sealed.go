package secure

import (
	"crypto/hpke"
	"encoding/binary"
	"fmt"
)

const sealedHdrLen = 6 // magic "CSS", version, u16 KEM ID

// SealTo encrypts plaintext to the holder of pub's private key with
// single-shot HPKE, under info (what the message is for: bind the purpose
// and, e.g., the join nonce). The result is
// "CSS" ‖ 1 ‖ u16 KEM ID ‖ enc ‖ ciphertext; open it with
// [ServiceKey.OpenSealed] and the same info.
func SealTo(pub *PublicKey, info, plaintext []byte) ([]byte, error) {
	if pub == nil {
		return nil, fmt.Errorf("secure: nil public key")
	}
	hdr := []byte{'C', 'S', 'S', Version, 0, 0}
	binary.BigEndian.PutUint16(hdr[4:], uint16(pub.suite))
	ct, err := hpke.Seal(pub.pk, kdf(), aead(), sealedInfo(hdr, info), plaintext)
	if err != nil {
		return nil, fmt.Errorf("secure: HPKE seal: %w", err)
	}
	return append(hdr, ct...), nil
}

// sealedInfo is label ‖ header ‖ caller's info: the header is bound too.
func sealedInfo(hdr, info []byte) []byte {
	b := make([]byte, 0, len(sealedLabel)+len(hdr)+len(info))
	return append(append(append(b, sealedLabel...), hdr...), info...)
}

// OpenSealed opens a message made by [SealTo] for k's public key under info.
func (k *ServiceKey) OpenSealed(info, msg []byte) ([]byte, error) {
	if len(msg) < sealedHdrLen {
		return nil, fmt.Errorf("%w sealed message: %d bytes", ErrMalformed, len(msg))
	}
	if msg[0] != 'C' || msg[1] != 'S' || msg[2] != 'S' {
		return nil, fmt.Errorf("%w sealed message: bad magic %q", ErrMalformed, msg[:3])
	}
	if msg[3] != Version {
		return nil, fmt.Errorf("%w sealed message: version %d, want %d", ErrMalformed, msg[3], Version)
	}
	s := Suite(binary.BigEndian.Uint16(msg[4:]))
	el := s.encLen()
	if el == 0 {
		return nil, fmt.Errorf("%w sealed message: unsupported HPKE KEM %#04x", ErrMalformed, uint16(s))
	}
	if len(msg) < sealedHdrLen+el+tagLen {
		return nil, fmt.Errorf("%w sealed message: %d bytes, too short for %s", ErrMalformed, len(msg), s)
	}
	if s != k.suite {
		return nil, fmt.Errorf("%w: sealed to a %s key, this key is %s", ErrAuth, s, k.suite)
	}
	pt, err := hpke.Open(k.priv, kdf(), aead(), sealedInfo(msg[:sealedHdrLen], info), msg[sealedHdrLen:])
	if err != nil {
		return nil, fmt.Errorf("%w: sealed message (wrong key, wrong info or tampered)", ErrAuth)
	}
	return pt, nil
}
