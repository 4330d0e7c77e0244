package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultTimeout is how long a request waits for its reply unless told
// otherwise.
const DefaultTimeout = 30 * time.Second

// Bus is one node's handle on the event bus. It is safe for concurrent use.
type Bus struct {
	transport Transport
	router    LocalRouter    // the transport's, if it offers one
	timed     TimedRequester // the transport's, if it offers one
	codecs    codecs
	logger    *slog.Logger
	timeout   time.Duration

	outbound  atomic.Pointer[[]Interceptor]
	inbound   atomic.Pointer[[]Interceptor]
	observers observers

	mu        sync.Mutex
	consumers map[*Consumer]struct{}
	closed    bool
	isClosed  atomic.Bool // closed, for operations that need no lock
}

// Option configures a Bus.
type Option func(*options)

type options struct {
	transport Transport
	logger    *slog.Logger
	timeout   time.Duration
	codecs    []Codec
	outbound  []Interceptor
	inbound   []Interceptor
	observers []Observer
}

// WithTransport sets the transport; the bus owns it and closes it on
// Close. Without it the bus uses a private in-process network.
func WithTransport(t Transport) Option { return func(o *options) { o.transport = t } }

// WithLogger sets the logger for overflows and other events worth an
// operator's attention. The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithTimeout sets the default request timeout (default [DefaultTimeout]).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithCodec registers a named codec.
func WithCodec(c Codec) Option { return func(o *options) { o.codecs = append(o.codecs, c) } }

// WithOutboundInterceptor adds an interceptor on the outbound path.
func WithOutboundInterceptor(i Interceptor) Option {
	return func(o *options) { o.outbound = append(o.outbound, i) }
}

// WithInboundInterceptor adds an interceptor on the inbound path.
func WithInboundInterceptor(i Interceptor) Option {
	return func(o *options) { o.inbound = append(o.inbound, i) }
}

// New returns a bus. With no options it is a bus of its own, in process.
func New(opts ...Option) (*Bus, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cs, err := newCodecs(o.codecs)
	if err != nil {
		return nil, err
	}
	if o.timeout < 0 {
		return nil, fmt.Errorf("bus: negative timeout %v", o.timeout)
	}
	if o.timeout == 0 {
		o.timeout = DefaultTimeout
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.transport == nil {
		o.transport = NewLocalNetwork().Attach()
	}
	b := &Bus{
		transport: o.transport,
		codecs:    cs,
		logger:    o.logger,
		timeout:   o.timeout,
		consumers: make(map[*Consumer]struct{}),
	}
	b.router, _ = o.transport.(LocalRouter)
	b.timed, _ = o.transport.(TimedRequester)
	b.outbound.Store(&o.outbound)
	b.inbound.Store(&o.inbound)
	b.observers.Store(&o.observers)
	return b, nil
}

// Event is a message passing an interceptor. Interceptors may read and
// change Envelope's headers and body.
type Event struct {
	Kind    Kind
	Inbound bool
	// ReplyExpected is true for a request (outbound) and for a delivery
	// whose sender waits for a reply (inbound).
	ReplyExpected bool
	Envelope      *Envelope
}

// Interceptor sees every message on the outbound path (before the
// transport) or the inbound path (before a consumer's buffer, and replies
// before Request returns). Returning an error vetoes the message: an
// outbound send fails with that error, an inbound message is refused (a
// request then fails with ErrDelivery). Interceptors must be fast and safe
// for concurrent use.
type Interceptor func(ctx context.Context, ev *Event) error

// AddOutboundInterceptor adds an interceptor on the outbound path of a
// running bus.
func (b *Bus) AddOutboundInterceptor(i Interceptor) { addInterceptor(&b.outbound, i) }

// AddInboundInterceptor adds an interceptor on the inbound path of a
// running bus.
func (b *Bus) AddInboundInterceptor(i Interceptor) { addInterceptor(&b.inbound, i) }

func addInterceptor(p *atomic.Pointer[[]Interceptor], i Interceptor) {
	for {
		old := p.Load()
		next := append(append([]Interceptor(nil), (*old)...), i)
		if p.CompareAndSwap(old, &next) {
			return
		}
	}
}

func runInterceptors(ctx context.Context, list []Interceptor, ev *Event) error {
	for _, i := range list {
		if err := i(ctx, ev); err != nil {
			return fmt.Errorf("vetoed by interceptor: %w", err)
		}
	}
	return nil
}

// DeliveryOption sets a per-message option.
type DeliveryOption func(*deliveryOptions)

type deliveryOptions struct {
	timeout   time.Duration
	headers   Headers
	localOnly bool
	codec     string
	err       error
}

// Timeout sets how long a request waits for its reply.
func Timeout(d time.Duration) DeliveryOption {
	return func(o *deliveryOptions) {
		if d <= 0 {
			o.err = fmt.Errorf("bus: timeout must be positive, got %v", d)
		}
		o.timeout = d
	}
}

// Header adds one header.
func Header(key, value string) DeliveryOption {
	return func(o *deliveryOptions) {
		if o.headers == nil {
			o.headers = make(Headers)
		}
		o.headers[key] = value
	}
}

// WithHeaders adds every header of h.
func WithHeaders(h Headers) DeliveryOption {
	return func(o *deliveryOptions) {
		if len(h) == 0 {
			return
		}
		if o.headers == nil {
			o.headers = make(Headers, len(h))
		}
		for k, v := range h {
			o.headers[k] = v
		}
	}
}

// LocalOnly delivers only to consumers on this node.
func LocalOnly() DeliveryOption { return func(o *deliveryOptions) { o.localOnly = true } }

// CodecName encodes the body with the named codec.
func CodecName(name string) DeliveryOption { return func(o *deliveryOptions) { o.codec = name } }

// prepare builds the envelope of an outgoing message. It returns it by
// value, so that a message for the in-process fast path is built on the
// stack.
func (b *Bus) prepare(ctx context.Context, kind Kind, request bool, address string, body any, opts []DeliveryOption) (Envelope, deliveryOptions, error) {
	var o deliveryOptions
	if kind != KindReply {
		if err := ValidateAddress(address); err != nil {
			return Envelope{}, o, deliveryError(address, err)
		}
	}
	if len(opts) > 0 {
		// The options see a pointer: only a message with options pays
		// for putting them on the heap.
		po := new(deliveryOptions)
		for _, opt := range opts {
			opt(po)
		}
		o = *po
	}
	if o.err != nil {
		return Envelope{}, o, deliveryError(address, o.err)
	}
	for k, v := range o.headers {
		if err := ValidateHeader(k, v); err != nil {
			return Envelope{}, o, deliveryError(address, err)
		}
		if isReserved(k) {
			return Envelope{}, o, deliveryError(address, fmt.Errorf("header %q is reserved for the toolkit", k))
		}
	}
	data, codec, err := b.codecs.encode(body, o.codec)
	if err != nil {
		return Envelope{}, o, deliveryError(address, err)
	}
	env := Envelope{Address: address, Headers: o.headers, Body: data}
	if codec != "" {
		if env.Headers == nil {
			env.Headers = make(Headers, 1)
		}
		env.Headers[HeaderCodec] = codec
	}
	if list := *b.outbound.Load(); len(list) > 0 {
		ev := &Event{Kind: kind, ReplyExpected: request, Envelope: &Envelope{}}
		*ev.Envelope = env
		if err := runInterceptors(ctx, list, ev); err != nil {
			return Envelope{}, o, deliveryError(address, err)
		}
		env = *ev.Envelope
	}
	return env, o, nil
}

func (b *Bus) checkOpen() error {
	if b.isClosed.Load() {
		return ErrClosed
	}
	return nil
}

// localRoute returns the node that carries a message in process, or nil
// when it goes through the transport (see [LocalRouter]).
func (b *Bus) localRoute(address string, kind Kind, opts RouteOptions) *LocalNode {
	if b.router == nil {
		return nil
	}
	return b.router.LocalRoute(address, kind, opts)
}

// Send delivers body to one consumer of address. It returns once the
// transport has taken the message; a missing consumer is not an error
// (see the delivery guarantee in the package documentation).
func (b *Bus) Send(ctx context.Context, address string, body any, opts ...DeliveryOption) error {
	h, err := b.send(ctx, address, body, opts)
	if b.observing() {
		b.observe(Outcome{Op: OpSend, Address: address, Headers: h, Err: err}, time.Time{})
	}
	return err
}

func (b *Bus) send(ctx context.Context, address string, body any, opts []DeliveryOption) (Headers, error) {
	if err := b.checkOpen(); err != nil {
		return nil, deliveryError(address, err)
	}
	env, o, err := b.prepare(ctx, KindSend, false, address, body, opts)
	if err != nil {
		return nil, err
	}
	ro := RouteOptions{LocalOnly: o.localOnly}
	if n := b.localRoute(address, KindSend, ro); n != nil {
		err = n.Send(ctx, &env, ro)
	} else {
		err = b.transport.Send(ctx, escape(env), ro)
	}
	if err != nil {
		return env.Headers, deliveryError(address, err)
	}
	return env.Headers, nil
}

// escape returns env on the heap, for a transport's method: it is kept
// apart so that the in-process path's envelope stays on the stack.
func escape(env Envelope) *Envelope { return &env }

// Publish delivers body to every consumer of address.
func (b *Bus) Publish(ctx context.Context, address string, body any, opts ...DeliveryOption) error {
	h, err := b.publish(ctx, address, body, opts)
	if b.observing() {
		b.observe(Outcome{Op: OpPublish, Address: address, Headers: h, Err: err}, time.Time{})
	}
	return err
}

func (b *Bus) publish(ctx context.Context, address string, body any, opts []DeliveryOption) (Headers, error) {
	if err := b.checkOpen(); err != nil {
		return nil, deliveryError(address, err)
	}
	env, o, err := b.prepare(ctx, KindPublish, false, address, body, opts)
	if err != nil {
		return nil, err
	}
	ro := RouteOptions{LocalOnly: o.localOnly}
	if n := b.localRoute(address, KindPublish, ro); n != nil {
		err = n.Publish(ctx, &env, ro)
	} else {
		err = b.transport.Publish(ctx, escape(env), ro)
	}
	if err != nil {
		return env.Headers, deliveryError(address, err)
	}
	return env.Headers, nil
}

// Request sends body to one consumer of address and waits for its reply,
// until the timeout (default 30 s, see [Timeout]) or until ctx ends.
// Failures are [*ReplyError]s; see the package documentation.
func (b *Bus) Request(ctx context.Context, address string, body any, opts ...DeliveryOption) (*Message, error) {
	if !b.observing() {
		m, _, err := b.request(ctx, address, body, opts)
		return m, err
	}
	start := time.Now()
	m, h, err := b.request(ctx, address, body, opts)
	b.observe(Outcome{Op: OpRequest, Address: address, Headers: h, Err: err}, start)
	return m, err
}

func (b *Bus) request(ctx context.Context, address string, body any, opts []DeliveryOption) (*Message, Headers, error) {
	if err := b.checkOpen(); err != nil {
		return nil, nil, deliveryError(address, err)
	}
	env, o, err := b.prepare(ctx, KindSend, true, address, body, opts)
	if err != nil {
		return nil, nil, err
	}
	h := env.Headers
	ro := RouteOptions{LocalOnly: o.localOnly}
	if n := b.localRoute(address, KindSend, ro); n != nil {
		// In process, one timer per node bounds the wait: a context with
		// a deadline would cost a timer and several allocations.
		c, err := n.request(ctx, &env, ro, b.timeoutOf(o))
		if err != nil {
			return nil, h, requestError(ctx, address, err)
		}
		m, err := b.finishReply(ctx, address, &c.reply, nil)
		return m, h, err
	}
	m, err := b.requestVia(ctx, address, env, o)
	return m, h, err
}

// requestVia makes a request through the transport's Request.
func (b *Bus) requestVia(ctx context.Context, address string, env Envelope, o deliveryOptions) (*Message, error) {
	if b.timed != nil {
		d, err := b.timed.RequestWithin(ctx, &env, RouteOptions{LocalOnly: o.localOnly}, b.timeoutOf(o))
		return b.finishRequest(ctx, address, d, err)
	}
	ctx, cancel := b.requestContext(ctx, o)
	defer cancel()
	d, err := b.transport.Request(ctx, &env, RouteOptions{LocalOnly: o.localOnly})
	return b.finishRequest(ctx, address, d, err)
}

func (b *Bus) timeoutOf(o deliveryOptions) time.Duration {
	if o.timeout != 0 {
		return o.timeout
	}
	return b.timeout
}

func (b *Bus) requestContext(ctx context.Context, o deliveryOptions) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.timeoutOf(o))
}

// finishRequest turns a transport's answer into a reply message or a typed
// failure.
func (b *Bus) finishRequest(ctx context.Context, address string, d *Delivery, err error) (*Message, error) {
	if err != nil {
		return nil, requestError(ctx, address, err)
	}
	m := d.takeSpare()
	if m == nil {
		m = new(Message)
	}
	m.env, m.responder = d.Envelope, d.Responder
	return b.finishReply(ctx, address, m, d.Ack)
}

// requestError maps a transport's failure of a request to a ReplyError.
func requestError(ctx context.Context, address string, err error) error {
	var re *ReplyError
	switch {
	case errors.As(err, &re):
		return err
	case errors.Is(err, ErrNoHandlers):
		return &ReplyError{Failure: FailureNoHandlers, Address: address}
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded:
		return &ReplyError{Failure: FailureTimeout, Address: address, Err: context.DeadlineExceeded}
	case errors.Is(err, context.Canceled) || ctx.Err() == context.Canceled:
		return &ReplyError{Failure: FailureError, Address: address, Message: "request cancelled", Err: context.Canceled}
	default:
		return deliveryError(address, err)
	}
}

// finishReply completes m, a reply whose envelope and responder are set:
// inbound interceptors, the delivery's ack (nil for none), and the
// failure it may carry.
func (b *Bus) finishReply(ctx context.Context, address string, m *Message, ack func(error)) (*Message, error) {
	env := &m.env
	env.Address = address
	if list := *b.inbound.Load(); len(list) > 0 {
		if err := runInterceptors(ctx, list, &Event{Kind: KindReply, Inbound: true, Envelope: env}); err != nil {
			if m.responder != nil {
				_ = m.responder.Respond(context.Background(), failureEnvelope(FailureError, 0, err.Error()))
			}
			err = deliveryError(address, err)
			if ack != nil {
				ack(err)
			}
			return nil, err
		}
	}
	if ack != nil {
		// The reply reached the requester: that is all there is to do
		// with it.
		ack(nil)
	}
	if ferr := failureFromEnvelope(address, env); ferr != nil {
		return nil, ferr
	}
	m.bus, m.kind = b, KindReply
	return m, nil
}

// Close unregisters every consumer, draining buffered messages until ctx
// ends, and closes the transport. Operations after Close fail with
// ErrClosed.
func (b *Bus) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.isClosed.Store(true)
	cs := make([]*Consumer, 0, len(b.consumers))
	for c := range b.consumers {
		cs = append(cs, c)
	}
	b.mu.Unlock()
	var errs []error
	if err := UnregisterAll(ctx, cs); err != nil {
		errs = append(errs, err)
	}
	if err := b.transport.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// UnregisterAll unregisters consumers concurrently, so that they drain
// side by side until ctx ends, and joins their errors.
func UnregisterAll(ctx context.Context, consumers []*Consumer) error {
	errs := make([]error, len(consumers))
	var wg sync.WaitGroup
	for i, c := range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Unregister(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Consumers returns the consumers registered on this bus now, in no
// particular order (for metrics and health: read their Stats).
func (b *Bus) Consumers() []*Consumer {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*Consumer, 0, len(b.consumers))
	for c := range b.consumers {
		out = append(out, c)
	}
	return out
}

// Transport returns the bus's transport, for packages that extend the bus
// (such as tools that watch traffic).
func (b *Bus) Transport() Transport { return b.transport }

// Logger returns the bus's logger.
func (b *Bus) Logger() *slog.Logger { return b.logger }
