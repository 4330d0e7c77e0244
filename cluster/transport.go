package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
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

var (
	_ bus.Transport   = (*Transport)(nil)
	_ bus.LocalRouter = (*Transport)(nil)
)

// Transport is a [bus.Transport] on one NATS connection. It is safe for
// concurrent use.
type Transport struct {
	nc     *nats.Conn
	logger *slog.Logger

	isClosed  atomic.Bool
	closeOnce sync.Once

	// The messages that stay on this node go through the bus's
	// in-process transport: every subscription is also one of node, and
	// the local-only ones are also one of onlyNode, which says which
	// addresses have local-only consumers here (see LocalRoute).
	node, onlyNode *bus.LocalNode
	// localOnly counts the local-only subscriptions: while it is zero a
	// regular message skips onlyNode.
	localOnly atomic.Int64

	smu  sync.Mutex
	subs map[*subscription]struct{}

	// Requests over NATS share one reply subscription, replyPrefix+"*":
	// each waits under a token of its own in pending (guarded by pmu),
	// so that a request costs no subscription and no context, and a
	// disconnect fails the waiting ones at once.
	replyPrefix string
	replySub    *nats.Subscription
	pmu         sync.Mutex
	pending     map[string]*natsCall
	nextToken   uint64
	calls       sync.Pool // of *natsCall, recycled once answered
	timers      sync.Pool // of stopped *time.Timer

	durable *durableState
}

// natsCall is a request waiting for its answer: the reply message, or a
// failure of the whole transport. The channel is sent on at most once,
// by whoever removes the call from pending; a call whose requester took
// the answer can therefore be reused.
type natsCall struct {
	answer chan *nats.Msg
	err    error // set before a nil answer is sent
}

func dial(ctx context.Context, servers string, cfg transportConfig, copts ...nats.Option) (*Transport, error) {
	t := &Transport{
		logger:   cfg.logger,
		node:     bus.NewLocalNetwork().Attach(),
		onlyNode: bus.NewLocalNetwork().Attach(),
		subs:     make(map[*subscription]struct{}),
		pending:  make(map[string]*natsCall),
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
	t.replyPrefix = nc.NewInbox() + "."
	if t.replySub, err = nc.Subscribe(t.replyPrefix+"*", t.onReply); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: subscribe to replies: %w", err)
	}
	_ = t.replySub.SetPendingLimits(-1, -1) // bounded by the requests waiting
	// Durability is the address's: what any transport declared durable
	// is durable for this one's sends too.
	for _, a := range declaredDurable(ctx, nc) {
		if !slices.Contains(cfg.durable, a) {
			cfg.durable = append(slices.Clip(cfg.durable), a)
		}
	}
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
	for token, c := range t.pending {
		delete(t.pending, token)
		c.err = cause
		c.answer <- nil
	}
	return n
}

// onReply hands a reply to the request waiting for it, if any (one
// answer per request: later ones, and answers to requests that gave up,
// are dropped).
func (t *Transport) onReply(m *nats.Msg) {
	token := strings.TrimPrefix(m.Subject, t.replyPrefix)
	t.pmu.Lock()
	c := t.pending[token]
	delete(t.pending, token)
	t.pmu.Unlock()
	if c != nil {
		c.answer <- m
	}
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
	// local and onlyLocal are the subscription's in the transport's
	// node and, for a local-only one, onlyNode.
	local, onlyLocal bus.Subscription

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
	var err error
	if s.local, err = t.node.Subscribe(address, bus.SubscribeOptions{}, deliver); err == nil && s.localOnly {
		s.onlyLocal, err = t.onlyNode.Subscribe(address, bus.SubscribeOptions{}, deliver)
	}
	if err != nil {
		s.unsubscribeLocal()
		s.unsubscribeNATS()
		return nil, fmt.Errorf("cluster: subscribe %q: %w", address, err)
	}
	if s.localOnly {
		t.localOnly.Add(1)
	}
	t.smu.Lock()
	t.subs[s] = struct{}{}
	t.smu.Unlock()
	return s, nil
}

func (s *subscription) unsubscribeLocal() {
	if s.local != nil {
		_ = s.local.Unsubscribe()
	}
	if s.onlyLocal != nil {
		_ = s.onlyLocal.Unsubscribe()
	}
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
		t.smu.Lock()
		delete(t.subs, s)
		t.smu.Unlock()
		s.unsubscribeLocal()
		if s.localOnly {
			t.localOnly.Add(-1)
		}
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

// requestDelivery is a delivery of a request and its responder, in one
// allocation.
type requestDelivery struct {
	d bus.Delivery
	r natsResponder
}

func (s *subscription) onSend(m *nats.Msg) {
	var d *bus.Delivery
	if m.Reply != "" {
		rd := &requestDelivery{r: natsResponder{t: s.t, subject: m.Reply}}
		rd.d.Responder = &rd.r
		d = &rd.d
		d.Envelope = bus.Envelope{Address: s.address, Headers: fromNATS(m.Header), Body: m.Data}
		d.Kind = bus.KindSend
	} else {
		d = bus.NewDelivery(bus.Envelope{Address: s.address, Headers: fromNATS(m.Header), Body: m.Data}, bus.KindSend)
	}
	if !s.call(d) && d.Responder != nil {
		_ = d.Responder.Respond(context.Background(), noHandlersEnvelope("consumer unregistered"))
	}
}

func (s *subscription) onPublish(m *nats.Msg) {
	s.call(bus.NewDelivery(bus.Envelope{Address: s.address, Headers: fromNATS(m.Header), Body: m.Data}, bus.KindPublish))
}

// noHandlersEnvelope is the failure reply of a request that reached a
// consumer just as it went away.
func noHandlersEnvelope(msg string) *bus.Envelope {
	return &bus.Envelope{Headers: bus.Headers{bus.HeaderFailure: bus.FailureNoHandlers.String()}, Body: []byte(msg)}
}

// LocalRoute implements [bus.LocalRouter]: a message stays on this node
// when it is local-only, or when its address has a local-only consumer
// here (the address is then served on this node); a publish of the
// latter kind goes both ways, so the transport's Publish handles it.
func (t *Transport) LocalRoute(address string, kind bus.Kind, opts bus.RouteOptions) *bus.LocalNode {
	if opts.LocalOnly {
		return t.node
	}
	if kind == bus.KindPublish || t.localOnly.Load() == 0 || !t.onlyNode.Reaches(address, bus.RouteOptions{}) {
		return nil
	}
	return t.node
}

// Send implements [bus.Transport].
func (t *Transport) Send(ctx context.Context, env *bus.Envelope, opts bus.RouteOptions) error {
	if t.isClosed.Load() {
		return bus.ErrClosed
	}
	if n := t.LocalRoute(env.Address, bus.KindSend, opts); n != nil {
		return n.Send(ctx, env, bus.RouteOptions{})
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
	if opts.LocalOnly {
		return t.node.Publish(ctx, env, bus.RouteOptions{})
	}
	if t.localOnly.Load() > 0 {
		// The local-only consumers get it here, the others over NATS.
		if err := t.onlyNode.Publish(ctx, env, bus.RouteOptions{}); err != nil {
			return err
		}
	}
	if err := t.publish(PublishPrefix+env.Address, env); err != nil {
		return fmt.Errorf("cluster: publish to %q: %w", env.Address, err)
	}
	return nil
}

// Request implements [bus.Transport].
func (t *Transport) Request(ctx context.Context, env *bus.Envelope, opts bus.RouteOptions) (*bus.Delivery, error) {
	return t.RequestWithin(ctx, env, opts, 0)
}

// RequestWithin implements [bus.TimedRequester]: Request, ending with
// context.DeadlineExceeded after timeout (0 for no limit but ctx's),
// without a context of its own.
func (t *Transport) RequestWithin(ctx context.Context, env *bus.Envelope, opts bus.RouteOptions, timeout time.Duration) (*bus.Delivery, error) {
	if t.isClosed.Load() {
		return nil, bus.ErrClosed
	}
	if n := t.LocalRoute(env.Address, bus.KindSend, opts); n != nil {
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		return n.Request(ctx, env, bus.RouteOptions{})
	}
	return t.request(ctx, SendPrefix+env.Address, env, timeout)
}

// request sends env to subject and waits for the answer, until ctx ends
// or timeout (0: none) passes.
func (t *Transport) request(ctx context.Context, subject string, env *bus.Envelope, timeout time.Duration) (*bus.Delivery, error) {
	c, _ := t.calls.Get().(*natsCall)
	if c == nil {
		c = &natsCall{answer: make(chan *nats.Msg, 1)}
	}
	c.err = nil
	t.pmu.Lock()
	if t.isClosed.Load() {
		t.pmu.Unlock()
		return nil, bus.ErrClosed
	}
	t.nextToken++
	reply := t.replyPrefix + strconv.FormatUint(t.nextToken, 36)
	token := reply[len(t.replyPrefix):]
	t.pending[token] = c
	t.pmu.Unlock()
	// abandon removes the call unless an answer is on its way, in which
	// case the call is not reused (the answer lands in its buffer).
	abandon := func() {
		t.pmu.Lock()
		delete(t.pending, token)
		t.pmu.Unlock()
	}
	// Checked once the request is registered, so that a drop either shows
	// here or fails it through the disconnect handler.
	if !t.nc.IsConnected() {
		abandon()
		return nil, fmt.Errorf("%w: %s", ErrDisconnected, t.nc.Status())
	}
	var err error
	if len(env.Headers) == 0 {
		err = t.nc.PublishRequest(subject, reply, env.Body)
	} else {
		err = t.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: reply, Header: toNATS(env.Headers), Data: env.Body})
	}
	if err != nil {
		abandon()
		switch {
		case errors.Is(err, nats.ErrConnectionClosed):
			return nil, fmt.Errorf("cluster: request: %w", bus.ErrClosed)
		case errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting):
			return nil, fmt.Errorf("%w: %v", ErrDisconnected, err)
		}
		return nil, fmt.Errorf("cluster: request: %w", err)
	}
	var expired <-chan time.Time
	if timeout > 0 {
		tm, _ := t.timers.Get().(*time.Timer)
		if tm == nil {
			tm = time.NewTimer(timeout)
		} else {
			tm.Reset(timeout)
		}
		// Since Go 1.23 a stopped timer's channel holds no stale value,
		// so the timer can be reused.
		defer func() { tm.Stop(); t.timers.Put(tm) }()
		expired = tm.C
	}
	var m *nats.Msg
	select {
	case m = <-c.answer:
	case <-ctx.Done():
		abandon()
		return nil, ctx.Err()
	case <-expired:
		abandon()
		return nil, context.DeadlineExceeded
	}
	if m == nil {
		// Failed by the transport: disconnected or closed.
		err := c.err
		t.calls.Put(c)
		return nil, err
	}
	t.calls.Put(c)
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		return nil, fmt.Errorf("cluster: %w", bus.ErrNoHandlers)
	}
	d := bus.NewDelivery(bus.Envelope{Address: env.Address, Headers: fromNATS(m.Header), Body: m.Data}, bus.KindReply)
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
		// Requests waiting on the local path fail with bus.ErrClosed.
		_ = t.node.Close()
		_ = t.onlyNode.Close()
		t.failPending(fmt.Errorf("cluster: transport closed: %w", bus.ErrClosed))
		t.smu.Lock()
		subs := make([]*subscription, 0, len(t.subs))
		for s := range t.subs {
			subs = append(subs, s)
		}
		t.smu.Unlock()
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		if t.durable != nil {
			t.durable.close()
		}
		_ = t.replySub.Unsubscribe()
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
	return r.t.request(ctx, r.subject, env, 0)
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
