package bus

import (
	"errors"
	"fmt"

	"github.com/cloister-dev/cloister/wire"
)

// Failure is the kind of a failed request (wire.Failure), after Vert.x's
// ReplyFailure. Each kind has a sentinel error that matches it with
// errors.Is.
type Failure = wire.Failure

// The kinds of failure (see package wire).
const (
	FailureError      = wire.FailureError
	FailureTimeout    = wire.FailureTimeout
	FailureNoHandlers = wire.FailureNoHandlers
	FailureRecipient  = wire.FailureRecipient
	FailureOverflow   = wire.FailureOverflow
)

// Sentinel errors, one per [Failure] kind. Test with errors.Is; use
// errors.As with a *ReplyError for the code, message and address.
var (
	ErrDelivery         = errors.New("bus: delivery failed")
	ErrTimeout          = errors.New("bus: timeout")
	ErrNoHandlers       = errors.New("bus: no handlers")
	ErrRecipientFailure = errors.New("bus: recipient failure")
	ErrOverflow         = errors.New("bus: consumer buffer full")
	// ErrClosed is returned by operations on a closed bus or transport.
	ErrClosed = errors.New("bus: closed")
)

func sentinel(f Failure) error {
	switch f {
	case FailureTimeout:
		return ErrTimeout
	case FailureNoHandlers:
		return ErrNoHandlers
	case FailureRecipient:
		return ErrRecipientFailure
	case FailureOverflow:
		return ErrOverflow
	default:
		return ErrDelivery
	}
}

// ReplyError is the error of a failed request (or of a send the bus refused).
type ReplyError struct {
	Failure Failure
	Address string
	// Code and Message are what the recipient passed to Fail; for other
	// kinds Message describes the failure.
	Code    int
	Message string
	// Err is the underlying cause, if any (a context error, a codec error,
	// an interceptor's veto).
	Err error
}

func (e *ReplyError) Error() string {
	var s string
	switch e.Failure {
	case FailureRecipient:
		s = fmt.Sprintf("bus: recipient failure at %q: code %d: %s", e.Address, e.Code, e.Message)
	case FailureNoHandlers:
		s = fmt.Sprintf("bus: no handlers for address %q", e.Address)
	case FailureTimeout:
		s = fmt.Sprintf("bus: timeout waiting for a reply from %q", e.Address)
	case FailureOverflow:
		s = fmt.Sprintf("bus: consumer of %q is overloaded: buffer full", e.Address)
	default:
		s = fmt.Sprintf("bus: delivery to %q failed", e.Address)
	}
	if e.Message != "" && e.Failure != FailureRecipient {
		s += ": " + e.Message
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (e *ReplyError) Unwrap() error { return e.Err }

// Is makes errors.Is match the sentinel of the failure kind.
func (e *ReplyError) Is(target error) bool {
	return target == sentinel(e.Failure)
}

func deliveryError(address string, err error) error {
	return &ReplyError{Failure: FailureError, Address: address, Err: err}
}
