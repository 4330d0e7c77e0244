package bus

import (
	"errors"
	"fmt"
	"strings"
)

// ValidatePattern checks an address pattern: address segments, "*" for
// exactly one segment, and ">" as the last segment for one or more.
func ValidatePattern(pattern string) error {
	if pattern == "" {
		return errors.New("bus: empty address pattern")
	}
	segs := strings.Split(pattern, ".")
	for i, s := range segs {
		switch s {
		case "*":
			continue
		case ">":
			if i != len(segs)-1 {
				return fmt.Errorf("bus: address pattern %q: '>' must be the last segment", pattern)
			}
			continue
		}
		if err := ValidateAddress(s); err != nil {
			return fmt.Errorf("bus: address pattern %q: %w", pattern, err)
		}
	}
	return nil
}

// MatchAddress reports whether address matches pattern (see
// [ValidatePattern]): "*" matches one segment, a final ">" one or more.
func MatchAddress(pattern, address string) bool {
	for {
		p, prest, pmore := strings.Cut(pattern, ".")
		if p == ">" {
			return address != ""
		}
		if address == "" {
			return false
		}
		a, arest, amore := strings.Cut(address, ".")
		if p != "*" && p != a {
			return false
		}
		if !pmore || !amore {
			return pmore == amore
		}
		pattern, address = prest, arest
	}
}
