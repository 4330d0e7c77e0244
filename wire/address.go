package wire

import "fmt"

// MaxAddressLen is the longest address accepted, in bytes.
const MaxAddressLen = 255

// AddressError reports an address that breaks the grammar, and why.
type AddressError struct {
	Address string
	Reason  string
}

// Error names the address and what is wrong with it.
func (e *AddressError) Error() string {
	return fmt.Sprintf("invalid address %q: %s", e.Address, e.Reason)
}

// ValidateAddress reports whether address follows the address grammar, with
// an [*AddressError] naming what is wrong. An address is 1 to MaxAddressLen
// bytes of segments separated by single dots; a segment holds A-Z a-z 0-9
// and - _ : /. It must not start with '$' (reserved by NATS). The pattern
// characters '*' and '>' are refused with a reason of their own: an address
// is exact.
func ValidateAddress(address string) error {
	if why := addressProblem(address); why != "" {
		return &AddressError{Address: address, Reason: why}
	}
	return nil
}

func addressProblem(a string) string {
	switch {
	case a == "":
		return "empty"
	case len(a) > MaxAddressLen:
		return fmt.Sprintf("longer than %d bytes", MaxAddressLen)
	case a[0] == '$':
		return "must not start with '$'"
	}
	seg := 0
	for i := 0; i < len(a); i++ {
		switch c := a[i]; {
		case c == '.':
			if i == seg {
				return fmt.Sprintf("empty segment at byte %d", i)
			}
			seg = i + 1
		case c == '*' || c == '>':
			return fmt.Sprintf("wildcards are not allowed: character %q at byte %d (an address is exact)", c, i)
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == ':', c == '/':
		default:
			return fmt.Sprintf("character %q at byte %d is not allowed (use A-Z a-z 0-9 - _ : / and dots between segments)", c, i)
		}
	}
	if seg == len(a) {
		return "ends with a dot"
	}
	return ""
}
