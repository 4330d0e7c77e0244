package bustest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/internal/testenv"
)

// Features are the optional behaviours a transport declares, each with
// what the suite needs to check it. A nil field declares nothing, and the
// suite skips that behaviour's tests; declare only what really works.
type Features struct {
	// AtLeastOnce declares at-least-once delivery: it makes connected
	// transports on which the addresses of o have it. A message sent to
	// such an address is kept until a consumer's handler returns (or
	// releases the message it held with [bus.Message.Hold]), and is
	// delivered again, at once, when it was not handled: refused, vetoed by
	// an inbound interceptor, its handler panicked or released it with an
	// error; or, after o.AckWait, when its consumer's connection is gone.
	AtLeastOnce func(t *testing.T, o DurableOptions) Durable
	// Reconnect declares that the transports survive a restart of what
	// connects them (a broker): requests in flight fail, and once it is
	// back every bus delivers again, to the consumers registered before.
	Reconnect func(t *testing.T, n int) Restartable
}

// DurableOptions say what [Features.AtLeastOnce] makes.
type DurableOptions struct {
	// N is how many connected transports to make, one per bus.
	N int
	// Addresses have at-least-once delivery.
	Addresses []string
	// AckWait is how long a delivered message may stay unacknowledged
	// before it is delivered again. The suite sets it longer than a test
	// lasts unless the test needs the redelivery.
	AckWait time.Duration
}

// Durable is a system with at-least-once addresses.
type Durable struct {
	// Transports are the connected transports, closed by the buses that
	// own them.
	Transports []bus.Transport
	// Held reports how many messages sent to address the transport still
	// keeps: not yet delivered, or delivered and not yet acknowledged.
	Held func(address string) int
}

// Restartable is a system whose broker the suite restarts.
type Restartable struct {
	// Transports are the connected transports, closed by the buses that
	// own them.
	Transports []bus.Transport
	// Stop stops what connects the transports; Start starts it again on
	// the same addresses and returns once it serves.
	Stop, Start func()
	// Disconnected is the error a request fails with while the broker is
	// away (matched with errors.Is); nil means bus.ErrDelivery.
	Disconnected error
}

// featureTests are the tests of the optional behaviours.
var featureTests = []struct {
	name    string
	applies func(Features) bool
	fn      func(t *testing.T, h Harness)
}{
	{"AtLeastOnce/AckWhenHandlerReturns", atLeastOnce, testAckWhenHandlerReturns},
	{"AtLeastOnce/RedeliveryWhenNotHandled", atLeastOnce, testRedeliveryWhenNotHandled},
	{"AtLeastOnce/HoldAcknowledgedOnRelease", atLeastOnce, testHoldAcknowledgedOnRelease},
	{"AtLeastOnce/HoldReleasedWithErrorRedelivered", atLeastOnce, testHoldReleasedWithError},
	{"AtLeastOnce/ConsumerLoss", atLeastOnce, testConsumerLoss},
	{"Reconnect/KeepsDelivering", reconnect, testReconnect},
}

func atLeastOnce(f Features) bool { return f.AtLeastOnce != nil }
func reconnect(f Features) bool   { return f.Reconnect != nil }

// runFeatures runs the tests of every feature h declares.
func runFeatures(t *testing.T, h Harness) {
	for _, tc := range featureTests {
		if tc.applies(h.Features) {
			t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
		}
	}
}

// durable starts a system of o.N buses with at-least-once addresses.
func (h Harness) durable(t *testing.T, o DurableOptions, opts ...bus.Option) (*system, Durable) {
	t.Helper()
	d := h.Features.AtLeastOnce(t, o)
	if len(d.Transports) != o.N || d.Held == nil {
		t.Fatalf("Features.AtLeastOnce made %d transports (want %d) and Held %v", len(d.Transports), o.N, d.Held != nil)
	}
	return h.startOn(t, d.Transports, opts...), d
}

// deliveries counts the deliveries of each body.
type deliveries struct {
	mu sync.Mutex
	n  map[string]int
}

// add counts a delivery of body and returns how many there were.
func (d *deliveries) add(body string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == nil {
		d.n = map[string]int{}
	}
	d.n[body]++
	return d.n[body]
}

func (d *deliveries) of(body string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[body]
}

func (d *deliveries) bodies() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.n)
}

// testAckWhenHandlerReturns: a plain consumer acknowledges every message
// when its handler returns: the transport ends holding none, and none is
// delivered twice.
func testAckWhenHandlerReturns(t *testing.T, h Harness) {
	const address, n = "durable.plain", 200
	s, d := h.durable(t, DurableOptions{N: 1, Addresses: []string{address}, AckWait: 5 * time.Second})
	ctx := testContext(t)
	var seen deliveries
	var notAtLeastOnce deliveries
	s.consumer(s.buses[0], address, func(ctx context.Context, m *bus.Message) {
		if !m.AtLeastOnce() {
			notAtLeastOnce.add(string(m.Body()))
		}
		seen.add(string(m.Body()))
	})
	for i := range n {
		if err := s.buses[0].Send(ctx, address, fmt.Sprintf("job-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t.Context(), t, "every message to be handled", func() bool { return seen.bodies() == n })
	testenv.WaitFor(t.Context(), t, "the transport to hold no message (every one acknowledged)", func() bool { return d.Held(address) == 0 })
	if k := notAtLeastOnce.bodies(); k > 0 {
		t.Errorf("%d messages of an at-least-once address say Message.AtLeastOnce false", k)
	}
	for i := range n {
		if k := seen.of(fmt.Sprintf("job-%d", i)); k != 1 {
			t.Errorf("job-%d delivered %d times", i, k)
		}
	}
}

// testRedeliveryWhenNotHandled: a message whose handler panicked, and one
// an inbound interceptor refused, are handed back and delivered again at
// once (the ack wait is longer than the test); once handled, the transport
// holds none.
func testRedeliveryWhenNotHandled(t *testing.T, h Harness) {
	const address = "durable.flaky"
	var vetoed deliveries
	veto := bus.WithInboundInterceptor(func(ctx context.Context, ev *bus.Event) error {
		if string(ev.Envelope.Body) == "refuse" && vetoed.add("refuse") == 1 {
			return errors.New("not the first time")
		}
		return nil
	})
	s, d := h.durable(t, DurableOptions{N: 1, Addresses: []string{address}, AckWait: 5 * time.Minute}, veto)
	ctx := testContext(t)
	var handled deliveries
	s.consumer(s.buses[0], address, func(ctx context.Context, m *bus.Message) {
		if body := string(m.Body()); handled.add(body) == 1 && body == "panic" {
			panic("the first delivery fails")
		}
	})
	for _, body := range []string{"panic", "refuse", "fine"} {
		if err := s.buses[0].Send(ctx, address, body); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t.Context(), t, "the transport to hold no message", func() bool { return d.Held(address) == 0 })
	for body, want := range map[string]int{"panic": 2, "refuse": 1, "fine": 1} {
		if got := handled.of(body); got != want {
			t.Errorf("%s: handled %d times, want %d", body, got, want)
		}
	}
	if got := vetoed.of("refuse"); got != 2 {
		t.Errorf("refuse: seen by the interceptor %d times, want 2 (refused, then delivered again)", got)
	}
}

// testHoldAcknowledgedOnRelease: a message its handler holds stays
// unacknowledged after the handler returns, while a message on another
// address handled after it is acknowledged, until it is released.
func testHoldAcknowledgedOnRelease(t *testing.T, h Harness) {
	const held, plain = "durable.held", "durable.plain"
	s, d := h.durable(t, DurableOptions{N: 1, Addresses: []string{held, plain}, AckWait: 5 * time.Minute})
	ctx := testContext(t)
	releases := make(chan func(error), 1)
	var handled deliveries
	c := s.consumer(s.buses[0], held, func(ctx context.Context, m *bus.Message) {
		releases <- m.Hold()
		handled.add(string(m.Body()))
	})
	s.consumer(s.buses[0], plain, func(ctx context.Context, m *bus.Message) { handled.add(string(m.Body())) })
	if err := s.buses[0].Send(ctx, held, "held"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t.Context(), t, "the held message's handler to return", func() bool { return c.Stats().Handled == 1 })
	if err := s.buses[0].Send(ctx, plain, "plain"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t.Context(), t, "the plain message to be acknowledged", func() bool { return d.Held(plain) == 0 })
	if n := d.Held(held); n != 1 {
		t.Fatalf("the transport holds %d held messages before the release, want 1", n)
	}
	(<-releases)(nil)
	testenv.WaitFor(t.Context(), t, "the released message to be acknowledged", func() bool { return d.Held(held) == 0 })
	if handled.of("held") != 1 || handled.of("plain") != 1 {
		t.Fatalf("handled held %d times, plain %d times; want each once", handled.of("held"), handled.of("plain"))
	}
}

// testHoldReleasedWithError: a held message released with an error (a
// negative acknowledgement) is delivered again at once.
func testHoldReleasedWithError(t *testing.T, h Harness) {
	const address = "durable.nack"
	s, d := h.durable(t, DurableOptions{N: 1, Addresses: []string{address}, AckWait: 5 * time.Minute})
	ctx := testContext(t)
	var handled deliveries
	s.consumer(s.buses[0], address, func(ctx context.Context, m *bus.Message) {
		release := m.Hold()
		if handled.add(string(m.Body())) == 1 {
			go release(errors.New("not now"))
			return
		}
		release(nil)
	})
	if err := s.buses[0].Send(ctx, address, "job"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t.Context(), t, "the message to be handled again and acknowledged", func() bool { return handled.of("job") == 2 && d.Held(address) == 0 })
}

// testConsumerLoss: a consumer whose connection goes away with messages
// unacknowledged (handled but not yet acknowledged, and buffered) leaves
// them to another consumer: none is lost.
func testConsumerLoss(t *testing.T, h Harness) {
	const address, n = "durable.work", 200
	s, d := h.durable(t, DurableOptions{N: 3, Addresses: []string{address}, AckWait: 500 * time.Millisecond})
	ctx := testContext(t)
	sender, first, second := s.buses[0], s.buses[1], s.buses[2]
	for i := range n {
		if err := sender.Send(ctx, address, fmt.Sprintf("job-%d", i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	var seen deliveries
	var handledFirst deliveries
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	s.consumer(first, address, func(ctx context.Context, m *bus.Message) {
		if handledFirst.add("") > 50 {
			<-stuck // the consumer hangs: this message and those buffered are never acknowledged
			return
		}
		seen.add(string(m.Body()))
	})
	testenv.WaitFor(t.Context(), t, "the first consumer to take part of the stream", func() bool { return handledFirst.of("") > 50 })
	// The first consumer's connection goes away (as when its process dies).
	_ = d.Transports[1].Close()
	s.consumer(second, address, func(ctx context.Context, m *bus.Message) { seen.add(string(m.Body())) })
	testenv.WaitFor(t.Context(), t, "every message to be consumed", func() bool { return seen.bodies() == n })
	var lost []string
	for i := range n {
		if seen.of(fmt.Sprintf("job-%d", i)) == 0 {
			lost = append(lost, fmt.Sprintf("job-%d", i))
		}
	}
	if len(lost) > 0 {
		t.Fatalf("lost: %s", strings.Join(lost, ", "))
	}
}

// testReconnect: the broker goes away under two buses and comes back. A
// request in flight fails at once (its timeout is an hour), requests fail
// while the broker is away, and once it is back the consumers registered
// before get requests, sends and publishes again.
func testReconnect(t *testing.T, h Harness) {
	r := h.Features.Reconnect(t, 2)
	if len(r.Transports) != 2 || r.Stop == nil || r.Start == nil {
		t.Fatalf("Features.Reconnect made %d transports (want 2), Stop %v, Start %v", len(r.Transports), r.Stop != nil, r.Start != nil)
	}
	disconnected := r.Disconnected
	if disconnected == nil {
		disconnected = bus.ErrDelivery
	}
	s := h.startOn(t, r.Transports)
	consumer, requester := s.buses[0], s.buses[1]
	arrived := make(chan struct{}, 16)
	release := make(chan struct{})
	var sent deliveries
	s.consumer(consumer, "reconnect.svc", func(ctx context.Context, m *bus.Message) {
		if !m.ReplyExpected() {
			sent.add(string(m.Body()))
			return
		}
		arrived <- struct{}{}
		if string(m.Body()) == "wait" {
			<-release
		}
		_ = m.Reply("ok")
	}, bus.BufferSize(100))
	var published deliveries
	s.consumer(consumer, "reconnect.news", func(ctx context.Context, m *bus.Message) { published.add(string(m.Body())) })
	ctx := testContext(t)
	done := make(chan error, 1)
	go func() {
		_, err := requester.Request(ctx, "reconnect.svc", "wait", bus.Timeout(time.Hour))
		done <- err
	}()
	<-arrived
	r.Stop()
	select {
	case err := <-done:
		if !errors.Is(err, disconnected) || !errors.Is(err, bus.ErrDelivery) {
			t.Fatalf("request in flight when the broker went away: %v, want %v and a delivery failure", err, disconnected)
		}
	case <-ctx.Done():
		t.Fatal("a request in flight hung when the broker went away")
	}
	close(release) // the consumer handles one message at a time
	if _, err := requester.Request(ctx, "reconnect.svc", "x", bus.Timeout(time.Hour)); !errors.Is(err, disconnected) {
		t.Fatalf("request while the broker is away: %v, want %v", err, disconnected)
	}
	r.Start()
	// Reconnecting takes the transports a while: until then requests fail
	// with the disconnection, never otherwise.
	testenv.WaitFor(t.Context(), t, "a request to succeed after the broker came back", func() bool {
		_, err := requester.Request(ctx, "reconnect.svc", "x", bus.Timeout(2*time.Second))
		if err != nil && !errors.Is(err, bus.ErrDelivery) && !errors.Is(err, bus.ErrNoHandlers) && !errors.Is(err, bus.ErrTimeout) {
			t.Fatalf("request after the broker came back: %v", err)
		}
		return err == nil
	})
	// The subscriptions are back: sends and publishes arrive too.
	for i := range 10 {
		if err := requester.Send(ctx, "reconnect.svc", fmt.Sprintf("sent-%d", i)); err != nil {
			t.Fatal(err)
		}
		if err := requester.Publish(ctx, "reconnect.news", fmt.Sprintf("news-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t.Context(), t, "every send and publish after the restart", func() bool { return sent.bodies() == 10 && published.bodies() == 10 })
}
