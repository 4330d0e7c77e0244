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

// Reasons a client-session message is refused, beside those above.
var (
	// ErrSessionUnknown: the service does not hold the message's session
	// (it restarted, forgot the session to make room, the session expired
	// or used up its messages, or the handshake is sealed to a channel key
	// the service no longer holds or is too old). The message never reached
	// a handler: the client seals it again in a new session.
	ErrSessionUnknown = errors.New("secure: session unknown")
	// ErrUnauthenticated: the handshake names no client the application
	// knows, or its signature is not that client's.
	ErrUnauthenticated = errors.New("secure: client not authenticated")
	// ErrInProgress: a copy of the message is being handled now; try again
	// once it is answered.
	ErrInProgress = errors.New("secure: message in progress")
	// ErrClockSkew: the handshake is dated too far ahead of the service's
	// clock.
	ErrClockSkew = errors.New("secure: client clock ahead")
	// ErrTooManyHandshakes: the client opened too many sessions recently.
	ErrTooManyHandshakes = errors.New("secure: too many handshakes")
)
