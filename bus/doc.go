// Package bus is Cloister's event bus: services talk to each other by sending
// messages to addresses, as in Vert.x.
//
// # Operations
//
//   - [Bus.Send] delivers a message to one consumer of an address, chosen
//     round-robin among its consumers (NATS queue groups, when clustered,
//     choose at random but still exactly one).
//   - [Bus.Publish] delivers a message to every consumer of an address.
//   - [Bus.Request] sends to one consumer and waits for its reply. The
//     consumer answers with [Message.Reply], or fails the request with
//     [Message.Fail]; a reply may itself expect an answer
//     ([Message.ReplyAndRequest]), so a conversation can go on over replies.
//
// # Addresses
//
// An address is 1 to 255 bytes of dot-separated segments. A segment is one or
// more of the characters A–Z, a–z, 0–9, '-', '_', ':' and '/'. Empty segments
// (a leading, trailing or doubled dot) are not allowed, nor are spaces,
// wildcards ('*', '>') or a leading '$'. Each segment maps onto one NATS
// subject token, so a clustered transport needs no escaping and the dots of
// an address become the dots of its subject.
//
// # Bodies, codecs and headers
//
// Bodies are bytes on the wire. []byte and string bodies pass through
// unchanged; any other Go value is encoded with JSON unless a named codec is
// chosen with [CodecName]. The codec's name travels in the
// [HeaderCodec] header so the receiver can decode with [Message.Decode].
// Headers are string keys and values; keys starting with "Cloister-" are
// reserved for the toolkit.
//
// # Failures
//
// Every failure of a request is a [*ReplyError] whose kind can be tested with
// errors.Is: [ErrTimeout], [ErrNoHandlers] (returned at once when no consumer
// exists, not after the timeout), [ErrRecipientFailure] (the consumer called
// Fail; the code and message are in the ReplyError), [ErrOverflow] (the
// consumer's buffer was full) and [ErrDelivery] (the bus could not encode,
// decode or deliver the message, or an interceptor vetoed it). Cancelling the
// request's context ends the wait; the error then also matches
// context.Canceled or context.DeadlineExceeded.
//
// # Delivery guarantee
//
// Delivery is at most once. Messages from one sender to one consumer are
// handled in the order they were sent. A message is never dropped silently:
// when a consumer's bounded buffer ([DefaultBufferSize] unless set) is full
// the message is refused, the consumer's overflow counter goes up, a warning
// is logged (at most once per second per consumer, with the count), and a
// request gets an [ErrOverflow] failure. Send and Publish to an address
// without consumers are not errors: nobody was listening. Durable,
// at-least-once addresses come from the cluster transport: there a message
// is acknowledged when its consumer's handler returns (or releases the
// message it held with [Message.Hold]), and delivered again when it was
// refused or its handler panicked (see Transports below).
//
// # Consumers and back-pressure
//
// A consumer ([Bus.Consumer], or [Bus.LocalConsumer] for one that only this
// node can reach) handles its messages one at a time, in order, on its own
// goroutine or on an [Executor] such as a node's event loop. It can be paused
// (messages queue up to the buffer size) and resumed, and unregistered: no new
// messages are accepted, the buffered ones are handled until the context
// passed to [Consumer.Unregister] ends, and requests still waiting then fail
// with [ErrNoHandlers].
//
// # Interceptors and observers
//
// An [Interceptor] sees each message before the transport (outbound) or
// before a consumer's buffer (inbound) and may change its headers or veto
// it. An [Observer] is told the [Outcome] of every send, publish, request
// (with its latency and failure kind) and reply after it completed, and
// changes nothing: metrics and tracing hook in there. [Bus.Consumers] and
// [Consumer.Stats] give the consumers' counters; transports with a broker
// report their connection ([ConnectionReporter]) and durable backlogs
// ([DurableReporter]).
//
// # Transports
//
// A [Transport] moves envelopes between buses; it knows nothing of codecs,
// failures or consumers' buffers. The in-process transport ([NewLocalNetwork])
// connects the buses of one process; package cluster provides one on NATS.
// Package bustest holds the conformance suite every transport passes.
//
// Like a database/sql driver, a transport may offer optional interfaces
// that the bus uses when they are there: [LocalRouter], to have the
// messages that stay in this process go through a [LocalNode] on the
// bus's in-process fast path (the in-process transport is its own route;
// package cluster routes local-only messages this way), and
// [TimedRequester], to bound a request by its timeout without a context
// of its own. The bus recycles nothing it hands out: a Message given to a
// handler or returned by Request belongs to its receiver for as long as
// it is kept.
//
// A transport with at-least-once delivery sets [Delivery.Ack], and the bus
// completes each such delivery exactly once, so handlers never deal with
// acknowledgements (as database/sql keeps its drivers' details from its
// users). Ack(nil) is called when the consumer's handler returns; Ack with
// an error when the message was not handled: refused (buffer full,
// consumer unregistered, vetoed by an inbound interceptor), abandoned at
// [Consumer.Unregister]'s deadline, or its handler panicked. A handler whose work goes on after it returns
// calls [Message.Hold] and completes the delivery later with the release
// function it gets. A reply returned by Request is completed when it
// reaches the requester.
package bus
