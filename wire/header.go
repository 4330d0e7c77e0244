package wire

// Reserved header names. Keys starting with ReservedHeaderPrefix belong to
// the toolkit; an application's own headers use other keys.
const (
	// ReservedHeaderPrefix starts every header the toolkit reserves.
	ReservedHeaderPrefix = "Cloister-"
	// HeaderCodec names the codec of the body (CodecJSON, ...); absent
	// for raw bytes.
	HeaderCodec = "Cloister-Codec"
	// HeaderFailure marks a reply as a failure and names its kind
	// (Failure.String).
	HeaderFailure = "Cloister-Failure"
	// HeaderFailureCode carries the code of a recipient failure.
	HeaderFailureCode = "Cloister-Failure-Code"
	// HeaderMessageID is the ID of a durable message, the same on every
	// redelivery.
	HeaderMessageID = "Cloister-Message-Id"
	// HeaderDelivery is how many times a durable message has been
	// delivered, counting this time.
	HeaderDelivery = "Cloister-Delivery"
	// HeaderTraceParent is the W3C trace context header, which crosses the
	// boundary as a plain header.
	HeaderTraceParent = "traceparent"
)

// Codec names, as HeaderCodec carries them.
const (
	// CodecJSON is JSON (encoding/json).
	CodecJSON = "json"
)

// HealthRejectionsPrefix starts the detail of an enclave's health status
// when its secured-address layer has rejected messages: the prefix, then
// JSON {address: {reason: count}}. It carries counts only.
const HealthRejectionsPrefix = "rejected="

// The other built-in codec names of the bus.
const (
	// CodecBytes is a []byte passed through.
	CodecBytes = "bytes"
	// CodecString is a Go string's bytes.
	CodecString = "string"
)

// Failure codes an enclave's secured-address layer (package
// trusted/secured) answers refused requests with, so that a forwarder or a
// client (package client) can decide what to do. The handler never ran.
const (
	// CodeRejected: the message did not open, was replayed, came in the
	// clear where a sealed one was due, or the like. Final.
	CodeRejected = 400
	// CodeNotAllowed: the service's grant gives no right to consume the
	// address. Final.
	CodeNotAllowed = 403
	// CodeAlreadyHandled: a copy of a client-session message that was
	// already handled. Nothing is lost: a forwarder may acknowledge it.
	CodeAlreadyHandled = 409
	// CodeSessionUnknown: the enclave does not hold the client session
	// (it restarted, forgot or expired the session, or the handshake is
	// under a channel key it no longer holds). The client seals the
	// message again in a new session.
	CodeSessionUnknown = 410
	// CodeBusy: refused for now (a copy is being handled, or the client
	// opened too many sessions recently). Retry later.
	CodeBusy = 429
)
