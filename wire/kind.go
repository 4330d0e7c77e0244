package wire

import "fmt"

// Kind says how a message travels. The numbers are part of the boundary
// protocol's Deliver frame and of secure's envelopes.
type Kind uint8

// Message kinds.
const (
	KindSend    Kind = 1 // point to point, no reply expected
	KindPublish Kind = 2 // to every consumer, no reply
	KindRequest Kind = 3 // point to point, exactly one reply or failure expected
	KindReply   Kind = 4 // the answer to a request
)

var kindNames = [...]string{"", "send", "publish", "request", "reply"}

// String returns the kind's name, such as "request".
func (k Kind) String() string {
	if k.Valid() {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is one of the kinds above.
func (k Kind) Valid() bool { return k >= KindSend && k <= KindReply }

// Failure is the kind of a failed request, after Vert.x's ReplyFailure. The
// numbers travel in the boundary protocol's RequestResult frame; the names
// (String) in the Cloister-Failure header.
type Failure uint8

// Failure kinds. FailureNone means success.
const (
	FailureNone Failure = 0
	// FailureError: the message could not be encoded, decoded or delivered,
	// or an interceptor vetoed it.
	FailureError Failure = 1
	// FailureTimeout: no reply came before the timeout.
	FailureTimeout Failure = 2
	// FailureNoHandlers: no consumer is registered at the address.
	FailureNoHandlers Failure = 3
	// FailureRecipient: the consumer failed the request with a code and message.
	FailureRecipient Failure = 4
	// FailureOverflow: the consumer's buffer was full.
	FailureOverflow Failure = 5
)

// MaxFailure is the highest Failure defined.
const MaxFailure = FailureOverflow

var failureNames = [...]string{"none", "error", "timeout", "no-handlers", "recipient-failure", "overflow"}

// String returns the failure's name, such as "no-handlers".
func (f Failure) String() string {
	if f <= MaxFailure {
		return failureNames[f]
	}
	return fmt.Sprintf("failure(%d)", uint8(f))
}

// ParseFailure returns the failure a name (as String returns it) stands
// for, and whether the name is known. "none" is not a failure and is not
// parsed.
func ParseFailure(name string) (Failure, bool) {
	for i, n := range failureNames[1:] {
		if n == name {
			return Failure(i + 1), true
		}
	}
	return 0, false
}
