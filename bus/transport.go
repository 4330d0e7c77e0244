package bus

import (
	"context"
	"time"

	"github.com/cloister-dev/cloister/wire"
)

// Envelope is a message as a transport carries it: an address, headers and
// a body of bytes. Transports must not keep or change an envelope after the
// call that received it returns, except to deliver it.
type Envelope struct {
	Address string
	Headers Headers
	Body    []byte
}

// Kind says how a delivery was sent (wire.Kind). A transport delivers
// sends and requests alike as KindSend (a request has a Responder).
type Kind = wire.Kind

// Delivery kinds.
const (
	KindSend    = wire.KindSend    // one consumer (Send or Request)
	KindPublish = wire.KindPublish // every consumer
	KindReply   = wire.KindReply   // a reply to a request
)

// Delivery is an envelope arriving from a transport.
type Delivery struct {
	Envelope
	Kind Kind
	// Responder answers the sender; nil when no reply is expected.
	Responder Responder
	// Ack, when set, completes the delivery: transports with at-least-once
	// delivery (such as the cluster transport's durable addresses) set it
	// to acknowledge the message or hand it back for redelivery. The bus
	// calls it exactly once for each delivery handed to a DeliverFunc or
	// returned by Request, from any goroutine: with nil when the handler
	// has returned (for a message the handler held with [Message.Hold],
	// when it is released with nil), and with a non-nil error when the
	// message was not handled: refused because the consumer's buffer was
	// full, because the consumer was unregistered or stopped, or because
	// an inbound interceptor vetoed it; abandoned at the deadline of
	// [Consumer.Unregister]; or its handler panicked (or it was released
	// with an error). The error is a *ReplyError whose kind says why. A
	// delivery the transport did not hand to the bus (its subscription was
	// already gone) is the transport's to complete. Ack must not block.
	Ack func(err error)

	// spare, set by the in-process transport only, is a zero Message
	// allocated with the delivery: the consumer that receives the
	// delivery takes it (once, see takeSpare) instead of allocating one.
	spare *Message
}

// NewDelivery returns a delivery of env of the given kind, allocated
// together with the Message that a bus consumer receiving it makes of it:
// a transport that allocates a delivery per incoming message saves an
// allocation with it. The transport may set the other fields before it
// hands the delivery over; it hands it to one DeliverFunc call only.
func NewDelivery(env Envelope, kind Kind) *Delivery { return newLocalDelivery(env, kind) }

// takeSpare returns the delivery's spare Message, or nil when it has none
// or another consumer took it already.
func (d *Delivery) takeSpare() *Message {
	if m := d.spare; m != nil && m.setFlag(flagSpareTaken) {
		return m
	}
	return nil
}

// Responder answers a request (or a reply that expects an answer).
// Only the first response counts; later ones return an error.
type Responder interface {
	// Respond sends env back to the requester; env.Address is ignored.
	Respond(ctx context.Context, env *Envelope) error
	// RespondRequest sends env back and waits for the requester's answer to
	// it (reply-to-reply). The returned delivery may expect an answer too.
	RespondRequest(ctx context.Context, env *Envelope) (*Delivery, error)
}

// RouteOptions are per-message routing choices a transport must honour.
type RouteOptions struct {
	// LocalOnly restricts delivery to consumers attached to this transport
	// (this node).
	LocalOnly bool
}

// SubscribeOptions are per-consumer choices a transport must honour.
type SubscribeOptions struct {
	// LocalOnly makes the subscription reachable only from this transport
	// (this node), never from other nodes.
	LocalOnly bool
}

// DeliverFunc receives deliveries for a subscription. It must not block:
// the bus enqueues and returns. It may be called from several goroutines.
type DeliverFunc func(d *Delivery)

// Subscription is a registration with a transport.
type Subscription interface {
	// Unsubscribe stops deliveries; when it returns, DeliverFunc is no
	// longer called.
	Unsubscribe() error
}

// LocalRouter is an optional interface of a [Transport] that delivers some
// messages within this process, through a node of a [LocalNetwork], rather
// than over its own medium — as a database/sql driver's connection may
// offer driver.QueryerContext besides driver.Conn. Before each send,
// publish or request the bus asks it where the message goes: when
// LocalRoute returns a node, the bus hands the message to that node on
// its fast path (no serialization, no context per request, one allocation
// for a request's deliveries and messages) and the transport's Send,
// Publish or Request is not called; when it returns nil, the bus calls the
// transport as usual. The transport keeps its routing decision to itself
// and its local consumers in the node, so that the in-process routing
// exists once. A [LocalNode] is its own route.
type LocalRouter interface {
	// LocalRoute returns the node through which a message of kind
	// (KindSend for a request too) to address with opts reaches its
	// consumers, or nil when it must go through the transport. It is
	// called for every message: it must be cheap and must not block.
	LocalRoute(address string, kind Kind, opts RouteOptions) *LocalNode
}

// TimedRequester is an optional interface of a [Transport] whose requests
// can be bounded by a timeout without a context of their own (a context
// with a deadline costs a timer and several allocations per request).
// When the transport offers it, the bus calls RequestWithin with the
// request's timeout instead of Request with a derived context.
type TimedRequester interface {
	// RequestWithin is Request, failing with an error matching
	// context.DeadlineExceeded once timeout (0: no limit but ctx's)
	// has passed.
	RequestWithin(ctx context.Context, env *Envelope, opts RouteOptions, timeout time.Duration) (*Delivery, error)
}

// Transport moves envelopes between the buses of a system. It is the
// driver under the Bus API, as database/sql/driver is under database/sql:
// it handles addresses and bytes, while the Bus handles codecs, failures,
// interceptors and consumers' buffers. Implementations must be safe for
// concurrent use and must pass the bustest conformance suite.
//
// Every subscriber of an address receives both what is sent (one of them,
// for each message) and what is published (all of them).
type Transport interface {
	// Subscribe registers deliver for address.
	Subscribe(address string, opts SubscribeOptions, deliver DeliverFunc) (Subscription, error)
	// Send delivers env to one subscriber of env.Address, if any; having
	// none is not an error.
	Send(ctx context.Context, env *Envelope, opts RouteOptions) error
	// Publish delivers env to every subscriber of env.Address.
	Publish(ctx context.Context, env *Envelope, opts RouteOptions) error
	// Request delivers env to one subscriber with a Responder and waits
	// for the response until ctx ends. With no subscriber it fails at once
	// with an error matching ErrNoHandlers. When ctx ends it returns an
	// error matching ctx.Err(). When the transport loses its connection,
	// waiting requests fail at once with an error matching ErrClosed or a
	// transport error — they never hang.
	Request(ctx context.Context, env *Envelope, opts RouteOptions) (*Delivery, error)
	// Close releases the transport; pending requests fail.
	Close() error
}
