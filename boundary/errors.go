package boundary

import (
	"errors"
	"fmt"
)

// Causes wrapped by *DecodeError, *HandshakeError and Conn errors; test with
// errors.Is.
var (
	ErrTruncated       = errors.New("truncated")
	ErrTrailingBytes   = errors.New("trailing bytes after the last field")
	ErrTooLong         = errors.New("exceeds limit")
	ErrInvalidUTF8     = errors.New("invalid UTF-8")
	ErrEmpty           = errors.New("must not be empty")
	ErrDuplicate       = errors.New("duplicate key")
	ErrInvalidValue    = errors.New("invalid value")
	ErrUnknownType     = errors.New("unknown frame type")
	ErrWrongDirection  = errors.New("frame type not allowed in this direction")
	ErrFrameTooLarge   = errors.New("boundary: frame too large")
	ErrBadMagic        = errors.New("boundary: bad handshake magic (peer does not speak the cloister boundary protocol)")
	ErrVersionMismatch = errors.New("boundary: protocol version mismatch")
	ErrRoleMismatch    = errors.New("boundary: peer has the same role")
	ErrClosed          = errors.New("boundary: connection closed")
)

// DecodeError says which frame and field could not be decoded and why.
type DecodeError struct {
	Type  Type   // frame type (0 when the type itself was bad)
	Field string // field name, e.g. "address" or "headers[3].key"
	Err   error  // one of the causes above, possibly wrapped
	// ID is the frame's token, call ID or health ID when it was decoded
	// before the error (0 otherwise), so that the receiver can fail the call
	// the bad frame belonged to instead of letting it time out.
	ID uint64
}

// Error names the frame type, the field and the cause.
func (e *DecodeError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("boundary: decode %s frame: %v", e.Type, e.Err)
	}
	return fmt.Sprintf("boundary: decode %s frame: field %s: %v", e.Type, e.Field, e.Err)
}

// Unwrap returns the cause.
func (e *DecodeError) Unwrap() error { return e.Err }

// HandshakeError is a failed handshake.
type HandshakeError struct {
	LocalVersion, PeerVersion uint16
	Err                       error // ErrBadMagic, ErrVersionMismatch, ErrRoleMismatch, ErrTooLong or an I/O error
	Detail                    string
}

// Error says why the handshake failed, with both versions on a mismatch.
func (e *HandshakeError) Error() string {
	s := "boundary: handshake failed: " + e.Err.Error()
	if errors.Is(e.Err, ErrVersionMismatch) {
		s += fmt.Sprintf(": this side speaks version %d, the peer version %d", e.LocalVersion, e.PeerVersion)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap returns the cause.
func (e *HandshakeError) Unwrap() error { return e.Err }
