package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
)

// durableFixture is a node keeping one durable address, a bus on it, and a
// JetStream view of the durable stream for the test's own checks.
type durableFixture struct {
	node    *cluster.Node
	bus     *bus.Bus
	stream  jetstream.Stream
	js      jetstream.JetStream
	address string
}

func newDurableFixture(t *testing.T, ctx context.Context, address string, ackWait time.Duration, opts ...bus.Option) *durableFixture {
	t.Helper()
	node := startNode(t, cluster.Options{Name: "ack", StoreDir: t.TempDir(), Durable: []string{address}, AckWait: ackWait})
	tr, err := node.NewTransport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.New(append([]bus.Option{bus.WithTransport(tr), bus.WithLogger(quietLogger())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	nc, err := nats.Connect("", nats.InProcessServer(node.Server()), nats.Name("durable-ack-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, cluster.DurableStream)
	if err != nil {
		t.Fatal(err)
	}
	return &durableFixture{node: node, bus: b, stream: s, js: js, address: address}
}

// stored is how many messages the durable stream still holds (work-queue
// retention: an acknowledged message is removed).
func (f *durableFixture) stored(t *testing.T, _ context.Context) uint64 {
	t.Helper()
	// Not the test's context: when it ends, waitUntil says what it waited for.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := f.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// send sends body to the durable address and returns its stream sequence.
func (f *durableFixture) send(t *testing.T, ctx context.Context, body string) uint64 {
	t.Helper()
	if err := f.bus.Send(ctx, f.address, body); err != nil {
		t.Fatal(err)
	}
	info, err := f.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

func (f *durableFixture) holds(t *testing.T, _ context.Context, seq uint64) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := f.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

func (f *durableFixture) consumerInfo(t *testing.T, ctx context.Context) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := f.js.Consumer(ctx, cluster.DurableStream, cluster.DurableConsumerName(f.address))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestDurablePlainConsumerAcknowledges: a consumer registered with no
// wrapper acknowledges every durable message when its handler returns:
// the stream (work-queue retention) ends empty, which only acknowledgements
// do, and nothing is delivered twice. The ack wait is short enough that a
// missing acknowledgement would also show as redeliveries, and long enough
// that a loaded machine does not redeliver a message still being handled.
func TestDurablePlainConsumerAcknowledges(t *testing.T) {
	const address, n = "jobs.plain", 200
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newDurableFixture(t, ctx, address, 5*time.Second)
	var mu sync.Mutex
	seen := map[string]int{} // message ID -> deliveries
	var notFirst []string
	if _, err := f.bus.Consumer(address, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		mu.Lock()
		defer mu.Unlock()
		seen[m.Header(cluster.HeaderMessageID)]++
		if d := m.Header(cluster.HeaderDelivery); d != "1" {
			notFirst = append(notFirst, string(m.Body())+" delivery "+d)
		}
	})); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		f.send(t, ctx, fmt.Sprintf("job-%d", i))
	}
	waitUntil(t, ctx, "every message to be handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == n })
	waitUntil(t, ctx, "the stream to empty (every message acknowledged)", func() bool { return f.stored(t, ctx) == 0 })
	info := f.consumerInfo(t, ctx)
	if info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Fatalf("consumer: %d awaiting ack, %d redelivered; want none", info.NumAckPending, info.NumRedelivered)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, k := range seen {
		if k != 1 {
			t.Errorf("message %s delivered %d times", id, k)
		}
	}
	if len(notFirst) > 0 {
		t.Fatalf("redelivered: %s", strings.Join(notFirst, ", "))
	}
}

// TestDurableRedeliversWhenNotHandled: a message whose handler panicked,
// and one an inbound interceptor refused, are handed back at once (not
// after the ack wait, which is longer than the test) and delivered again
// with Cloister-Delivery 2; once handled, the stream is empty.
func TestDurableRedeliversWhenNotHandled(t *testing.T) {
	const address = "jobs.flaky"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	veto := bus.WithInboundInterceptor(func(ctx context.Context, ev *bus.Event) error {
		if string(ev.Envelope.Body) == "refuse" && ev.Envelope.Headers[cluster.HeaderDelivery] == "1" {
			return errors.New("not the first time")
		}
		return nil
	})
	f := newDurableFixture(t, ctx, address, 5*time.Minute, veto)
	var mu sync.Mutex
	deliveries := map[string][]string{} // body -> the Cloister-Delivery of each delivery
	if _, err := f.bus.Consumer(address, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		body, d := string(m.Body()), m.Header(cluster.HeaderDelivery)
		mu.Lock()
		deliveries[body] = append(deliveries[body], d)
		mu.Unlock()
		if body == "panic" && d == "1" {
			panic("the first delivery fails")
		}
	})); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"panic", "refuse", "fine"} {
		f.send(t, ctx, body)
	}
	waitUntil(t, ctx, "the stream to empty", func() bool { return f.stored(t, ctx) == 0 })
	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{"panic": "1 2", "refuse": "2", "fine": "1"}
	for body, w := range want {
		if got := strings.Join(deliveries[body], " "); got != w {
			t.Errorf("%s: handled at deliveries [%s], want [%s]", body, got, w)
		}
	}
}

// TestDurableHeldMessageAcknowledgedOnRelease: a handler that holds its
// message leaves it unacknowledged after it returns, until it releases it.
// A second message, acknowledged when its handler returns, shows that the
// held one's acknowledgement would have arrived by then (one connection
// acknowledges both, in order).
func TestDurableHeldMessageAcknowledgedOnRelease(t *testing.T) {
	const address = "jobs.held"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newDurableFixture(t, ctx, address, 5*time.Minute)
	releases := make(chan func(error), 1)
	var mu sync.Mutex
	var handled []string
	c, err := f.bus.Consumer(address, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		if string(m.Body()) == "held" {
			releases <- m.Hold()
		}
		mu.Lock()
		handled = append(handled, string(m.Body())+"/"+m.Header(cluster.HeaderDelivery))
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	held := f.send(t, ctx, "held")
	waitUntil(t, ctx, "the held message's handler to return", func() bool { return c.Stats().Handled == 1 })
	plain := f.send(t, ctx, "plain")
	waitUntil(t, ctx, "the plain message to be acknowledged", func() bool { return !f.holds(t, ctx, plain) })
	if !f.holds(t, ctx, held) {
		t.Fatal("the held message was acknowledged before it was released")
	}
	if info := f.consumerInfo(t, ctx); info.NumAckPending != 1 {
		t.Fatalf("%d messages await an ack, want the held one", info.NumAckPending)
	}
	(<-releases)(nil)
	waitUntil(t, ctx, "the released message to be acknowledged", func() bool { return f.stored(t, ctx) == 0 })
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(handled, " "); got != "held/1 plain/1" {
		t.Fatalf("handled %s, want each message once", got)
	}
}
