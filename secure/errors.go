package secure

import "errors"

// Reasons an envelope or a client message is rejected. Every error returned
// by an Open method wraps exactly one of them, so callers can count
// rejections by kind with errors.Is.
var (
	// ErrMalformed: the bytes are not a well-formed envelope or message.
	ErrMalformed = errors.New("secure: malformed")
	// ErrUnknownEpoch: the envelope's key epoch was never known here.
	ErrUnknownEpoch = errors.New("secure: unknown key epoch")
	// ErrEpochRetired: the envelope's key epoch was retired.
	ErrEpochRetired = errors.New("secure: key epoch retired")
	// ErrAuth: the envelope or message failed authentication (wrong key,
	// wrong address, tampered bytes or headers).
	ErrAuth = errors.New("secure: authentication failed")
	// ErrReplay: the sequence number (or request) was seen before.
	ErrReplay = errors.New("secure: replay")
	// ErrTooOld: the sequence number fell below the replay window, or the
	// client request is older than the replay cache's window.
	ErrTooOld = errors.New("secure: too old")
	// ErrWrongKind: the envelope is of another kind than the delivery.
	ErrWrongKind = errors.New("secure: wrong kind")
	// ErrWrongRequest: the reply answers another request.
	ErrWrongRequest = errors.New("secure: reply to another request")
	// ErrTooManySenders: the Opener already tracks its maximum number of
	// senders for this epoch; rotating the key resets the count.
	ErrTooManySenders = errors.New("secure: too many senders")
	// ErrExhausted: a Sealer used up its sequence numbers; make a new one.
	ErrExhausted = errors.New("secure: sequence numbers exhausted")
)
