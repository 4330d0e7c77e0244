package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// LocalNetwork is the in-process transport: it connects the buses of one
// process, each attached as a node. Deliveries are handed over directly,
// without serialization; bodies are copied so a sender may reuse its
// buffer.
type LocalNetwork struct {
	mu    sync.RWMutex
	addrs map[string]*localAddress
}

type localAddress struct {
	subs []*localSub // copy-on-write
	next atomic.Uint64
}

type localSub struct {
	node    *localTransport
	local   bool
	deliver DeliverFunc

	mu      sync.RWMutex
	removed bool
	network *LocalNetwork
	address string
}

// NewLocalNetwork returns an empty in-process network.
func NewLocalNetwork() *LocalNetwork {
	return &LocalNetwork{addrs: make(map[string]*localAddress)}
}

// Attach returns a transport for one more node on the network.
func (n *LocalNetwork) Attach() Transport {
	return &localTransport{net: n, closed: make(chan struct{})}
}

type localTransport struct {
	net       *LocalNetwork
	closed    chan struct{}
	closeOnce sync.Once
	isClosed  atomic.Bool
	subsMu    sync.Mutex
	subs      map[*localSub]struct{}
}

func (t *localTransport) Subscribe(address string, opts SubscribeOptions, deliver DeliverFunc) (Subscription, error) {
	if t.isClosed.Load() {
		return nil, ErrClosed
	}
	s := &localSub{node: t, local: opts.LocalOnly, deliver: deliver, network: t.net, address: address}
	n := t.net
	n.mu.Lock()
	a := n.addrs[address]
	if a == nil {
		a = &localAddress{}
		n.addrs[address] = a
	}
	a.subs = append(append([]*localSub(nil), a.subs...), s)
	n.mu.Unlock()
	t.subsMu.Lock()
	if t.subs == nil {
		t.subs = make(map[*localSub]struct{})
	}
	t.subs[s] = struct{}{}
	t.subsMu.Unlock()
	return s, nil
}

func (s *localSub) Unsubscribe() error {
	n := s.network
	n.mu.Lock()
	if a := n.addrs[s.address]; a != nil {
		subs := make([]*localSub, 0, len(a.subs))
		for _, x := range a.subs {
			if x != s {
				subs = append(subs, x)
			}
		}
		if len(subs) == 0 {
			delete(n.addrs, s.address)
		} else {
			a.subs = subs
		}
	}
	n.mu.Unlock()
	s.mu.Lock()
	s.removed = true
	s.mu.Unlock()
	s.node.subsMu.Lock()
	delete(s.node.subs, s)
	s.node.subsMu.Unlock()
	return nil
}

// call hands d to the subscriber unless it has been removed.
func (s *localSub) call(d *Delivery) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.removed {
		return false
	}
	s.deliver(d)
	return true
}

// eligible reports whether a message from node `from` may reach s.
func (s *localSub) eligible(from *localTransport, opts RouteOptions) bool {
	if (s.local || opts.LocalOnly) && s.node != from {
		return false
	}
	return !s.node.isClosed.Load()
}

// pick chooses one eligible subscriber round-robin.
func (t *localTransport) pick(address string, opts RouteOptions) *localSub {
	t.net.mu.RLock()
	a := t.net.addrs[address]
	t.net.mu.RUnlock()
	if a == nil {
		return nil
	}
	subs := a.subs
	count := 0
	for _, s := range subs {
		if s.eligible(t, opts) {
			count++
		}
	}
	if count == 0 {
		return nil
	}
	k := int(a.next.Add(1) % uint64(count))
	for _, s := range subs {
		if s.eligible(t, opts) {
			if k == 0 {
				return s
			}
			k--
		}
	}
	return nil
}

func copyEnvelope(env *Envelope) Envelope {
	return Envelope{Address: env.Address, Headers: env.Headers.Clone(), Body: append([]byte(nil), env.Body...)}
}

func (t *localTransport) Send(ctx context.Context, env *Envelope, opts RouteOptions) error {
	if t.isClosed.Load() {
		return ErrClosed
	}
	if s := t.pick(env.Address, opts); s != nil {
		s.call(&Delivery{Envelope: copyEnvelope(env), Kind: KindSend})
	}
	return nil
}

func (t *localTransport) Publish(ctx context.Context, env *Envelope, opts RouteOptions) error {
	if t.isClosed.Load() {
		return ErrClosed
	}
	t.net.mu.RLock()
	a := t.net.addrs[env.Address]
	t.net.mu.RUnlock()
	if a == nil {
		return nil
	}
	body := append([]byte(nil), env.Body...)
	for _, s := range a.subs {
		if s.eligible(t, opts) {
			s.call(&Delivery{Envelope: Envelope{Address: env.Address, Headers: env.Headers.Clone(), Body: body}, Kind: KindPublish})
		}
	}
	return nil
}

func (t *localTransport) Request(ctx context.Context, env *Envelope, opts RouteOptions) (*Delivery, error) {
	return t.requestWithin(ctx, env, opts, 0)
}

// requestWithin is Request with a timeout (0: none but ctx's) that costs
// no context of its own.
func (t *localTransport) requestWithin(ctx context.Context, env *Envelope, opts RouteOptions, timeout time.Duration) (*Delivery, error) {
	if t.isClosed.Load() {
		return nil, ErrClosed
	}
	s := t.pick(env.Address, opts)
	if s == nil {
		return nil, ErrNoHandlers
	}
	r := newLocalResponder(t)
	if !s.call(&Delivery{Envelope: copyEnvelope(env), Kind: KindSend, Responder: r}) {
		return nil, ErrNoHandlers
	}
	if timeout <= 0 {
		return r.wait(ctx, nil)
	}
	tm := timerPool.Get().(*time.Timer)
	tm.Reset(timeout)
	d, err := r.wait(ctx, tm.C)
	tm.Stop()
	timerPool.Put(tm)
	return d, err
}

// timerPool recycles the timers of in-process requests. Since Go 1.23 a
// stopped timer's channel holds no stale value, so a pooled timer is safe
// to Reset.
var timerPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

func (t *localTransport) Close() error {
	t.closeOnce.Do(func() {
		t.isClosed.Store(true)
		close(t.closed)
		t.subsMu.Lock()
		subs := make([]*localSub, 0, len(t.subs))
		for s := range t.subs {
			subs = append(subs, s)
		}
		t.subsMu.Unlock()
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	})
	return nil
}

// localResponder carries one answer back to a waiting requester.
type localResponder struct {
	node *localTransport
	ch   chan *Delivery
	used atomic.Bool
}

func newLocalResponder(t *localTransport) *localResponder {
	return &localResponder{node: t, ch: make(chan *Delivery, 1)}
}

var errResponded = errors.New("bus: already responded")

func (r *localResponder) Respond(ctx context.Context, env *Envelope) error {
	if !r.used.CompareAndSwap(false, true) {
		return errResponded
	}
	r.ch <- &Delivery{Envelope: copyEnvelope(env), Kind: KindReply}
	return nil
}

func (r *localResponder) RespondRequest(ctx context.Context, env *Envelope) (*Delivery, error) {
	if !r.used.CompareAndSwap(false, true) {
		return nil, errResponded
	}
	next := newLocalResponder(r.node)
	r.ch <- &Delivery{Envelope: copyEnvelope(env), Kind: KindReply, Responder: next}
	return next.wait(ctx, nil)
}

// wait waits for the answer, ctx, the transport's closing, or timeout (nil
// for none), which ends it with context.DeadlineExceeded.
func (r *localResponder) wait(ctx context.Context, timeout <-chan time.Time) (*Delivery, error) {
	select {
	case d := <-r.ch:
		return d, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timeout:
		return nil, context.DeadlineExceeded
	case <-r.node.closed:
		return nil, fmt.Errorf("waiting for a reply: %w", ErrClosed)
	}
}
