package bus

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBufferSize is a consumer's buffer unless [BufferSize] says
// otherwise.
const DefaultBufferSize = 1000

// Handler handles the messages of a consumer. The context ends when the
// consumer is unregistered and its drain deadline has passed.
type Handler interface {
	HandleMessage(ctx context.Context, m *Message)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, m *Message)

// HandleMessage calls f(ctx, m).
func (f HandlerFunc) HandleMessage(ctx context.Context, m *Message) { f(ctx, m) }

// Executor runs tasks in order, one at a time or on a pool; a node's event
// loop is one. Execute must not block.
type Executor interface {
	Execute(task func())
}

// ConsumerOption configures a consumer.
type ConsumerOption func(*consumerOptions)

type consumerOptions struct {
	bufferSize int
	executor   Executor
	inline     bool
}

// BufferSize bounds how many messages wait for the consumer's handler
// (default [DefaultBufferSize]).
func BufferSize(n int) ConsumerOption { return func(o *consumerOptions) { o.bufferSize = n } }

// RunOn runs the consumer's handler on e (such as a node's event loop)
// instead of a goroutine of its own. Messages are still handled one at a
// time and in order.
func RunOn(e Executor) ConsumerOption { return func(o *consumerOptions) { o.executor = e } }

// Inline runs the handler in the goroutine that delivers the message (a
// local requester's or sender's, or the transport's) instead of handing
// the message to another goroutine, which saves a goroutine wake-up per
// message. Messages are still handled one at a time and in order: a
// delivery that arrives while another goroutine is running the handler
// waits in the buffer and is handled by that goroutine. Use it only for
// handlers that return quickly and never wait (such as one that queues
// the message for another process): a handler that blocks holds up its
// senders. Inline overrides RunOn.
func Inline() ConsumerOption { return func(o *consumerOptions) { o.inline = true } }

// ConsumerStats are a consumer's counters.
type ConsumerStats struct {
	Received   uint64 // accepted into the buffer
	Handled    uint64 // handed to the handler (counted before it runs, so a reply is never seen before its count)
	Overflowed uint64 // refused because the buffer was full
	Rejected   uint64 // vetoed by an inbound interceptor
	Pending    int    // in the buffer now
	Pauses     uint64 // times Pause stopped a running consumer
	Paused     bool   // paused now
}

// Consumer is a handler registered at an address.
type Consumer struct {
	bus     *Bus
	address string
	local   bool
	handler Handler
	exec    Executor
	inline  bool // Inline: the delivering goroutine drains the buffer
	sub     Subscription

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	ring      []*Message
	head, n   int
	limit     int
	paused    bool
	scheduled bool
	stopped   bool
	drained   chan struct{}
	drainOnce sync.Once
	lastWarn  time.Time
	unwarned  uint64

	signal chan struct{} // own-goroutine mode
	quit   atomic.Bool   // own-goroutine mode: set, then signalled, to end loop

	received, handled, overflowed, rejected, pauses atomic.Uint64
}

// Consumer registers h at address, reachable from every node.
func (b *Bus) Consumer(address string, h Handler, opts ...ConsumerOption) (*Consumer, error) {
	return b.register(address, false, h, opts)
}

// LocalConsumer registers h at address, reachable only from this node.
func (b *Bus) LocalConsumer(address string, h Handler, opts ...ConsumerOption) (*Consumer, error) {
	return b.register(address, true, h, opts)
}

func (b *Bus) register(address string, local bool, h Handler, opts []ConsumerOption) (*Consumer, error) {
	if err := ValidateAddress(address); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("bus: consumer of %q: nil handler", address)
	}
	o := consumerOptions{bufferSize: DefaultBufferSize}
	for _, opt := range opts {
		opt(&o)
	}
	if o.bufferSize <= 0 {
		return nil, fmt.Errorf("bus: consumer of %q: buffer size must be positive, got %d", address, o.bufferSize)
	}
	c := &Consumer{
		bus:     b,
		address: address,
		local:   local,
		handler: h,
		exec:    o.executor,
		inline:  o.inline,
		limit:   o.bufferSize,
		drained: make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.inline {
		c.exec = nil
	} else if c.exec == nil {
		c.signal = make(chan struct{}, 1)
		go c.loop()
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		c.stop()
		return nil, ErrClosed
	}
	b.consumers[c] = struct{}{}
	b.mu.Unlock()
	sub, err := b.transport.Subscribe(address, SubscribeOptions{LocalOnly: local}, c.deliver)
	if err != nil {
		b.mu.Lock()
		delete(b.consumers, c)
		b.mu.Unlock()
		c.stop()
		return nil, fmt.Errorf("bus: consumer of %q: %w", address, err)
	}
	c.mu.Lock()
	c.sub = sub
	c.mu.Unlock()
	return c, nil
}

// Address is the consumer's address.
func (c *Consumer) Address() string { return c.address }

// Stats returns the consumer's counters.
func (c *Consumer) Stats() ConsumerStats {
	c.mu.Lock()
	pending, paused := c.n, c.paused
	c.mu.Unlock()
	return ConsumerStats{
		Pauses:     c.pauses.Load(),
		Paused:     paused,
		Received:   c.received.Load(),
		Handled:    c.handled.Load(),
		Overflowed: c.overflowed.Load(),
		Rejected:   c.rejected.Load(),
		Pending:    pending,
	}
}

// deliver is the consumer's DeliverFunc: it never blocks.
func (c *Consumer) deliver(d *Delivery) {
	m := d.takeSpare()
	if m == nil {
		m = new(Message)
	}
	m.bus, m.env, m.kind, m.responder, m.ack = c.bus, d.Envelope, d.Kind, d.Responder, d.Ack
	if list := *c.bus.inbound.Load(); len(list) > 0 {
		if err := runInterceptors(c.ctx, list, &Event{Kind: d.Kind, Inbound: true, ReplyExpected: d.Responder != nil, Envelope: &m.env}); err != nil {
			c.rejected.Add(1)
			c.bus.logger.Debug("bus: inbound message refused", "address", c.address, "error", err)
			m.refuse(c.address, FailureError, err.Error())
			return
		}
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		m.refuse(c.address, FailureNoHandlers, "consumer unregistered")
		return
	}
	if c.n >= c.limit {
		c.overflowed.Add(1)
		c.unwarned++
		now := time.Now()
		var warn uint64
		if now.Sub(c.lastWarn) >= time.Second {
			warn, c.unwarned, c.lastWarn = c.unwarned, 0, now
		}
		c.mu.Unlock()
		if warn > 0 {
			c.bus.logger.Warn("bus: consumer buffer full, messages refused", "address", c.address, "buffer", c.limit, "refused", warn, "refused_total", c.overflowed.Load())
		}
		m.refuse(c.address, FailureOverflow, fmt.Sprintf("buffer of %d messages is full", c.limit))
		return
	}
	c.push(m)
	c.received.Add(1)
	schedule := !c.paused && !c.scheduled
	if schedule {
		c.scheduled = true
	}
	c.mu.Unlock()
	if schedule {
		if c.inline {
			c.drain()
		} else {
			c.schedule()
		}
	}
}

// push appends m to the ring; c.mu is held and c.n < c.limit.
func (c *Consumer) push(m *Message) {
	if c.n == len(c.ring) {
		size := 2 * len(c.ring)
		if size == 0 {
			size = 16
		}
		if size > c.limit {
			size = c.limit
		}
		next := make([]*Message, size)
		for i := 0; i < c.n; i++ {
			next[i] = c.ring[(c.head+i)%len(c.ring)]
		}
		c.ring, c.head = next, 0
	}
	c.ring[(c.head+c.n)%len(c.ring)] = m
	c.n++
}

// pop removes the oldest message, or returns nil when the consumer should
// stop draining (empty or paused) and marks it unscheduled.
func (c *Consumer) pop() *Message {
	c.mu.Lock()
	return c.popLocked()
}

// popLocked is pop with c.mu held; it unlocks it.
func (c *Consumer) popLocked() *Message {
	defer c.mu.Unlock()
	if c.n == 0 || (c.paused && !c.stopped) {
		c.scheduled = false
		if c.stopped && c.n == 0 {
			c.drainOnce.Do(func() { close(c.drained) })
		}
		return nil
	}
	m := c.ring[c.head]
	c.ring[c.head] = nil
	c.head = (c.head + 1) % len(c.ring)
	c.n--
	return m
}

// schedule starts draining the buffer; the caller has set c.scheduled.
func (c *Consumer) schedule() {
	if c.inline {
		// Resume and Unregister never run the handler themselves.
		go c.drain()
		return
	}
	if c.exec == nil {
		select {
		case c.signal <- struct{}{}:
		default:
		}
		return
	}
	c.exec.Execute(c.drainBatch)
}

// loop is the consumer's own goroutine when it has no executor. It waits
// on one channel (a receive costs less than a select): stop sets quit
// before it signals.
func (c *Consumer) loop() {
	for range c.signal {
		if c.quit.Load() {
			return
		}
		c.drainOwn()
	}
}

// drainOwn is drain for the consumer's own goroutine: when the buffer runs
// empty it yields once before it gives up being scheduled, so that a
// sender that runs meanwhile (a requester about to send again, a transport
// with more messages) adds to the buffer without waking it.
func (c *Consumer) drainOwn() {
	for {
		m := c.popKeep()
		if m == nil {
			runtime.Gosched()
			if m = c.pop(); m == nil {
				return
			}
		}
		c.handle(m)
	}
}

// popKeep is pop, except that an empty buffer leaves the consumer
// scheduled.
func (c *Consumer) popKeep() *Message {
	c.mu.Lock()
	if c.n == 0 && !c.paused && !c.stopped {
		c.mu.Unlock()
		return nil
	}
	return c.popLocked()
}

// drain handles buffered messages until the buffer is empty (or paused).
func (c *Consumer) drain() {
	for m := c.pop(); m != nil; m = c.pop() {
		c.handle(m)
	}
}

// drainBatchSize bounds how many messages one executor task handles, so
// consumers sharing an event loop take turns.
const drainBatchSize = 64

func (c *Consumer) drainBatch() {
	for i := 0; i < drainBatchSize; i++ {
		m := c.pop()
		if m == nil {
			return
		}
		c.handle(m)
	}
	c.exec.Execute(c.drainBatch)
}

// handle runs the handler on m and completes m's delivery: acknowledged
// when the handler returns (unless it held m), failed when it panics.
func (c *Consumer) handle(m *Message) {
	returned := false
	c.handled.Add(1)
	defer func() {
		if returned {
			return
		}
		r := recover()
		msg := "handler exited without returning" // runtime.Goexit
		if r != nil {
			c.bus.logger.Error("bus: handler panicked", "address", c.address, "panic", r)
			msg = fmt.Sprintf("handler panicked: %v", r)
		}
		if m.ReplyExpected() {
			_ = m.Fail(-1, msg)
		}
		m.complete(&ReplyError{Failure: FailureRecipient, Address: c.address, Code: -1, Message: msg})
	}()
	c.handler.HandleMessage(c.ctx, m)
	returned = true
	if !m.hasFlag(flagHeld) {
		m.complete(nil)
	}
}

// Pause stops handing messages to the handler; they wait in the buffer
// (and overflow when it is full) until Resume.
func (c *Consumer) Pause() {
	c.mu.Lock()
	if !c.paused {
		c.pauses.Add(1)
	}
	c.paused = true
	c.mu.Unlock()
}

// Resume hands buffered and new messages to the handler again.
func (c *Consumer) Resume() {
	c.mu.Lock()
	c.paused = false
	schedule := c.n > 0 && !c.scheduled
	if schedule {
		c.scheduled = true
	}
	c.mu.Unlock()
	if schedule {
		c.schedule()
	}
}

// Unregister stops the consumer: it accepts no new message, handles the
// buffered ones (even when paused) until ctx ends, then fails the requests
// still buffered with ErrNoHandlers and cancels the handler's context. It
// returns when the consumer is gone, with an error if messages were left
// unhandled. Do not wait on it from the consumer's own handler (the
// handler would wait for itself): call it from another goroutine.
func (c *Consumer) Unregister(ctx context.Context) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		<-c.drained
		return nil
	}
	c.stopped = true
	sub := c.sub
	idle := c.n == 0 && !c.scheduled
	resume := c.n > 0 && !c.scheduled
	if resume {
		c.scheduled = true
	}
	c.mu.Unlock()
	var err error
	if sub != nil {
		if uerr := sub.Unsubscribe(); uerr != nil {
			err = fmt.Errorf("bus: unregister %q: %w", c.address, uerr)
		}
	}
	c.bus.mu.Lock()
	delete(c.bus.consumers, c)
	c.bus.mu.Unlock()
	if idle {
		c.drainOnce.Do(func() { close(c.drained) })
	}
	if resume {
		c.schedule()
	}
	select {
	case <-c.drained:
	case <-ctx.Done():
		left := c.abandon()
		if err == nil && left > 0 {
			err = fmt.Errorf("bus: unregister %q: %d messages left unhandled: %w", c.address, left, ctx.Err())
		}
	}
	c.stop()
	return err
}

// abandon fails whatever is still buffered.
func (c *Consumer) abandon() int {
	c.mu.Lock()
	var left []*Message
	for c.n > 0 {
		left = append(left, c.ring[c.head])
		c.ring[c.head] = nil
		c.head = (c.head + 1) % len(c.ring)
		c.n--
	}
	c.mu.Unlock()
	for _, m := range left {
		m.refuse(c.address, FailureNoHandlers, "consumer unregistered before the message was handled")
	}
	c.drainOnce.Do(func() { close(c.drained) })
	return len(left)
}

func (c *Consumer) stop() {
	c.cancel()
	if c.signal != nil {
		c.quit.Store(true)
		select {
		case c.signal <- struct{}{}:
		default: // a signal is pending: loop sees quit when it takes it
		}
	}
}
