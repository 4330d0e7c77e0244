package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/wire"
)

// Headers are a message's string keys and values. Keys are case-sensitive;
// keys starting with "Cloister-" are reserved for the toolkit.
type Headers map[string]string

// Reserved headers.
const (
	// HeaderCodec names the codec of the body; absent for raw bytes.
	HeaderCodec = wire.HeaderCodec
	// HeaderFailure marks a reply as a failure and names its kind.
	HeaderFailure = wire.HeaderFailure
	// HeaderFailureCode carries the code of a recipient failure.
	HeaderFailureCode = wire.HeaderFailureCode
	// ReservedHeaderPrefix starts every header the toolkit reserves.
	ReservedHeaderPrefix = wire.ReservedHeaderPrefix
)

// Clone returns a copy of h (nil stays nil).
func (h Headers) Clone() Headers {
	if h == nil {
		return nil
	}
	c := make(Headers, len(h))
	for k, v := range h {
		c[k] = v
	}
	return c
}

// ValidateHeader reports whether key and value can travel on every
// transport: a key is 1–128 printable ASCII characters without spaces or
// ':'; a value has no control characters other than tab.
func ValidateHeader(key, value string) error {
	if key == "" || len(key) > 128 {
		return fmt.Errorf("bus: header key %q: must be 1 to 128 bytes", key)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return fmt.Errorf("bus: header key %q: character %q is not allowed", key, c)
		}
	}
	for i := 0; i < len(value); i++ {
		c := value[i]
		if (c < ' ' && c != '\t') || c == 0x7f {
			return fmt.Errorf("bus: header %q: value has control character %q", key, c)
		}
	}
	return nil
}

func isReserved(key string) bool {
	return len(key) >= len(ReservedHeaderPrefix) && strings.EqualFold(key[:len(ReservedHeaderPrefix)], ReservedHeaderPrefix)
}

// Message is a message handed to a consumer, or a reply returned by
// Request. Its accessors may be called from any goroutine; a handler may
// reply after it returns.
type Message struct {
	bus       *Bus
	env       Envelope
	responder Responder

	// ack is the delivery's Ack (nil when the transport set none).
	ack func(err error)

	// flags are the message's one-way switches (flagReplied and the
	// others), in one word to keep a Message small (kind fits beside it).
	flags atomic.Uint32
	kind  Kind
}

// Message flags.
const (
	flagReplied    uint32 = 1 << iota // a reply or failure was sent
	flagAcked                         // ack was called
	flagHeld                          // the handler's return does not call ack
	flagSpareTaken                    // a consumer took it as a delivery's spare (see Delivery.takeSpare)
)

// setFlag sets f and reports whether it was not set before.
func (m *Message) setFlag(f uint32) bool { return m.flags.Or(f)&f == 0 }

// hasFlag reports whether f is set.
func (m *Message) hasFlag(f uint32) bool { return m.flags.Load()&f != 0 }

// Hold tells the bus that the handler's work on m goes on after it
// returns (it handed m to another goroutine or process, say): the
// delivery is completed when release is called, not when the handler
// returns. Call release with nil once the message is done, or with an
// error to hand it back to the transport (an at-least-once transport
// delivers it again). Only the first call of release counts, and only
// messages of transports with at-least-once delivery (a [Delivery] with an
// Ack) have anything to complete: on others release does nothing. Call
// Hold from the handler, before it returns; calling it again changes
// nothing. If the handler panics the delivery fails at once, held or not,
// and a later release does nothing. A held message that is never released
// stays unacknowledged until the transport gives up on it (a durable
// address delivers it again after its ack wait).
func (m *Message) Hold() (release func(err error)) {
	if m.ack == nil {
		return func(error) {}
	}
	m.setFlag(flagHeld)
	return m.complete
}

// AtLeastOnce reports whether m came from an at-least-once delivery (a
// durable address): the transport delivers it again unless it is
// completed — its handler returns, or releases it after Hold. A handler
// that passes messages on elsewhere (such as an enclave's adapter) uses it
// to decide whether to track their completion.
func (m *Message) AtLeastOnce() bool { return m.ack != nil }

// complete calls the delivery's Ack the first time only.
func (m *Message) complete(err error) {
	if m.ack != nil && m.setFlag(flagAcked) {
		m.ack(err)
	}
}

// refuse fails a message the consumer did not handle: a request gets a
// failure of kind f, the delivery's Ack an error of the same kind.
func (m *Message) refuse(address string, f Failure, message string) {
	m.failWith(f, message)
	m.complete(&ReplyError{Failure: f, Address: address, Message: message})
}

// Address is where the message was sent (for a reply, the address of the
// request it answers).
func (m *Message) Address() string { return m.env.Address }

// Headers returns the message's headers. Treat the map as read-only.
func (m *Message) Headers() Headers { return m.env.Headers }

// Header returns one header value, or "".
func (m *Message) Header(key string) string { return m.env.Headers[key] }

// Body returns the raw body bytes. Treat them as read-only.
func (m *Message) Body() []byte { return m.env.Body }

// Kind says whether the message was sent, published, or is a reply.
func (m *Message) Kind() Kind { return m.kind }

// ReplyExpected reports whether the sender waits for a reply.
func (m *Message) ReplyExpected() bool { return m.responder != nil }

// Decode decodes the body into v with the codec named in the message's
// HeaderCodec header. An unknown codec or an undecodable body gives a
// *ReplyError of kind FailureError (errors.Is(err, ErrDelivery)).
func (m *Message) Decode(v any) error {
	if err := m.bus.codecs.decode(m.env.Body, m.env.Headers[HeaderCodec], v); err != nil {
		return deliveryError(m.env.Address, fmt.Errorf("undecodable body: %w", err))
	}
	return nil
}

// errNoReplyExpected is returned when replying to a message nobody waits for.
var errNoReplyExpected = errors.New("bus: the sender expects no reply")

// errAlreadyReplied is returned on a second reply to the same message.
var errAlreadyReplied = errors.New("bus: message already replied to")

func (m *Message) claimReply() error {
	if m.responder == nil {
		return errNoReplyExpected
	}
	if !m.setFlag(flagReplied) {
		return errAlreadyReplied
	}
	return nil
}

// Reply answers the message. Options may set headers and the codec; the
// timeout and local-only options do not apply to a reply.
func (m *Message) Reply(body any, opts ...DeliveryOption) error {
	if err := m.claimReply(); err != nil {
		return err
	}
	env, _, err := m.bus.prepare(context.Background(), KindReply, false, m.env.Address, body, opts)
	var h Headers
	if err == nil {
		h = env.Headers
		if c, ok := m.responder.(*localCall); ok {
			// The in-process answer copies env: it stays on the stack.
			err = c.Respond(context.Background(), &env)
		} else {
			err = respond(m.responder, env)
		}
	}
	if m.bus.observing() {
		m.bus.observe(Outcome{Op: OpReply, Address: m.env.Address, Headers: h, InReplyTo: m.env.Headers, Err: err}, time.Time{})
	}
	return err
}

// respond hands env to a transport's responder (env escapes there).
func respond(r Responder, env Envelope) error {
	return r.Respond(context.Background(), &env)
}

// ReplyAndRequest answers the message and waits for the requester's answer
// to the reply: a conversation over replies. The wait ends at the timeout
// option (default: the bus's) or when ctx ends.
func (m *Message) ReplyAndRequest(ctx context.Context, body any, opts ...DeliveryOption) (*Message, error) {
	if err := m.claimReply(); err != nil {
		return nil, err
	}
	env, o, err := m.bus.prepare(ctx, KindReply, true, m.env.Address, body, opts)
	if err != nil {
		m.bus.observe(Outcome{Op: OpReply, Address: m.env.Address, InReplyTo: m.env.Headers, Err: err}, time.Time{})
		return nil, err
	}
	m.bus.observe(Outcome{Op: OpReply, Address: m.env.Address, Headers: env.Headers, InReplyTo: m.env.Headers}, time.Time{})
	var start time.Time
	if m.bus.observing() {
		start = time.Now()
	}
	ctx, cancel := m.bus.requestContext(ctx, o)
	defer cancel()
	d, err := m.responder.RespondRequest(ctx, &env)
	reply, err := m.bus.finishRequest(ctx, m.env.Address, d, err)
	m.bus.observe(Outcome{Op: OpRequest, Address: m.env.Address, Headers: env.Headers, Err: err}, start)
	return reply, err
}

// Fail answers the message with a recipient failure: the requester's
// error matches ErrRecipientFailure and carries code and message.
func (m *Message) Fail(code int, message string) error {
	if err := m.claimReply(); err != nil {
		return err
	}
	env := failureEnvelope(FailureRecipient, code, message)
	err := m.responder.Respond(context.Background(), env)
	if m.bus.observing() {
		m.bus.observe(Outcome{Op: OpReply, Address: m.env.Address, Headers: env.Headers, InReplyTo: m.env.Headers, Err: err}, time.Time{})
	}
	return err
}

// failWith answers with a failure of any kind; used by the bus itself.
func (m *Message) failWith(f Failure, message string) {
	if m.claimReply() != nil {
		return
	}
	_ = m.responder.Respond(context.Background(), failureEnvelope(f, 0, message))
}

func failureEnvelope(f Failure, code int, message string) *Envelope {
	h := Headers{HeaderFailure: f.String()}
	if f == FailureRecipient {
		h[HeaderFailureCode] = strconv.Itoa(code)
	}
	return &Envelope{Headers: h, Body: []byte(message)}
}

// failureFromEnvelope returns the error carried by a failure reply, or nil.
func failureFromEnvelope(address string, env *Envelope) error {
	kind, ok := env.Headers[HeaderFailure]
	if !ok {
		return nil
	}
	f, known := wire.ParseFailure(kind)
	if !known {
		return &ReplyError{Failure: FailureError, Address: address, Message: fmt.Sprintf("reply carries unknown failure kind %q: %s", kind, env.Body)}
	}
	e := &ReplyError{Failure: f, Address: address, Message: string(env.Body)}
	if f == FailureRecipient {
		code, err := strconv.Atoi(env.Headers[HeaderFailureCode])
		if err != nil {
			return &ReplyError{Failure: FailureError, Address: address, Message: fmt.Sprintf("recipient failure with bad code %q: %s", env.Headers[HeaderFailureCode], env.Body)}
		}
		e.Code = code
	}
	return e
}
