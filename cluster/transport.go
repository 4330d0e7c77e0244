package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-dev/cloister/bus"
)

// Subject prefixes of the mapping described in the package documentation.
const (
	SubjectRoot    = "cloister"
	SendPrefix     = SubjectRoot + ".send."
	PublishPrefix  = SubjectRoot + ".pub."
	DurablePrefix  = SubjectRoot + ".durable."
	ReplyPrefix    = SubjectRoot + ".reply"
	SendQueueGroup = "cloister"
)

// ErrDisconnected is the error of a request that was waiting for its reply
// (or was made) while the connection to NATS was down.
var ErrDisconnected = errors.New("cluster: connection to NATS lost")

// flushTimeout bounds how long Subscribe and Unsubscribe wait for the
// server to confirm a change of interest.
const flushTimeout = 10 * time.Second

type transportConfig struct {
	name    string
	logger  *slog.Logger
	durable []string
	ackWait time.Duration
}

var _ bus.Transport = (*Transport)(nil)

// Transport is a [bus.Transport] on one NATS connection. It is safe for
// concurrent use.
type Transport struct {
	nc     *nats.Conn
	logger *slog.Logger

	closed    chan struct{}
	isClosed  atomic.Bool
	closeOnce sync.Once

	// mu guards addrs, the table of this transport's subscriptions (both
	// local-only and regular) used by the local fast path.
	mu    sync.RWMutex
	addrs map[string]*localAddr
	// localOnly counts the local-only subscriptions: while it is zero a
	// regular send skips the table.
	localOnly atomic.Int64

	pmu     sync.Mutex
	pending map[*pendingRequest]struct{}

	durable *durableState
}

// localAddr is this transport's subscriptions of one address.
type localAddr struct {
	subs      []*subscription // copy-on-write
	localOnly int
	next      atomic.Uint64
}

type pendingRequest struct{ cancel context.CancelCauseFunc }

func dial(ctx context.Context, servers string, cfg transportConfig, copts ...nats.Option) (*Transport, error) {
	t := &Transport{
		logger:  cfg.logger,
		closed:  make(chan struct{}),
		addrs:   make(map[string]*localAddr),
		pending: make(map[*pendingRequest]struct{}),
	}
	copts = append(copts,
		nats.CustomInboxPrefix(ReplyPrefix),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if t.isClosed.Load() {
				return
			}
			n := t.failPending(fmt.Errorf("%w: %v", ErrDisconnected, err))
			t.logger.Warn("cluster: disconnected from NATS", "error", err, "failed_requests", n)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			t.logger.Info("cluster: reconnected to NATS", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			t.logger.Error("cluster: NATS error", "subject", subj, "error", err)
		}),
	)
	if servers == "" {
		servers = nats.DefaultURL
	}
	nc, err := nats.Connect(servers, copts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to NATS: %w", err)
	}
	t.nc = nc
	if len(cfg.durable) > 0 {
		ds, err := newDurableState(ctx, t, cfg)
		if err != nil {
			nc.Close()
			return nil, err
		}
		t.durable = ds
	}
	return t, nil
}

// Conn is the transport's NATS connection, for tools (such as a tap) and
// benchmarks that compare with raw NATS. Do not close it.
func (t *Transport) Conn() *nats.Conn { return t.nc }

// failPending fails every request waiting for a reply with cause and
// returns how many there were.
func (t *Transport) failPending(cause error) int {
	t.pmu.Lock()
	defer t.pmu.Unlock()
	n := len(t.pending)
	for p := range t.pending {
		p.cancel(cause)
		delete(t.pending, p)
	}
	return n
}

func (t *Transport) flush() error {
	if !t.nc.IsConnected() {
		// The change is replayed on reconnect.
		return nil
	}
	if err := t.nc.FlushTimeout(flushTimeout); err != nil && t.nc.IsConnected() {
		return fmt.Errorf("cluster: waiting for the server to confirm: %w", err)
	}
	return nil
}

// spaceMark encloses, on the wire, a header value that starts or ends with a
// space or a tab: NATS trims the whitespace around a header's value, and
// bus values never contain DEL (0x7f), so the marks are unambiguous.
const spaceMark = "\x7f"

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func toNATS(h bus.Headers) nats.Header {
	if len(h) == 0 {
		return nil
	}
	out := make(nats.Header, len(h))
	for k, v := range h {
		if v != "" && (isSpace(v[0]) || isSpace(v[len(v)-1])) {
			v = spaceMark + v + spaceMark
		}
		out[k] = []string{v}
	}
	return out
}

func fromNATS(h nats.Header) bus.Headers {
	if len(h) == 0 {
		return nil
	}
	out := make(bus.Headers, len(h))
	for k, v := range h {
		if len(v) > 0 {
			x := v[0]
			if len(x) >= 2 && strings.HasPrefix(x, spaceMark) && strings.HasSuffix(x, spaceMark) {
				x = x[len(spaceMark) : len(x)-len(spaceMark)]
			}
			out[k] = x
		} else {
			out[k] = ""
		}
	}
	return out
}

// subscription is one bus consumer's registration.
type subscription struct {
	t         *Transport
	address   string
	localOnly bool
	deliver   bus.DeliverFunc

	sendSub, pubSub *nats.Subscription
	durable         *durableSub

	mu      sync.RWMutex
	removed bool
	once    sync.Once
}

// Subscribe implements [bus.Transport].
func (t *Transport) Subscribe(address string, opts bus.SubscribeOptions, deliver bus.DeliverFunc) (bus.Subscription, error) {
	if t.isClosed.Load() {
		return nil, bus.ErrClosed
	}
	if err := bus.ValidateAddress(address); err != nil {
		return nil, err
	}
	s := &subscription{t: t, address: address, localOnly: opts.LocalOnly, deliver: deliver}
	if !opts.LocalOnly {
		var err error
		if s.sendSub, err = t.nc.QueueSubscribe(SendPrefix+address, SendQueueGroup, s.onSend); err != nil {
			return nil, fmt.Errorf("cluster: subscribe %q: %w", address, err)
		}
		if s.pubSub, err = t.nc.Subscribe(PublishPrefix+address, s.onPublish); err != nil {
			_ = s.sendSub.Unsubscribe()
			return nil, fmt.Errorf("cluster: subscribe %q: %w", address, err)
		}
		if t.durable != nil && t.durable.isDurable(address) {
			if s.durable, err = t.durable.subscribe(s); err != nil {
				s.unsubscribeNATS()
				return nil, err
			}
		}
		if err := t.flush(); err != nil {
			s.unsubscribeNATS()
			return nil, fmt.Errorf("cluster: subscribe %q: %w", address, err)
		}
	}
	t.mu.Lock()
	a := t.addrs[address]
	if a == nil {
		a = &localAddr{}
		t.addrs[address] = a
	}
	a.subs = append(append([]*subscription(nil), a.subs...), s)
	if s.localOnly {
		a.localOnly++
		t.localOnly.Add(1)
	}
	t.mu.Unlock()
	return s, nil
}

func (s *subscription) unsubscribeNATS() {
	if s.sendSub != nil {
		_ = s.sendSub.Unsubscribe()
	}
	if s.pubSub != nil {
		_ = s.pubSub.Unsubscribe()
	}
	if s.durable != nil {
		s.durable.stop()
	}
}

// Unsubscribe implements [bus.Subscription]: when it returns the server no
// longer routes messages to it and its DeliverFunc is not called again.
func (s *subscription) Unsubscribe() error {
	var err error
	s.once.Do(func() {
		t := s.t
		t.mu.Lock()
		if a := t.addrs[s.address]; a != nil {
			subs := make([]*subscription, 0, len(a.subs))
			for _, x := range a.subs {
				if x != s {
					subs = append(subs, x)
				}
			}
			a.subs = subs
			if s.localOnly {
				a.localOnly--
				t.localOnly.Add(-1)
			}
			if len(subs) == 0 {
				delete(t.addrs, s.address)
			}
		}
		t.mu.Unlock()
		if !s.localOnly {
			s.unsubscribeNATS()
			if !t.isClosed.Load() {
				err = t.flush()
			}
		}
		s.mu.Lock()
		s.removed = true
		s.mu.Unlock()
	})
	return err
}

// call hands d to the consumer unless the subscription is gone.
func (s *subscription) call(d *bus.Delivery) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.removed {
		return false
	}
	s.deliver(d)
	return true
}

func (s *subscription) onSend(m *nats.Msg) {
	d := &bus.Delivery{
		Envelope: bus.Envelope{Address: s.address, Headers: fromNATS(m.Header), Body: m.Data},
		Kind:     bus.KindSend,
	}
	if m.Reply != "" {
		d.Responder = &natsResponder{t: s.t, subject: m.Reply}
	}
	if !s.call(d) && d.Responder != nil {
		_ = d.Responder.Respond(context.Background(), noHandlersEnvelope("consumer unregistered"))
	}
}

func (s *subscription) onPublish(m *nats.Msg) {
	s.call(&bus.Delivery{
		Envelope: bus.Envelope{Address: s.address, Headers: fromNATS(m.Header), Body: m.Data},
		Kind:     bus.KindPublish,
	})
}

// noHandlersEnvelope is the failure reply of a request that reached a
// consumer just as it went away.
func noHandlersEnvelope(msg string) *bus.Envelope {
	return &bus.Envelope{Headers: bus.Headers{bus.HeaderFailure: bus.FailureNoHandlers.String()}, Body: []byte(msg)}
}

// localTargets returns this transport's subscriptions of address and
// whether any of them is local-only.
func (t *Transport) localTargets(address string) (*localAddr, bool) {
	t.mu.RLock()
	a := t.addrs[address]
	t.mu.RUnlock()
	if a == nil {
		return nil, false
	}
	return a, a.localOnly > 0
}

// local reports whether a message to address goes by the local fast path.
func (t *Transport) local(address string, opts bus.RouteOptions) (*localAddr, bool) {
	if !opts.LocalOnly && t.localOnly.Load() == 0 {
		return nil, false
	}
	a, hasLocalOnly := t.localTargets(address)
	return a, opts.LocalOnly || hasLocalOnly
}

// pick chooses one of a's subscriptions round-robin.
func (a *localAddr) pick() *subscription {
	if a == nil {
		return nil
	}
	subs := a.subs
	if len(subs) == 0 {
		return nil
	}
	return subs[a.next.Add(1)%uint64(len(subs))]
}

func copyEnvelope(env *bus.Envelope) bus.Envelope {
	return bus.Envelope{Address: env.Address, Headers: env.Headers.Clone(), Body: append([]byte(nil), env.Body...)}
}

// Send implements [bus.Transport].
func (t *Transport) Send(ctx context.Context, env *bus.Envelope, opts bus.RouteOptions) error {
	if t.isClosed.Load() {
		return bus.ErrClosed
	}
	if a, local := t.local(env.Address, opts); local {
		if s := a.pick(); s != nil {
			s.call(&bus.Delivery{Envelope: copyEnvelope(env), Kind: bus.KindSend})
		}
		return nil
	}
	if t.durable != nil && t.durable.isDurable(env.Address) {
		return t.durable.send(ctx, env)
	}
	if err := t.publish(SendPrefix+env.Address, env); err != nil {
		return fmt.Errorf("cluster: send to %q: %w", env.Address, err)
	}
	return nil
}

// publish puts env on subject, without a NATS message of its own when it
// has no headers.
func (t *Transport) publish(subject string, env *bus.Envelope) error {
	if len(env.Headers) == 0 {
		return t.nc.Publish(subject, env.Body)
	}
	return t.nc.PublishMsg(&nats.Msg{Subject: subject, Header: toNATS(env.Headers), Data: env.Body})
}

// Publish implements [bus.Transport].
func (t *Transport) Publish(ctx context.Context, env *bus.Envelope, opts bus.RouteOptions) error {
	if t.isClosed.Load() {
		return bus.ErrClosed
	}
	var a *localAddr
	if opts.LocalOnly || t.localOnly.Load() > 0 {
		a, _ = t.localTargets(env.Address)
	}
	if a != nil {
		var body []byte
		for _, s := range a.subs {
			if opts.LocalOnly || s.localOnly {
				if body == nil {
					body = append([]byte{}, env.Body...)
				}
				s.call(&bus.Delivery{Envelope: bus.Envelope{Address: env.Address, Headers: env.Headers.Clone(), Body: body}, Kind: bus.KindPublish})
			}
		}
	}
	if opts.LocalOnly {
		return nil
	}
	if err := t.publish(PublishPrefix+env.Address, env); err != nil {
		return fmt.Errorf("cluster: publish to %q: %w", env.Address, err)
	}
	return nil
}

// Request implements [bus.Transport].
func (t *Transport) Request(ctx context.Context, env *bus.Envelope, opts bus.RouteOptions) (*bus.Delivery, error) {
	if t.isClosed.Load() {
		return nil, bus.ErrClosed
	}
	if a, local := t.local(env.Address, opts); local {
		s := a.pick()
		if s == nil {
			return nil, bus.ErrNoHandlers
		}
		r := newLocalResponder(t)
		if !s.call(&bus.Delivery{Envelope: copyEnvelope(env), Kind: bus.KindSend, Responder: r}) {
			return nil, bus.ErrNoHandlers
		}
		return r.wait(ctx)
	}
	return t.request(ctx, SendPrefix+env.Address, env)
}

// request sends env to subject and waits for the answer.
func (t *Transport) request(ctx context.Context, subject string, env *bus.Envelope) (*bus.Delivery, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := &pendingRequest{cancel: cancel}
	t.pmu.Lock()
	if t.isClosed.Load() {
		t.pmu.Unlock()
		return nil, bus.ErrClosed
	}
	t.pending[p] = struct{}{}
	t.pmu.Unlock()
	defer func() {
		t.pmu.Lock()
		delete(t.pending, p)
		t.pmu.Unlock()
	}()
	// Checked once the request is registered, so that a drop either shows
	// here or fails it through the disconnect handler.
	if !t.nc.IsConnected() {
		return nil, fmt.Errorf("%w: %s", ErrDisconnected, t.nc.Status())
	}
	var m *nats.Msg
	var err error
	if len(env.Headers) == 0 {
		m, err = t.nc.RequestWithContext(ctx, subject, env.Body)
	} else {
		m, err = t.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Header: toNATS(env.Headers), Data: env.Body})
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() == context.Canceled && !errors.Is(cause, context.Canceled) {
			// Failed by the transport: disconnected or closed.
			return nil, cause
		}
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil, fmt.Errorf("cluster: %w", bus.ErrNoHandlers)
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, nats.ErrDisconnected):
			return nil, fmt.Errorf("%w: %v", ErrDisconnected, err)
		case errors.Is(err, nats.ErrConnectionClosed):
			return nil, fmt.Errorf("cluster: request: %w", bus.ErrClosed)
		}
		return nil, fmt.Errorf("cluster: request: %w", err)
	}
	d := &bus.Delivery{Envelope: bus.Envelope{Address: env.Address, Headers: fromNATS(m.Header), Body: m.Data}, Kind: bus.KindReply}
	if m.Reply != "" {
		d.Responder = &natsResponder{t: t, subject: m.Reply}
	}
	return d, nil
}

// Close implements [bus.Transport]: waiting requests fail with
// bus.ErrClosed and the connection is closed.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		t.pmu.Lock()
		t.isClosed.Store(true)
		t.pmu.Unlock()
		close(t.closed)
		t.failPending(fmt.Errorf("cluster: transport closed: %w", bus.ErrClosed))
		t.mu.Lock()
		var subs []*subscription
		for _, a := range t.addrs {
			subs = append(subs, a.subs...)
		}
		t.mu.Unlock()
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		if t.durable != nil {
			t.durable.close()
		}
		t.nc.Close()
	})
	return nil
}

var errResponded = errors.New("cluster: already responded")

// natsResponder answers over a NATS reply subject.
type natsResponder struct {
	t       *Transport
	subject string
	used    atomic.Bool
}

func (r *natsResponder) Respond(ctx context.Context, env *bus.Envelope) error {
	if !r.used.CompareAndSwap(false, true) {
		return errResponded
	}
	if err := r.t.publish(r.subject, env); err != nil {
		return fmt.Errorf("cluster: reply: %w", err)
	}
	return nil
}

func (r *natsResponder) RespondRequest(ctx context.Context, env *bus.Envelope) (*bus.Delivery, error) {
	if !r.used.CompareAndSwap(false, true) {
		return nil, errResponded
	}
	return r.t.request(ctx, r.subject, env)
}

// localResponder carries an answer back over the local fast path.
type localResponder struct {
	t    *Transport
	ch   chan *bus.Delivery
	used atomic.Bool
}

func newLocalResponder(t *Transport) *localResponder {
	return &localResponder{t: t, ch: make(chan *bus.Delivery, 1)}
}

func (r *localResponder) Respond(ctx context.Context, env *bus.Envelope) error {
	if !r.used.CompareAndSwap(false, true) {
		return errResponded
	}
	r.ch <- &bus.Delivery{Envelope: copyEnvelope(env), Kind: bus.KindReply}
	return nil
}

func (r *localResponder) RespondRequest(ctx context.Context, env *bus.Envelope) (*bus.Delivery, error) {
	if !r.used.CompareAndSwap(false, true) {
		return nil, errResponded
	}
	next := newLocalResponder(r.t)
	r.ch <- &bus.Delivery{Envelope: copyEnvelope(env), Kind: bus.KindReply, Responder: next}
	return next.wait(ctx)
}

func (r *localResponder) wait(ctx context.Context) (*bus.Delivery, error) {
	select {
	case d := <-r.ch:
		return d, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-r.t.closed:
		return nil, fmt.Errorf("cluster: waiting for a reply: %w", bus.ErrClosed)
	}
}

var (
	_ bus.ConnectionReporter = (*Transport)(nil)
	_ bus.DurableReporter    = (*Transport)(nil)
)

// Connection reports the transport's NATS connection: its state and how
// many times it reconnected.
func (t *Transport) Connection() bus.ConnectionStatus {
	st := t.nc.Status()
	return bus.ConnectionStatus{Connected: st == nats.CONNECTED, State: st.String(), Reconnects: t.nc.Stats().Reconnects}
}

// DurableStats returns the JetStream backlog of every durable address the
// transport was configured with (none without durable addresses).
func (t *Transport) DurableStats(ctx context.Context) (map[string]bus.DurableStats, error) {
	out := map[string]bus.DurableStats{}
	if t.durable == nil {
		return out, nil
	}
	var errs []error
	for a := range t.durable.addrs {
		c, err := t.durable.consumer(ctx, a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		info, err := c.Info(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster: durable consumer of %q: %w", a, err))
			continue
		}
		out[a] = bus.DurableStats{Pending: info.NumPending, AckPending: uint64(info.NumAckPending), Redelivered: uint64(info.NumRedelivered)}
	}
	return out, errors.Join(errs...)
}
