package bus_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/internal/testenv"
)

// ackTransport is a transport with at-least-once deliveries: the test hands
// deliveries, each with an Ack, straight to the subscribed DeliverFunc.
type ackTransport struct {
	mu   sync.Mutex
	subs map[string]bus.DeliverFunc // kept after Unsubscribe: see deliverLate
	gone map[string]bool
	// reply is what Request answers.
	reply *bus.Delivery
}

type ackSub struct {
	t       *ackTransport
	address string
}

func (s ackSub) Unsubscribe() error {
	s.t.mu.Lock()
	s.t.gone[s.address] = true
	s.t.mu.Unlock()
	return nil
}

func (t *ackTransport) Subscribe(address string, _ bus.SubscribeOptions, deliver bus.DeliverFunc) (bus.Subscription, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.subs[address] = deliver
	delete(t.gone, address)
	return ackSub{t, address}, nil
}

func (t *ackTransport) Send(context.Context, *bus.Envelope, bus.RouteOptions) error    { return nil }
func (t *ackTransport) Publish(context.Context, *bus.Envelope, bus.RouteOptions) error { return nil }
func (t *ackTransport) Request(context.Context, *bus.Envelope, bus.RouteOptions) (*bus.Delivery, error) {
	return t.reply, nil
}
func (t *ackTransport) Close() error { return nil }

// deliver hands body to address's consumer with an Ack that records into r.
func (t *ackTransport) deliver(tb testing.TB, address, body string, r *ackRecord) {
	tb.Helper()
	t.mu.Lock()
	f, gone := t.subs[address], t.gone[address]
	t.mu.Unlock()
	if f == nil || gone {
		tb.Fatalf("no subscription of %q", address)
	}
	f(&bus.Delivery{Envelope: bus.Envelope{Address: address, Body: []byte(body)}, Kind: bus.KindSend, Ack: r.ack})
}

// deliverLate calls the DeliverFunc of an unsubscribed address, as a
// transport racing with Unsubscribe may.
func (t *ackTransport) deliverLate(address, body string, r *ackRecord) {
	t.mu.Lock()
	f := t.subs[address]
	t.mu.Unlock()
	f(&bus.Delivery{Envelope: bus.Envelope{Address: address, Body: []byte(body)}, Kind: bus.KindSend, Ack: r.ack})
}

// ackRecord records the Ack calls of one delivery.
type ackRecord struct {
	mu    sync.Mutex
	calls []error
}

func (r *ackRecord) ack(err error) {
	r.mu.Lock()
	r.calls = append(r.calls, err)
	r.mu.Unlock()
}

func (r *ackRecord) snapshot() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.calls...)
}

// want fails unless Ack was called exactly once, with nil (target nil) or
// with an error matching target.
func (r *ackRecord) want(t *testing.T, what string, target error) {
	t.Helper()
	calls := r.snapshot()
	if len(calls) != 1 {
		t.Fatalf("%s: Ack called %d times (%v), want once", what, len(calls), calls)
	}
	switch {
	case target == nil && calls[0] != nil:
		t.Fatalf("%s: Ack(%v), want Ack(nil)", what, calls[0])
	case target != nil && !errors.Is(calls[0], target):
		t.Fatalf("%s: Ack(%v), want an error matching %v", what, calls[0], target)
	}
	var re *bus.ReplyError
	if target != nil && !errors.As(calls[0], &re) {
		t.Fatalf("%s: Ack(%v): want a *bus.ReplyError", what, calls[0])
	}
}

func (r *ackRecord) wantNone(t *testing.T, what string) {
	t.Helper()
	if calls := r.snapshot(); len(calls) != 0 {
		t.Fatalf("%s: Ack called %d times (%v), want not yet", what, len(calls), calls)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newAckBus(t *testing.T, opts ...bus.Option) (*bus.Bus, *ackTransport) {
	t.Helper()
	tr := &ackTransport{subs: map[string]bus.DeliverFunc{}, gone: map[string]bool{}}
	b, err := bus.New(append([]bus.Option{bus.WithTransport(tr), bus.WithLogger(discardLogger())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b, tr
}

func ackContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// handledN waits until c's handler has been called n times.
func handledN(t *testing.T, ctx context.Context, c *bus.Consumer, n uint64) {
	t.Helper()
	testenv.WaitFor(ctx, t, "the handler to be called", func() bool { return c.Stats().Handled >= n })
}

func TestAckWhenHandlerReturns(t *testing.T) {
	b, tr := newAckBus(t)
	ctx := ackContext(t)
	var r ackRecord
	ackedBeforeReturn := make(chan int, 1)
	c, err := b.Consumer("ack.return", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		ackedBeforeReturn <- len(r.snapshot())
	}))
	if err != nil {
		t.Fatal(err)
	}
	tr.deliver(t, "ack.return", "x", &r)
	handledN(t, ctx, c, 1)
	if n := <-ackedBeforeReturn; n != 0 {
		t.Fatalf("Ack called %d times while the handler ran", n)
	}
	if err := c.Unregister(ctx); err != nil {
		t.Fatal(err)
	}
	r.want(t, "handled message", nil)
}

func TestHoldDelaysAckUntilRelease(t *testing.T) {
	b, tr := newAckBus(t)
	ctx := ackContext(t)
	releases := make(chan func(error), 1)
	next := make(chan struct{})
	_, err := b.Consumer("ack.hold", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		if string(m.Body()) == "next" {
			close(next)
			return
		}
		release := m.Hold()
		m.Hold() // a second Hold changes nothing
		releases <- release
	}))
	if err != nil {
		t.Fatal(err)
	}
	var r, r2 ackRecord
	tr.deliver(t, "ack.hold", "x", &r)
	release := <-releases
	// Messages are handled one at a time: once the next one is in its
	// handler, the bus is done with the first handler's return.
	tr.deliver(t, "ack.hold", "next", &r2)
	select {
	case <-next:
	case <-ctx.Done():
		t.Fatal("the next message was never handled")
	}
	r.wantNone(t, "held message after the handler returned")
	release(nil)
	r.want(t, "released message", nil)
	release(errors.New("again"))
	release(nil)
	r.want(t, "message released three times", nil)
}

func TestHoldReleaseWithErrorFirstWins(t *testing.T) {
	b, tr := newAckBus(t)
	ctx := ackContext(t)
	releases := make(chan func(error), 1)
	c, err := b.Consumer("ack.hold.err", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		releases <- m.Hold()
	}))
	if err != nil {
		t.Fatal(err)
	}
	var r ackRecord
	tr.deliver(t, "ack.hold.err", "x", &r)
	handledN(t, ctx, c, 1)
	release := <-releases
	cause := errors.New("downstream refused")
	var wg sync.WaitGroup
	wg.Go(func() { release(cause) })
	wg.Wait()
	release(nil)
	calls := r.snapshot()
	if len(calls) != 1 || calls[0] != cause {
		t.Fatalf("Ack calls %v, want exactly [%v]", calls, cause)
	}
}

// TestHoldReleasedBeforeReturn: a release from another goroutine before the
// handler returns acknowledges once; the return adds nothing.
func TestHoldReleasedBeforeReturn(t *testing.T) {
	b, tr := newAckBus(t)
	ctx := ackContext(t)
	_, err := b.Consumer("ack.hold.early", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		release := m.Hold()
		done := make(chan struct{})
		go func() { release(errors.New("handed back")); close(done) }()
		<-done
	}))
	if err != nil {
		t.Fatal(err)
	}
	var r, next ackRecord
	tr.deliver(t, "ack.hold.early", "x", &r)
	// Handled counts a message when it is handed to the handler, so wait
	// for the release; then for a second message, which the consumer
	// takes only once the first one's return is behind it.
	testenv.WaitFor(ctx, t, "the early release to acknowledge", func() bool { return len(r.snapshot()) > 0 })
	tr.deliver(t, "ack.hold.early", "y", &next)
	testenv.WaitFor(ctx, t, "the second message to be acknowledged", func() bool { return len(next.snapshot()) > 0 })
	if calls := r.snapshot(); len(calls) != 1 || calls[0] == nil {
		t.Fatalf("Ack calls %v, want one error", calls)
	}
}

func TestHoldWithoutAckIsHarmless(t *testing.T) {
	b, err := bus.New(bus.WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	ctx := ackContext(t)
	got := make(chan struct{})
	if _, err := b.Consumer("ack.none", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		release := m.Hold()
		release(nil)
		release(errors.New("x"))
		_ = m.Reply("ok")
		close(got)
	})); err != nil {
		t.Fatal(err)
	}
	r, err := b.Request(ctx, "ack.none", "x")
	if err != nil {
		t.Fatal(err)
	}
	<-got
	r.Hold()(nil) // a reply has nothing to hold either
}

func TestAckOnPanic(t *testing.T) {
	b, tr := newAckBus(t)
	ctx := ackContext(t)
	releases := make(chan func(error), 1)
	c, err := b.Consumer("ack.panic", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		if string(m.Body()) == "held" {
			releases <- m.Hold()
		}
		panic("boom")
	}))
	if err != nil {
		t.Fatal(err)
	}
	var plain, held ackRecord
	tr.deliver(t, "ack.panic", "plain", &plain)
	tr.deliver(t, "ack.panic", "held", &held)
	handledN(t, ctx, c, 2)
	plain.want(t, "message whose handler panicked", bus.ErrRecipientFailure)
	held.want(t, "held message whose handler panicked", bus.ErrRecipientFailure)
	(<-releases)(nil)
	held.want(t, "held message released after its handler panicked", bus.ErrRecipientFailure)
}

func TestAckOnOverflow(t *testing.T) {
	b, tr := newAckBus(t)
	ctx := ackContext(t)
	c, err := b.Consumer("ack.full", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {}), bus.BufferSize(1))
	if err != nil {
		t.Fatal(err)
	}
	c.Pause()
	var first, second ackRecord
	tr.deliver(t, "ack.full", "1", &first)
	tr.deliver(t, "ack.full", "2", &second)
	second.want(t, "message refused by a full buffer", bus.ErrOverflow)
	first.wantNone(t, "buffered message")
	c.Resume()
	handledN(t, ctx, c, 1)
	first.want(t, "buffered message once handled", nil)
}

func TestAckOnUnregister(t *testing.T) {
	b, tr := newAckBus(t)
	ctx := ackContext(t)
	block := make(chan struct{})
	started := make(chan struct{}, 1)
	c, err := b.Consumer("ack.gone", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		started <- struct{}{}
		<-block
	}))
	if err != nil {
		t.Fatal(err)
	}
	var busy, buffered, late ackRecord
	tr.deliver(t, "ack.gone", "busy", &busy)
	<-started
	tr.deliver(t, "ack.gone", "buffered", &buffered)
	expired, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Unregister(expired); err == nil {
		t.Fatal("Unregister left a message unhandled without an error")
	}
	buffered.want(t, "message abandoned at Unregister's deadline", bus.ErrNoHandlers)
	busy.wantNone(t, "message still in its handler")
	tr.deliverLate("ack.gone", "late", &late)
	late.want(t, "message delivered to an unregistered consumer", bus.ErrNoHandlers)
	close(block)
	testenv.WaitFor(ctx, t, "the busy handler to return", func() bool { return len(busy.snapshot()) > 0 })
	busy.want(t, "message whose handler returned after Unregister", nil)
}

func TestAckOnInterceptorVeto(t *testing.T) {
	veto := errors.New("not today")
	b, tr := newAckBus(t, bus.WithInboundInterceptor(func(ctx context.Context, ev *bus.Event) error {
		if string(ev.Envelope.Body) == "vetoed" {
			return veto
		}
		return nil
	}))
	ctx := ackContext(t)
	c, err := b.Consumer("ack.veto", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		if string(m.Body()) == "vetoed" {
			t.Error("a vetoed message reached the handler")
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	var vetoed, passed ackRecord
	tr.deliver(t, "ack.veto", "vetoed", &vetoed)
	vetoed.want(t, "vetoed message", bus.ErrDelivery)
	tr.deliver(t, "ack.veto", "fine", &passed)
	handledN(t, ctx, c, 1)
	passed.want(t, "message the interceptor let through", nil)
}

func TestAckInlineConsumer(t *testing.T) {
	b, tr := newAckBus(t)
	ctx := ackContext(t)
	releases := make(chan func(error), 1)
	c, err := b.Consumer("ack.inline", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		switch string(m.Body()) {
		case "held":
			releases <- m.Hold()
		case "panic":
			panic("boom")
		}
	}), bus.Inline())
	if err != nil {
		t.Fatal(err)
	}
	var plain, held, panicked ackRecord
	tr.deliver(t, "ack.inline", "plain", &plain)
	// Inline: the handler ran in deliver's goroutine, and so did the Ack.
	plain.want(t, "message handled inline", nil)
	tr.deliver(t, "ack.inline", "held", &held)
	held.wantNone(t, "message held inline")
	(<-releases)(nil)
	held.want(t, "message held inline, released", nil)
	tr.deliver(t, "ack.inline", "panic", &panicked)
	panicked.want(t, "message whose inline handler panicked", bus.ErrRecipientFailure)
	handledN(t, ctx, c, 3)
}

func TestAckReplyDelivery(t *testing.T) {
	b, tr := newAckBus(t)
	var r ackRecord
	tr.reply = &bus.Delivery{Envelope: bus.Envelope{Body: []byte("answer")}, Kind: bus.KindReply, Ack: r.ack}
	m, err := b.Request(ackContext(t), "ack.reply", "question")
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Body()) != "answer" {
		t.Fatalf("reply %q", m.Body())
	}
	r.want(t, "reply returned by Request", nil)
}
