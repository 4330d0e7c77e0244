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
	node    *LocalNode
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
func (n *LocalNetwork) Attach() *LocalNode {
	return &LocalNode{net: n, epoch: time.Now()}
}

// LocalNode is one node of a [LocalNetwork]: a [Transport] that hands
// messages to the subscribers of the network's nodes directly. It is its
// own [LocalRouter], so a bus on it takes the in-process fast path for
// every message; another transport can route the messages that stay in
// its process through a node of a network of its own (package cluster
// does, for local-only consumers and messages).
type LocalNode struct {
	net       *LocalNetwork
	closeOnce sync.Once
	isClosed  atomic.Bool
	subsMu    sync.Mutex
	subs      map[*localSub]struct{}

	// signals recycles the channels that wake requesters (see localCall).
	signals sync.Pool

	// waiting lists the requests waiting for an answer, so that Close
	// and the node's one timer can end their waits: a request waits on
	// one channel, not on a select of its answer, a timer of its own and
	// the node's closing. The timer (made on first use) is armed for
	// timerAt, the earliest deadline known when it was armed (0: not
	// armed); deadlines are times since epoch. Requests with the same
	// timeout end in the order they started, so in steady state a new
	// request leaves the timer alone. All guarded by waitMu.
	waitMu  sync.Mutex
	waiting *localCall
	timer   *time.Timer
	timerAt time.Duration
	epoch   time.Time
}

var (
	_ Transport   = (*LocalNode)(nil)
	_ LocalRouter = (*LocalNode)(nil)
)

// LocalRoute implements [LocalRouter]: every message of a node goes
// through the node itself.
func (t *LocalNode) LocalRoute(address string, kind Kind, opts RouteOptions) *LocalNode { return t }

// Subscribe implements [Transport].
func (t *LocalNode) Subscribe(address string, opts SubscribeOptions, deliver DeliverFunc) (Subscription, error) {
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
func (s *localSub) eligible(from *LocalNode, opts RouteOptions) bool {
	if (s.local || opts.LocalOnly) && s.node != from {
		return false
	}
	return !s.node.isClosed.Load()
}

// subscribers returns the entry of address and its subscribers, read
// under the network's lock (Subscribe and Unsubscribe replace the slice).
func (t *LocalNode) subscribers(address string) (*localAddress, []*localSub) {
	t.net.mu.RLock()
	defer t.net.mu.RUnlock()
	a := t.net.addrs[address]
	if a == nil {
		return nil, nil
	}
	return a, a.subs
}

// pick chooses one eligible subscriber round-robin.
func (t *LocalNode) pick(address string, opts RouteOptions) *localSub {
	a, subs := t.subscribers(address)
	if a == nil {
		return nil
	}
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

// Reaches reports whether a message sent from this node to address with
// opts has a subscriber to go to now.
func (t *LocalNode) Reaches(address string, opts RouteOptions) bool {
	_, subs := t.subscribers(address)
	for _, s := range subs {
		if s.eligible(t, opts) {
			return true
		}
	}
	return false
}

func copyEnvelope(env *Envelope) Envelope {
	return Envelope{Address: env.Address, Headers: env.Headers.Clone(), Body: copyBody(env.Body)}
}

// copyBody copies b (nil when empty, as append does, without append's
// growth arithmetic).
func copyBody(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	c := make([]byte, len(b))
	copy(c, b)
	return c
}

// localDelivery is a delivery of a send or a publish together with the
// Message its consumer makes of it: one allocation instead of two.
type localDelivery struct {
	d Delivery
	m Message
}

func newLocalDelivery(env Envelope, kind Kind) *Delivery {
	ld := &localDelivery{}
	ld.d = Delivery{Envelope: env, Kind: kind, spare: &ld.m}
	return &ld.d
}

// Send implements [Transport].
func (t *LocalNode) Send(ctx context.Context, env *Envelope, opts RouteOptions) error {
	if t.isClosed.Load() {
		return ErrClosed
	}
	if s := t.pick(env.Address, opts); s != nil {
		s.call(newLocalDelivery(copyEnvelope(env), KindSend))
	}
	return nil
}

// Publish implements [Transport].
func (t *LocalNode) Publish(ctx context.Context, env *Envelope, opts RouteOptions) error {
	if t.isClosed.Load() {
		return ErrClosed
	}
	_, subs := t.subscribers(env.Address)
	var body []byte
	for _, s := range subs {
		if s.eligible(t, opts) {
			if body == nil {
				body = append([]byte{}, env.Body...)
			}
			s.call(newLocalDelivery(Envelope{Address: env.Address, Headers: env.Headers.Clone(), Body: body}, KindPublish))
		}
	}
	return nil
}

// Request implements [Transport].
func (t *LocalNode) Request(ctx context.Context, env *Envelope, opts RouteOptions) (*Delivery, error) {
	c, err := t.request(ctx, env, opts, 0)
	if err != nil {
		return nil, err
	}
	return c.replyDelivery(), nil
}

// request delivers env to one subscriber and waits for the answer, ctx,
// the node's closing or timeout (0: none but ctx's), which costs no
// context of its own. The answer is c.reply's envelope and responder.
func (t *LocalNode) request(ctx context.Context, env *Envelope, opts RouteOptions, timeout time.Duration) (*localCall, error) {
	if t.isClosed.Load() {
		return nil, ErrClosed
	}
	s := t.pick(env.Address, opts)
	if s == nil {
		return nil, ErrNoHandlers
	}
	c := t.newCall()
	c.d = Delivery{Envelope: copyEnvelope(env), Kind: KindSend, Responder: c, spare: &c.req}
	if !s.call(&c.d) {
		return nil, ErrNoHandlers
	}
	return c, c.wait(ctx, timeout)
}

// Close implements [Transport].
func (t *LocalNode) Close() error {
	t.closeOnce.Do(func() {
		t.isClosed.Store(true)
		// Requests waiting here fail at once; those that start from
		// now on see isClosed (track checks it under waitMu).
		t.waitMu.Lock()
		for c := t.waiting; c != nil; c = c.next {
			c.finish(outcomeClosed)
		}
		t.waitMu.Unlock()
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

// localCall states and outcomes.
const (
	callUsed uint32 = 1
	callDone uint32 = 2

	// The outcome sits above the two flags.
	outcomeShift            = 2
	outcomeAnswered  uint32 = 0
	outcomeTimeout   uint32 = 1
	outcomeClosed    uint32 = 2
	outcomeCancelled uint32 = 3
)

// errClosedWaiting ends the waits of requests on a node that closes.
var errClosedWaiting = fmt.Errorf("waiting for a reply: %w", ErrClosed)

// localCall is one in-process request and its Responder. One allocation
// carries the request's delivery, the Message its consumer makes of it,
// and the reply, which is the Message the bus's Request returns. Nothing in
// it is reused: the consumer may keep its Message (it may hold it, or
// reply from another goroutine) and the requester the reply, for as long
// as they like. Only the signal channel is recycled, and only once the
// requester has received from it or has claimed done itself: at most one
// value is ever sent on it, by whoever claims done (the answer, the timer,
// the node's closing), so nobody sends on it after that.
type localCall struct {
	node *LocalNode
	d    Delivery
	req  Message
	// state holds callUsed (a response was given: one only), callDone
	// (the wait's outcome is decided) and, with callDone, the outcome.
	state      atomic.Uint32
	signal     chan struct{}
	prev, next *localCall    // in node.waiting
	deadline   time.Duration // since node.epoch; 0 for none

	// reply's envelope and responder are written by the responder
	// before it signals; the bus completes the rest.
	reply Message
}

// replyDelivery returns the answer as a transport's Request does.
func (c *localCall) replyDelivery() *Delivery {
	d := &Delivery{Envelope: c.reply.env, Kind: KindReply, Responder: c.reply.responder, spare: &c.reply}
	return d
}

func (t *LocalNode) newCall() *localCall {
	c := &localCall{node: t}
	if ch, ok := t.signals.Get().(chan struct{}); ok {
		c.signal = ch
	} else {
		c.signal = make(chan struct{}, 1)
	}
	return c
}

var errResponded = errors.New("bus: already responded")

// Respond implements [Responder].
func (c *localCall) Respond(ctx context.Context, env *Envelope) error {
	if c.state.Or(callUsed)&callUsed != 0 {
		return errResponded
	}
	c.reply.env = copyEnvelope(env)
	c.finish(outcomeAnswered)
	return nil
}

// RespondRequest implements [Responder].
func (c *localCall) RespondRequest(ctx context.Context, env *Envelope) (*Delivery, error) {
	if c.state.Or(callUsed)&callUsed != 0 {
		return nil, errResponded
	}
	next := c.node.newCall()
	c.reply.env, c.reply.responder = copyEnvelope(env), next
	c.finish(outcomeAnswered)
	if err := next.wait(ctx, 0); err != nil {
		return nil, err
	}
	return next.replyDelivery(), nil
}

// finish ends the wait with outcome, unless it has ended already.
func (c *localCall) finish(outcome uint32) {
	if c.decide(outcome) {
		c.signal <- struct{}{}
	}
}

// decide claims the outcome of the wait; only the first claim succeeds.
func (c *localCall) decide(outcome uint32) bool {
	for {
		old := c.state.Load()
		if old&callDone != 0 {
			return false
		}
		if c.state.CompareAndSwap(old, old|callDone|outcome<<outcomeShift) {
			return true
		}
	}
}

// outcome is why the wait ended.
func (c *localCall) outcome(ctx context.Context) error {
	switch c.state.Load() >> outcomeShift {
	case outcomeTimeout:
		return context.DeadlineExceeded
	case outcomeClosed:
		return errClosedWaiting
	case outcomeCancelled:
		return ctx.Err()
	}
	return nil
}

// wait waits for the answer, ctx, the node's closing, or timeout (0 for
// none), which ends it with context.DeadlineExceeded.
func (c *localCall) wait(ctx context.Context, timeout time.Duration) error {
	n := c.node
	if !n.track(c, timeout) {
		return errClosedWaiting
	}
	if done := ctx.Done(); done == nil {
		<-c.signal
	} else {
		select {
		case <-c.signal:
		case <-done:
			if !c.decide(outcomeCancelled) { // else nobody sends now
				<-c.signal // the outcome is on its way
			}
		}
	}
	n.untrack(c)
	n.signals.Put(c.signal) // nobody sends on it again (see localCall)
	return c.outcome(ctx)
}

// track adds c to the waiting requests, with its deadline, unless the
// node is closed.
func (t *LocalNode) track(c *localCall, timeout time.Duration) bool {
	var now time.Duration
	if timeout > 0 {
		now = time.Since(t.epoch)
	}
	t.waitMu.Lock()
	defer t.waitMu.Unlock()
	if t.isClosed.Load() {
		return false
	}
	c.next = t.waiting
	if c.next != nil {
		c.next.prev = c
	}
	t.waiting = c
	if timeout > 0 {
		c.deadline = now + timeout
		if t.timerAt == 0 || c.deadline < t.timerAt {
			t.armLocked(c.deadline, now)
		}
	}
	return true
}

// armLocked sets the node's timer for deadline; waitMu is held.
func (t *LocalNode) armLocked(deadline, now time.Duration) {
	t.timerAt = deadline
	if t.timer == nil {
		t.timer = time.AfterFunc(deadline-now, t.expire)
	} else {
		t.timer.Reset(deadline - now)
	}
}

// expire ends the waits whose deadline has passed and arms the timer for
// the earliest one left.
func (t *LocalNode) expire() {
	now := time.Since(t.epoch)
	t.waitMu.Lock()
	defer t.waitMu.Unlock()
	t.timerAt = 0
	var next time.Duration
	for c := t.waiting; c != nil; c = c.next {
		switch {
		case c.deadline == 0 || c.state.Load()&callDone != 0:
		case c.deadline <= now:
			c.finish(outcomeTimeout)
		case next == 0 || c.deadline < next:
			next = c.deadline
		}
	}
	if next != 0 {
		t.armLocked(next, now)
	}
}

// untrack removes c from the waiting requests. The timer stays armed: it
// finds nothing to do when it fires, or waits that started since.
func (t *LocalNode) untrack(c *localCall) {
	t.waitMu.Lock()
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		t.waiting = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
	t.waitMu.Unlock()
}
