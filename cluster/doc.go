// Package cluster is the bus transport on NATS: it makes one event bus span
// many processes and machines.
//
// # Nodes
//
// [Start] starts a node. By default a node runs an embedded nats-server and
// its own bus connection talks to it in process (no socket). The embedded
// servers of several nodes form one NATS cluster through routes
// ([Options.ClusterListen] and [Options.Routes]). With [Options.Servers] a
// node runs no server and connects to an external NATS cluster instead
// (credentials and TLS are passed through). [Node.Transport] is the
// [bus.Transport] to give to bus.New. Interest (a new consumer, an
// unregistered one) reaches the other servers of a cluster asynchronously;
// programs that run several nodes in one process, such as tests, wait for
// it with [Settle].
//
// Start fails fast and closed: a listen address without a host is an error
// (never every interface by default), an embedded server that reports a
// fatal error while starting (a port in use, a store directory it cannot
// use) is an [ErrServerStart] with the server's reason at once, and the
// wait for the server ends when ctx does (a signal during start-up).
//
// # Subject mapping
//
// Bus addresses are dot-separated tokens of [A-Za-z0-9-_:/] (see package bus),
// which are valid NATS subject tokens, so no escaping is needed:
//
//	send, request     cloister.send.<address>     queue group "cloister"
//	publish           cloister.pub.<address>      plain subscription
//	durable send      cloister.durable.<address>  JetStream stream CLOISTER
//	replies           cloister.reply.<inbox>.<n>  the requester's inbox
//
// Every consumer of an address subscribes to both its send subject (in one
// queue group shared by the whole cluster, so a send or request reaches
// exactly one consumer) and its publish subject (so a publish reaches every
// consumer). A send never reaches publish subscriptions and a publish never
// reaches the queue. Requests use NATS reply subjects; a reply that expects
// an answer carries a reply subject of its own (reply-to-reply). Bus headers
// travel as NATS headers with their case preserved; a value that starts or
// ends with whitespace, which NATS would trim, is enclosed in DEL (0x7f)
// marks on the wire. "No handlers" comes from
// NATS no-responders, so it is reported at once. Failures (recipient
// failure, overflow, refusal by an interceptor) are encoded by the bus in
// reply headers and survive the trip unchanged.
//
// # Local-only consumers and the local fast path
//
// A local-only subscription never reaches NATS: every subscription of the
// transport is also one of a node of the bus's in-process transport
// ([bus.LocalNode]), which routes the messages that stay on this node; the
// transport offers that node to its bus as a [bus.LocalRouter], so such
// messages take the bus's in-process fast path. A message sent with
// bus.LocalOnly goes straight to this node's consumers of the address
// (local-only and regular ones) without a NATS round trip. A regular send
// or request from a node that has local-only consumers of the address is
// delivered on that node, among its own consumers of the address,
// round-robin (a local-only consumer shadows the address for senders on
// its node); from any other node it goes through NATS. A regular publish reaches every regular consumer through NATS and,
// directly, the local-only consumers of the publishing node.
//
// # Guarantees
//
// Delivery is at most once, as NATS core is. Messages from one sender to one
// consumer keep their order. When the connection to NATS drops, the client
// reconnects and resubscribes by itself; requests waiting for a reply then
// fail at once with [ErrDisconnected] instead of waiting for their timeout,
// and new requests fail at once until the connection is back.
//
// Durable addresses ([Options.Durable]) are at least once. Durability is
// the address's: a transport that starts where JetStream already holds the
// durable consumer of an address (made by whoever declared it) sends to it
// durably without listing it, so a sender cannot forget. A send to a
// durable address is stored in JetStream (the send returns once the server
// has stored it, deduplicated by its message ID) and handed to one consumer
// of the address. It is acknowledged when the consumer's handler returns
// or, if the handler held it ([bus.Message.Hold]), when the handler
// releases it: every consumer gets this, its handler needs no wrapper.
// It is handed back for redelivery (after a second) when the consumer
// refused it (its buffer was full, it was unregistered, an interceptor
// vetoed it), when its handler panicked, or when it is released with an
// error. A message not acknowledged within the ack wait ([Options.AckWait];
// its consumer crashed or hangs) is delivered again as well, to another
// consumer if there is one; the delivery carries its message ID in
// the [HeaderMessageID] header so a consumer can drop duplicates. Publish and
// request on a durable address stay at most once.
package cluster
