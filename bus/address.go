package bus

import "github.com/cloister-dev/cloister/wire"

// MaxAddressLen is the longest address accepted, in bytes (wire.MaxAddressLen).
const MaxAddressLen = wire.MaxAddressLen

// AddressError reports an address that cannot be used (wire.AddressError).
type AddressError = wire.AddressError

// ValidateAddress reports whether address follows the address grammar of
// package wire, with an [*AddressError] naming what is wrong.
func ValidateAddress(address string) error { return wire.ValidateAddress(address) }
