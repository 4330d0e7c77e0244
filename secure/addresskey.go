package secure

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

const addressKeyLabel = "cloister/secure/v1/address"

// DeriveAddressKey derives the key of address in epoch from a root secret
// (at least 32 bytes) with HKDF-SHA256, info = "cloister/secure/v1/address"
// ‖ u16 len(address) ‖ address ‖ u32 epoch. A coordinator that keeps only
// its root secret sealed thus hands out the same keys after a restart, and
// a new epoch gives an unrelated key.
func DeriveAddressKey(root []byte, address string, epoch uint32) (AddressKey, error) {
	if len(root) < KeySize {
		return AddressKey{}, fmt.Errorf("secure: root secret of %d bytes, want at least %d", len(root), KeySize)
	}
	if err := checkAddress(address); err != nil {
		return AddressKey{}, err
	}
	info := make([]byte, 0, len(addressKeyLabel)+2+len(address)+4)
	info = append(info, addressKeyLabel...)
	info = binary.BigEndian.AppendUint16(info, uint16(len(address)))
	info = append(info, address...)
	info = binary.BigEndian.AppendUint32(info, epoch)
	b, err := hkdf.Key(sha256.New, root, nil, string(info), KeySize)
	if err != nil {
		return AddressKey{}, fmt.Errorf("secure: derive address key: %w", err)
	}
	k := AddressKey{Address: address, Epoch: epoch}
	copy(k.Key[:], b)
	clear(b)
	return k, nil
}

// MarshalBinary encodes the key as u16 len(address) ‖ address ‖ u32 epoch ‖
// key, for grants and sealed state (never send it in clear).
func (k AddressKey) MarshalBinary() ([]byte, error) {
	if err := checkAddress(k.Address); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 2+len(k.Address)+4+KeySize)
	b = binary.BigEndian.AppendUint16(b, uint16(len(k.Address)))
	b = append(b, k.Address...)
	b = binary.BigEndian.AppendUint32(b, k.Epoch)
	return append(b, k.Key[:]...), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote, strictly.
func (k *AddressKey) UnmarshalBinary(b []byte) error {
	if len(b) < 2 {
		return fmt.Errorf("%w address key: %d bytes", ErrMalformed, len(b))
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) != 2+n+4+KeySize {
		return fmt.Errorf("%w address key: %d bytes, want %d for a %d-byte address", ErrMalformed, len(b), 2+n+4+KeySize, n)
	}
	addr := string(b[2 : 2+n])
	if err := checkAddress(addr); err != nil {
		return fmt.Errorf("%w address key: %v", ErrMalformed, err)
	}
	k.Address = addr
	k.Epoch = binary.BigEndian.Uint32(b[2+n:])
	copy(k.Key[:], b[2+n+4:])
	return nil
}

type addressKeyJSON struct {
	Address string `json:"address"`
	Epoch   uint32 `json:"epoch"`
	Key     string `json:"key"`
}

// MarshalJSON encodes the key as {"address", "epoch", "key" (base64)}, for
// grants and sealed state (never send it in clear).
func (k AddressKey) MarshalJSON() ([]byte, error) {
	if err := checkAddress(k.Address); err != nil {
		return nil, err
	}
	return json.Marshal(addressKeyJSON{Address: k.Address, Epoch: k.Epoch, Key: base64.StdEncoding.EncodeToString(k.Key[:])})
}

// UnmarshalJSON decodes what MarshalJSON wrote; the key must be exactly 32
// bytes of base64.
func (k *AddressKey) UnmarshalJSON(b []byte) error {
	var j addressKeyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("%w address key: %v", ErrMalformed, err)
	}
	if err := checkAddress(j.Address); err != nil {
		return fmt.Errorf("%w address key: %v", ErrMalformed, err)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(j.Key)
	if err != nil || len(raw) != KeySize {
		return fmt.Errorf("%w address key: key must be %d bytes of base64", ErrMalformed, KeySize)
	}
	k.Address, k.Epoch = j.Address, j.Epoch
	copy(k.Key[:], raw)
	clear(raw)
	return nil
}
