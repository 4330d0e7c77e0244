package bus

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Op names what a bus was asked to do, in an [Outcome].
type Op uint8

// The operations an [Observer] sees.
const (
	OpSend    Op = iota + 1 // Send
	OpPublish               // Publish
	OpRequest               // Request, and ReplyAndRequest's wait for the answer
	OpReply                 // Reply, Fail and ReplyAndRequest's reply
)

var opNames = [...]string{OpSend: "send", OpPublish: "publish", OpRequest: "request", OpReply: "reply"}

// String returns the operation's name: send, publish, request or reply.
func (o Op) String() string {
	if o > 0 && int(o) < len(opNames) {
		return opNames[o]
	}
	return "op?"
}

// Outcome is what became of one operation of a bus.
type Outcome struct {
	Op Op
	// Address is the address sent, published or requested to; for a reply,
	// the address of the message answered.
	Address string
	// Elapsed is how long a request waited for its answer (zero for other
	// operations).
	Elapsed time.Duration
	// Err is nil on success, or the operation's error (a *ReplyError for a
	// failed request; see FailureOf).
	Err error
	// Headers are the headers of the message the operation sent, after the
	// outbound interceptors (nil if it was refused before). Do not modify.
	Headers Headers
	// InReplyTo are, for a reply, the headers of the message answered. Do
	// not modify.
	InReplyTo Headers
}

// Observer is told the outcome of every operation of a bus, after it
// completed, on the goroutine that asked for it: it must be fast, must not
// block and must be safe for concurrent use. Observers count and time
// traffic (metrics); they cannot change it (use an [Interceptor] for that).
type Observer func(Outcome)

// WithObserver adds an observer.
func WithObserver(o Observer) Option {
	return func(opts *options) { opts.observers = append(opts.observers, o) }
}

// AddObserver adds an observer to a running bus.
func (b *Bus) AddObserver(o Observer) {
	for {
		old := b.observers.Load()
		next := append(append([]Observer(nil), (*old)...), o)
		if b.observers.CompareAndSwap(old, &next) {
			return
		}
	}
}

// observing reports whether any observer is installed, so that callers
// read the clock only when someone looks.
func (b *Bus) observing() bool { return len(*b.observers.Load()) > 0 }

func (b *Bus) observe(o Outcome, start time.Time) {
	list := *b.observers.Load()
	if len(list) == 0 {
		return
	}
	if !start.IsZero() {
		o.Elapsed = time.Since(start)
	}
	for _, f := range list {
		f(o)
	}
}

// FailureOf returns the failure kind of an error returned by the bus: the
// kind of a [*ReplyError], FailureError for any other error, and 0 for nil.
func FailureOf(err error) Failure {
	if err == nil {
		return 0
	}
	var re *ReplyError
	if errors.As(err, &re) {
		return re.Failure
	}
	return FailureError
}

// observers is the type of Bus.observers (a copy-on-write list).
type observers = atomic.Pointer[[]Observer]

// ConnectionReporter is implemented by transports that hold a connection
// to a broker (the cluster transport): nodes report it in their metrics
// and readiness.
type ConnectionReporter interface {
	Connection() ConnectionStatus
}

// ConnectionStatus is a transport's connection to its broker.
type ConnectionStatus struct {
	// Connected is true while messages can flow.
	Connected bool
	// State names the connection's state, such as CONNECTED or
	// RECONNECTING (a small fixed set chosen by the transport).
	State string
	// Reconnects counts the reconnections since the transport started.
	Reconnects uint64
}

// DurableReporter is implemented by transports with durable addresses:
// nodes report their backlog in their metrics.
type DurableReporter interface {
	// DurableStats returns the backlog of each durable address this
	// transport was configured with.
	DurableStats(ctx context.Context) (map[string]DurableStats, error)
}

// DurableStats is the backlog of one durable address.
type DurableStats struct {
	Pending     uint64 // stored, not yet delivered
	AckPending  uint64 // delivered, not yet acknowledged
	Redelivered uint64 // delivered more than once and not yet acknowledged
}
