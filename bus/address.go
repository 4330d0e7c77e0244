package bus

import (
	"fmt"
)

// MaxAddressLen is the longest address accepted, in bytes.
const MaxAddressLen = 255

// AddressError reports an address that cannot be used.
type AddressError struct {
	Address string
	Reason  string
}

func (e *AddressError) Error() string {
	return fmt.Sprintf("bus: invalid address %q: %s", e.Address, e.Reason)
}

// ValidateAddress reports whether address follows the rules in the package
// documentation, with an [*AddressError] naming what is wrong.
func ValidateAddress(address string) error {
	if address == "" {
		return &AddressError{Address: address, Reason: "empty"}
	}
	if len(address) > MaxAddressLen {
		return &AddressError{Address: address, Reason: fmt.Sprintf("longer than %d bytes", MaxAddressLen)}
	}
	if address[0] == '$' {
		return &AddressError{Address: address, Reason: "must not start with '$'"}
	}
	segStart := 0
	for i := 0; i < len(address); i++ {
		c := address[i]
		if c == '.' {
			if i == segStart {
				return &AddressError{Address: address, Reason: fmt.Sprintf("empty segment at byte %d", i)}
			}
			segStart = i + 1
			continue
		}
		if !addressChar(c) {
			return &AddressError{Address: address, Reason: fmt.Sprintf("character %q at byte %d is not allowed (use A-Z a-z 0-9 - _ : / and dots between segments)", c, i)}
		}
	}
	if segStart == len(address) {
		return &AddressError{Address: address, Reason: "ends with a dot"}
	}
	return nil
}

func addressChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '-', c == '_', c == ':', c == '/':
		return true
	}
	return false
}
