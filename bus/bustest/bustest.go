// Package bustest is the conformance suite every bus transport passes, in
// the spirit of Watermill's universal pub/sub tests: the same behaviours,
// checked through the public bus API, whatever moves the bytes.
//
// A transport's test calls [Run] with a [Harness] that makes connected
// transports, one per node:
//
//	func TestConformance(t *testing.T) {
//		bustest.Run(t, bustest.Harness{
//			Transports: func(t *testing.T, n int) []bus.Transport { ... },
//		})
//	}
//
// Behaviours not every transport has are features: a transport declares
// those it has in [Harness.Features] (at-least-once delivery with
// acknowledgement, redelivery and [bus.Message.Hold]; reconnection after
// its broker restarts), with what the suite needs to check them, and the
// suite runs their tests too.
package bustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/internal/syncbuf"
	"github.com/cloister-dev/cloister/internal/testenv"
)

// Harness tells the suite how to build a system under test.
type Harness struct {
	// Transports returns n transports, one per node, connected to each
	// other. They are closed by the buses that own them; the harness
	// should register any other cleanup with t.Cleanup.
	Transports func(t *testing.T, n int) []bus.Transport
	// Settle, if set, waits until the subscriptions made so far (and
	// removed so far) are visible from every node. Transports whose
	// interest propagates asynchronously (NATS routes) need it.
	Settle func(t *testing.T)
	// Features declares the optional behaviours of the transport, whose
	// tests run only when declared.
	Features Features
}

// system is the buses of one test.
type system struct {
	t     *testing.T
	h     Harness
	buses []*bus.Bus
	logs  *logBuffer
}

// logBuffer collects log records for checks on what operators see.
type logBuffer = syncbuf.Buffer

func (h Harness) start(t *testing.T, n int, opts ...bus.Option) *system {
	t.Helper()
	return h.startOn(t, h.Transports(t, n), opts...)
}

// startOn starts a bus on each of transports.
func (h Harness) startOn(t *testing.T, transports []bus.Transport, opts ...bus.Option) *system {
	t.Helper()
	logs := &logBuffer{}
	s := &system{t: t, h: h, logs: logs}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, tr := range transports {
		b, err := bus.New(append([]bus.Option{bus.WithTransport(tr), bus.WithLogger(logger)}, opts...)...)
		if err != nil {
			t.Fatalf("bus.New: %v", err)
		}
		s.buses = append(s.buses, b)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = b.Close(ctx)
		})
	}
	return s
}

func (s *system) settle() {
	if s.h.Settle != nil {
		s.h.Settle(s.t)
	}
}

func (s *system) consumer(b *bus.Bus, address string, h bus.HandlerFunc, opts ...bus.ConsumerOption) *bus.Consumer {
	s.t.Helper()
	c, err := b.Consumer(address, h, opts...)
	if err != nil {
		s.t.Fatalf("Consumer(%q): %v", address, err)
	}
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func echo(ctx context.Context, m *bus.Message) {
	_ = m.Reply(m.Body(), bus.WithHeaders(userHeaders(m.Headers())))
}

func userHeaders(h bus.Headers) bus.Headers {
	out := bus.Headers{}
	for k, v := range h {
		if !strings.HasPrefix(k, bus.ReservedHeaderPrefix) {
			out[k] = v
		}
	}
	return out
}

// Run runs the conformance suite: the behaviours every transport has, then
// those of the [Features] h declares.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"RequestReply", testRequestReply},
		{"RequestAcrossNodes", testRequestAcrossNodes},
		{"SendReachesOneConsumer", testSendReachesOne},
		{"SendRoundRobin", testSendRoundRobin},
		{"PublishReachesEveryConsumer", testPublishReachesAll},
		{"PerSenderOrder", testPerSenderOrder},
		{"ReplyToReply", testReplyToReply},
		{"NoHandlers", testNoHandlers},
		{"Timeout", testTimeout},
		{"RecipientFailure", testRecipientFailure},
		{"HandlerPanic", testHandlerPanic},
		{"Codecs", testCodecs},
		{"UndecodableBody", testUndecodableBody},
		{"InvalidInput", testInvalidInput},
		{"Headers", testHeaders},
		{"Overflow", testOverflow},
		{"PauseResume", testPauseResume},
		{"InlineConsumer", testInlineConsumer},
		{"Unregister", testUnregister},
		{"UnregisterDrains", testUnregisterDrains},
		{"LocalConsumer", testLocalConsumer},
		{"LocalOnlyDelivery", testLocalOnlyDelivery},
		{"InterceptorVetoOutbound", testInterceptorVetoOutbound},
		{"InterceptorVetoInbound", testInterceptorVetoInbound},
		{"InterceptorHeaders", testInterceptorHeaders},
		{"Cancellation", testCancellation},
		{"ConcurrentRequests", testConcurrentRequests},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
	runFeatures(t, h)
}

func testRequestReply(t *testing.T, h Harness) {
	s := h.start(t, 1)
	b := s.buses[0]
	s.consumer(b, "svc.echo", echo)
	s.settle()
	ctx := testContext(t)
	for _, body := range [][]byte{[]byte("hello"), {}, bytes.Repeat([]byte{0, 1, 0xff}, 20000)} {
		r, err := b.Request(ctx, "svc.echo", body)
		if err != nil {
			t.Fatalf("Request: %v", err)
		}
		if !bytes.Equal(r.Body(), body) {
			t.Fatalf("reply body: got %d bytes, want %d", len(r.Body()), len(body))
		}
		if r.Kind() != bus.KindReply || r.ReplyExpected() {
			t.Fatalf("reply: kind %v, reply expected %v", r.Kind(), r.ReplyExpected())
		}
	}
}

func testRequestAcrossNodes(t *testing.T, h Harness) {
	s := h.start(t, 2)
	s.consumer(s.buses[0], "svc.remote", func(ctx context.Context, m *bus.Message) {
		_ = m.Reply("from node 0")
	})
	s.settle()
	r, err := s.buses[1].Request(testContext(t), "svc.remote", "hi")
	if err != nil {
		t.Fatalf("Request across nodes: %v", err)
	}
	var got string
	if err := r.Decode(&got); err != nil || got != "from node 0" {
		t.Fatalf("reply %q, %v", got, err)
	}
}

func testSendReachesOne(t *testing.T, h Harness) {
	s := h.start(t, 2)
	var total atomic.Int64
	seen := make([]map[string]int, 3)
	var mu sync.Mutex
	for i := range 3 {
		seen[i] = map[string]int{}
		s.consumer(s.buses[i%2], "work.queue", func(ctx context.Context, m *bus.Message) {
			mu.Lock()
			seen[i][string(m.Body())]++
			mu.Unlock()
			total.Add(1)
		})
	}
	s.settle()
	ctx := testContext(t)
	const n = 300
	for i := range n {
		if err := s.buses[i%2].Send(ctx, "work.queue", strconv.Itoa(i)); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	testenv.WaitFor(t.Context(), t, "all sends to arrive", func() bool { return total.Load() >= n })
	time.Sleep(50 * time.Millisecond) // let any duplicate show itself
	if got := total.Load(); got != n {
		t.Fatalf("%d deliveries for %d sends: a send must reach exactly one consumer", got, n)
	}
	mu.Lock()
	defer mu.Unlock()
	union := map[string]int{}
	for i := range seen {
		for k, v := range seen[i] {
			union[k] += v
		}
	}
	for i := range n {
		if union[strconv.Itoa(i)] != 1 {
			t.Fatalf("message %d delivered %d times", i, union[strconv.Itoa(i)])
		}
	}
}

func testSendRoundRobin(t *testing.T, h Harness) {
	s := h.start(t, 1)
	counts := make([]atomic.Int64, 3)
	for i := range counts {
		s.consumer(s.buses[0], "work.rr", func(ctx context.Context, m *bus.Message) { counts[i].Add(1) })
	}
	s.settle()
	ctx := testContext(t)
	const n = 300
	for range n {
		if err := s.buses[0].Send(ctx, "work.rr", "x"); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t.Context(), t, "sends", func() bool { return counts[0].Load()+counts[1].Load()+counts[2].Load() == n })
	for i := range counts {
		// Round-robin gives 100 each; a random choice (NATS queue
		// groups) gives each a share too. None may be starved.
		if counts[i].Load() == 0 {
			t.Fatalf("consumer %d got none of %d sends: counts %d %d %d", i, n, counts[0].Load(), counts[1].Load(), counts[2].Load())
		}
	}
}

func testPublishReachesAll(t *testing.T, h Harness) {
	s := h.start(t, 2)
	counts := make([]atomic.Int64, 4)
	for i := range counts {
		s.consumer(s.buses[i%2], "news.all", func(ctx context.Context, m *bus.Message) {
			if m.Kind() != bus.KindPublish {
				t.Errorf("kind %v, want publish", m.Kind())
			}
			counts[i].Add(1)
		})
	}
	s.settle()
	ctx := testContext(t)
	const n = 20
	for range n {
		if err := s.buses[1].Publish(ctx, "news.all", "x"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range counts {
		testenv.WaitFor(t.Context(), t, fmt.Sprintf("consumer %d to get every publish", i), func() bool { return counts[i].Load() >= n })
	}
	time.Sleep(50 * time.Millisecond)
	for i := range counts {
		if got := counts[i].Load(); got != n {
			t.Fatalf("consumer %d got %d publishes, want %d", i, got, n)
		}
	}
	// Publishing to an address nobody consumes is not an error.
	if err := s.buses[0].Publish(ctx, "news.nobody", "x"); err != nil {
		t.Fatalf("Publish without consumers: %v", err)
	}
	if err := s.buses[0].Send(ctx, "news.nobody", "x"); err != nil {
		t.Fatalf("Send without consumers: %v", err)
	}
}

func testPerSenderOrder(t *testing.T, h Harness) {
	s := h.start(t, 2)
	var got intStream
	s.consumer(s.buses[0], "ordered.stream", func(ctx context.Context, m *bus.Message) { got.add(t, m) })
	s.settle()
	got.sendInOrder(t, s.buses[1], "ordered.stream", 500)
}

// intStream collects the numbers a consumer receives.
type intStream struct {
	mu  sync.Mutex
	got []int
}

// add records the number m carries.
func (s *intStream) add(t *testing.T, m *bus.Message) {
	var v int
	if err := m.Decode(&v); err != nil {
		t.Errorf("decode: %v", err)
	}
	s.mu.Lock()
	s.got = append(s.got, v)
	s.mu.Unlock()
}

func (s *intStream) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// sendInOrder sends the next n numbers to address from b and checks that
// the consumer got every number so far, in order.
func (s *intStream) sendInOrder(t *testing.T, b *bus.Bus, address string, n int) {
	t.Helper()
	ctx := testContext(t)
	from := s.len()
	for i := range n {
		if err := b.Send(ctx, address, from+i); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t.Context(), t, "the stream", func() bool { return s.len() == from+n })
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, v := range s.got {
		if v != i {
			t.Fatalf("message %d handled in position %d: order from one sender to one consumer must hold", v, i)
		}
	}
}

func testReplyToReply(t *testing.T, h Harness) {
	s := h.start(t, 2)
	s.consumer(s.buses[0], "chat.start", func(ctx context.Context, m *bus.Message) {
		answer, err := m.ReplyAndRequest(ctx, "what is your name?", bus.Timeout(10*time.Second))
		if err != nil {
			t.Errorf("ReplyAndRequest: %v", err)
			return
		}
		if err := answer.Reply("hello, " + string(answer.Body())); err != nil {
			t.Errorf("final reply: %v", err)
		}
	})
	s.settle()
	ctx := testContext(t)
	q, err := s.buses[1].Request(ctx, "chat.start", "hi")
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	if !q.ReplyExpected() || string(q.Body()) != "what is your name?" {
		t.Fatalf("first reply %q, reply expected %v", q.Body(), q.ReplyExpected())
	}
	final, err := q.ReplyAndRequest(ctx, "ada")
	if err != nil {
		t.Fatalf("reply to reply: %v", err)
	}
	if string(final.Body()) != "hello, ada" {
		t.Fatalf("conversation ended with %q", final.Body())
	}
	if err := final.Reply("more"); err == nil {
		t.Fatal("replying to a reply that expects none succeeded")
	}
}

func testNoHandlers(t *testing.T, h Harness) {
	s := h.start(t, 2)
	ctx := testContext(t)
	// A long timeout: the failure must come at once, not after it. (If
	// it came after the timeout, the suite would hang and fail.)
	_, err := s.buses[0].Request(ctx, "nobody.home", "x", bus.Timeout(time.Hour))
	if !errors.Is(err, bus.ErrNoHandlers) || errors.Is(err, bus.ErrTimeout) {
		t.Fatalf("Request to an address without consumers: %v, want ErrNoHandlers", err)
	}
	var re *bus.ReplyError
	if !errors.As(err, &re) || re.Failure != bus.FailureNoHandlers || re.Address != "nobody.home" {
		t.Fatalf("error %#v, want a ReplyError of kind no-handlers naming the address", err)
	}
}

func testTimeout(t *testing.T, h Harness) {
	s := h.start(t, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	s.consumer(s.buses[0], "slow.svc", func(ctx context.Context, m *bus.Message) { <-release })
	s.settle()
	_, err := s.buses[0].Request(testContext(t), "slow.svc", "x", bus.Timeout(50*time.Millisecond))
	if !errors.Is(err, bus.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	for _, other := range []error{bus.ErrNoHandlers, bus.ErrRecipientFailure, bus.ErrDelivery} {
		if errors.Is(err, other) {
			t.Fatalf("timeout also matches %v", other)
		}
	}
}

func testRecipientFailure(t *testing.T, h Harness) {
	s := h.start(t, 2)
	s.consumer(s.buses[0], "failing.svc", func(ctx context.Context, m *bus.Message) {
		if err := m.Fail(42, "no such meter: m-7"); err != nil {
			t.Errorf("Fail: %v", err)
		}
		if err := m.Reply("late"); err == nil {
			t.Error("a second answer to one request was accepted")
		}
	})
	s.settle()
	_, err := s.buses[1].Request(testContext(t), "failing.svc", "x")
	var re *bus.ReplyError
	if !errors.Is(err, bus.ErrRecipientFailure) || !errors.As(err, &re) {
		t.Fatalf("got %v, want a recipient failure", err)
	}
	if re.Code != 42 || re.Message != "no such meter: m-7" || re.Address != "failing.svc" {
		t.Fatalf("failure code %d message %q address %q", re.Code, re.Message, re.Address)
	}
}

func testHandlerPanic(t *testing.T, h Harness) {
	s := h.start(t, 1)
	s.consumer(s.buses[0], "panicky.svc", func(ctx context.Context, m *bus.Message) { panic("boom") })
	s.settle()
	_, err := s.buses[0].Request(testContext(t), "panicky.svc", "x")
	if !errors.Is(err, bus.ErrRecipientFailure) || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("got %v, want a recipient failure mentioning the panic", err)
	}
	// The consumer survives its handler's panic.
	_, err = s.buses[0].Request(testContext(t), "panicky.svc", "x")
	if !errors.Is(err, bus.ErrRecipientFailure) {
		t.Fatalf("second request: %v", err)
	}
}

type point struct {
	X, Y int
	Name string
}

// upperCodec is a named codec registered by the test.
type upperCodec struct{}

func (upperCodec) Name() string { return "upper" }
func (upperCodec) Encode(v any) ([]byte, error) {
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("upper encodes strings, not %T", v)
	}
	return []byte(strings.ToUpper(s)), nil
}
func (upperCodec) Decode(data []byte, v any) error {
	p, ok := v.(*string)
	if !ok {
		return fmt.Errorf("upper decodes into *string, not %T", v)
	}
	*p = strings.ToLower(string(data))
	return nil
}

func testCodecs(t *testing.T, h Harness) {
	s := h.start(t, 2, bus.WithCodec(upperCodec{}))
	s.consumer(s.buses[0], "codec.json", func(ctx context.Context, m *bus.Message) {
		var p point
		if err := m.Decode(&p); err != nil {
			_ = m.Fail(1, err.Error())
			return
		}
		p.X, p.Y = p.Y, p.X
		_ = m.Reply(p)
	})
	s.consumer(s.buses[0], "codec.custom", func(ctx context.Context, m *bus.Message) {
		var v string
		if err := m.Decode(&v); err != nil {
			_ = m.Fail(1, err.Error())
			return
		}
		if string(m.Body()) != "SHOUT" {
			_ = m.Fail(2, "wire body "+string(m.Body()))
			return
		}
		_ = m.Reply(v+"!", bus.CodecName("upper"))
	})
	s.settle()
	ctx := testContext(t)
	r, err := s.buses[1].Request(ctx, "codec.json", point{1, 2, "p"})
	if err != nil {
		t.Fatal(err)
	}
	var p point
	if err := r.Decode(&p); err != nil || p != (point{2, 1, "p"}) {
		t.Fatalf("json round trip: %+v, %v", p, err)
	}
	r, err = s.buses[1].Request(ctx, "codec.custom", "shout", bus.CodecName("upper"))
	if err != nil {
		t.Fatal(err)
	}
	var v string
	if err := r.Decode(&v); err != nil || v != "shout!" {
		t.Fatalf("custom codec round trip: %q, %v", v, err)
	}
	_, err = s.buses[1].Request(ctx, "codec.json", "x", bus.CodecName("no-such-codec"))
	if !errors.Is(err, bus.ErrDelivery) || !strings.Contains(err.Error(), "no-such-codec") {
		t.Fatalf("unknown codec: %v", err)
	}
	if _, err := bus.New(bus.WithCodec(upperCodec{}), bus.WithCodec(upperCodec{})); err == nil {
		t.Fatal("a codec name registered twice was accepted")
	}
}

func testUndecodableBody(t *testing.T, h Harness) {
	s := h.start(t, 1)
	decodeErr := make(chan error, 1)
	s.consumer(s.buses[0], "codec.strict", func(ctx context.Context, m *bus.Message) {
		var p point
		decodeErr <- m.Decode(&p)
		_ = m.Reply("{not json", bus.CodecName(bus.CodecJSON)) // a string is JSON-encoded: valid
	})
	s.settle()
	if err := s.buses[0].Send(testContext(t), "codec.strict", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	err := <-decodeErr
	if !errors.Is(err, bus.ErrDelivery) || !strings.Contains(err.Error(), "undecodable body") {
		t.Fatalf("decoding a bad body: %v", err)
	}
}

func testInvalidInput(t *testing.T, h Harness) {
	s := h.start(t, 1)
	b := s.buses[0]
	ctx := testContext(t)
	for _, addr := range []string{"", ".a", "a.", "a..b", "a b", "a.*", "a.>", "$SYS.x", strings.Repeat("a", 256), "naïve"} {
		if err := b.Send(ctx, addr, "x"); !errors.Is(err, bus.ErrDelivery) {
			t.Errorf("Send to %q: %v, want an error", addr, err)
		}
		var ae *bus.AddressError
		if _, err := b.Consumer(addr, bus.HandlerFunc(echo)); !errors.As(err, &ae) {
			t.Errorf("Consumer at %q: %v, want an AddressError", addr, err)
		}
	}
	for _, addr := range []string{"a", "a.b.c", "meter-1.readings", "tenant:7/orders.v2", "A_Z.0_9"} {
		if err := bus.ValidateAddress(addr); err != nil {
			t.Errorf("valid address %q refused: %v", addr, err)
		}
	}
	bad := []bus.DeliveryOption{
		bus.Header("", "x"),
		bus.Header("a b", "x"),
		bus.Header("k", "line\nbreak"),
		bus.Header("Cloister-Codec", "json"),
		bus.Header("cloister-anything", "x"),
		bus.Timeout(-time.Second),
	}
	for i, opt := range bad {
		if err := b.Send(ctx, "ok.address", "x", opt); !errors.Is(err, bus.ErrDelivery) {
			t.Errorf("bad option %d accepted: %v", i, err)
		}
	}
	if _, err := b.Consumer("ok.address", nil); err == nil {
		t.Error("nil handler accepted")
	}
	if _, err := b.Consumer("ok.address", bus.HandlerFunc(echo), bus.BufferSize(0)); err == nil {
		t.Error("zero buffer accepted")
	}
}

func testHeaders(t *testing.T, h Harness) {
	s := h.start(t, 2)
	s.consumer(s.buses[0], "hdr.echo", echo)
	s.settle()
	in := bus.Headers{"trace-id": "abc-123", "Tenant": "t7", "empty": "", "spaces": "a value with spaces\tand tab"}
	r, err := s.buses[1].Request(testContext(t), "hdr.echo", "x", bus.WithHeaders(in), bus.Header("extra", "1"))
	if err != nil {
		t.Fatal(err)
	}
	in["extra"] = "1"
	for k, v := range in {
		if got, ok := r.Headers()[k]; !ok || got != v {
			t.Errorf("header %q: got %q (present %v), want %q", k, got, ok, v)
		}
	}
}

func testOverflow(t *testing.T, h Harness) {
	s := h.start(t, 1)
	b := s.buses[0]
	c := s.consumer(b, "busy.svc", echo, bus.BufferSize(2))
	s.settle()
	c.Pause()
	ctx := testContext(t)
	results := make(chan error, 2)
	for range 2 {
		go func() { _, err := b.Request(ctx, "busy.svc", "x"); results <- err }()
	}
	testenv.WaitFor(t.Context(), t, "two buffered requests", func() bool { return c.Stats().Pending == 2 })
	_, err := b.Request(ctx, "busy.svc", "x")
	if !errors.Is(err, bus.ErrOverflow) {
		t.Fatalf("request to a full consumer: %v, want ErrOverflow", err)
	}
	if err := b.Send(ctx, "busy.svc", "x"); err != nil {
		t.Fatalf("send to a full consumer: %v (the refusal shows in the counter)", err)
	}
	testenv.WaitFor(t.Context(), t, "the overflow counter", func() bool { return c.Stats().Overflowed == 2 })
	if !strings.Contains(s.logs.String(), "buffer full") {
		t.Fatalf("no log line for the overflow; logs:\n%s", s.logs)
	}
	c.Resume()
	for range 2 {
		if err := <-results; err != nil {
			t.Fatalf("buffered request after resume: %v", err)
		}
	}
	st := c.Stats()
	if st.Received != 2 || st.Handled != 2 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func testPauseResume(t *testing.T, h Harness) {
	s := h.start(t, 1)
	var handled atomic.Int64
	c := s.consumer(s.buses[0], "pausable", func(ctx context.Context, m *bus.Message) { handled.Add(1) })
	s.settle()
	c.Pause()
	ctx := testContext(t)
	for range 5 {
		if err := s.buses[0].Send(ctx, "pausable", "x"); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t.Context(), t, "five buffered", func() bool { return c.Stats().Pending == 5 })
	if handled.Load() != 0 {
		t.Fatal("a paused consumer handled a message")
	}
	c.Resume()
	testenv.WaitFor(t.Context(), t, "five handled", func() bool { return handled.Load() == 5 })
}

// testInlineConsumer: an Inline consumer answers requests from its own node
// and from others, handles one message at a time in each sender's order,
// holds messages while paused, and drains on Unregister.
func testInlineConsumer(t *testing.T, h Harness) {
	s := h.start(t, 2)
	var running atomic.Int32
	var got intStream
	c := s.consumer(s.buses[0], "inline.svc", func(ctx context.Context, m *bus.Message) {
		if running.Add(1) != 1 {
			t.Error("an Inline consumer ran two messages at once")
		}
		defer running.Add(-1)
		if m.ReplyExpected() {
			echo(ctx, m)
			return
		}
		got.add(t, m)
	}, bus.Inline())
	s.settle()
	ctx := testContext(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			b := s.buses[g%2]
			for i := range 50 {
				body := fmt.Sprintf("%d-%d", g, i)
				r, err := b.Request(ctx, "inline.svc", body)
				if err != nil {
					t.Errorf("request %s: %v", body, err)
					return
				}
				if string(r.Body()) != body {
					t.Errorf("request %s answered %q", body, r.Body())
				}
			}
		})
	}
	wg.Wait()
	const n = 300
	got.sendInOrder(t, s.buses[1], "inline.svc", n)
	c.Pause()
	for i := range 3 {
		if err := s.buses[0].Send(ctx, "inline.svc", n+i); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t.Context(), t, "three buffered", func() bool { return c.Stats().Pending == 3 })
	c.Resume()
	testenv.WaitFor(t.Context(), t, "three handled after Resume", func() bool { return got.len() == n+3 })
	c.Pause()
	if err := s.buses[0].Send(ctx, "inline.svc", n+3); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t.Context(), t, "one buffered", func() bool { return c.Stats().Pending == 1 })
	if err := c.Unregister(ctx); err != nil {
		t.Fatalf("Unregister: %v", err)
	}
	if got.len() != n+4 {
		t.Fatalf("Unregister left a buffered message unhandled: %d handled, want %d", got.len(), n+4)
	}
}

func testUnregister(t *testing.T, h Harness) {
	s := h.start(t, 2)
	c := s.consumer(s.buses[0], "short.lived", echo)
	s.settle()
	ctx := testContext(t)
	if _, err := s.buses[1].Request(ctx, "short.lived", "x"); err != nil {
		t.Fatal(err)
	}
	if err := c.Unregister(ctx); err != nil {
		t.Fatalf("Unregister: %v", err)
	}
	s.settle()
	_, err := s.buses[1].Request(ctx, "short.lived", "x", bus.Timeout(time.Hour))
	if !errors.Is(err, bus.ErrNoHandlers) {
		t.Fatalf("request after unregister: %v, want ErrNoHandlers", err)
	}
	if err := c.Unregister(ctx); err != nil {
		t.Fatalf("second Unregister: %v", err)
	}
}

func testUnregisterDrains(t *testing.T, h Harness) {
	s := h.start(t, 1)
	b := s.buses[0]
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	c := s.consumer(b, "draining.svc", func(ctx context.Context, m *bus.Message) {
		started <- struct{}{}
		<-release
		_ = m.Reply("done")
	})
	s.settle()
	ctx := testContext(t)
	results := make(chan error, 3)
	for range 3 {
		go func() { _, err := b.Request(ctx, "draining.svc", "x"); results <- err }()
	}
	<-started
	testenv.WaitFor(t.Context(), t, "two more buffered", func() bool { return c.Stats().Pending == 2 })
	unregistered := make(chan error, 1)
	go func() { unregistered <- c.Unregister(ctx) }()
	select {
	case err := <-unregistered:
		t.Fatalf("Unregister returned (%v) while a handler was still running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-unregistered; err != nil {
		t.Fatalf("Unregister: %v", err)
	}
	for range 3 {
		if err := <-results; err != nil {
			t.Fatalf("a message buffered before unregister was not handled: %v", err)
		}
	}
	// A drain deadline that passes fails what is left.
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	c2 := s.consumer(b, "stuck.svc", func(ctx context.Context, m *bus.Message) { <-block })
	s.settle()
	for range 2 {
		go func() { _, err := b.Request(ctx, "stuck.svc", "x"); results <- err }()
	}
	testenv.WaitFor(t.Context(), t, "one running, one buffered", func() bool { st := c2.Stats(); return st.Received == 2 })
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := c2.Unregister(short); err == nil {
		t.Fatal("Unregister past its deadline with a message left reported success")
	}
	if err := <-results; !errors.Is(err, bus.ErrNoHandlers) {
		t.Fatalf("message left at unregister: %v, want ErrNoHandlers", err)
	}
}

func testLocalConsumer(t *testing.T, h Harness) {
	s := h.start(t, 2)
	c, err := s.buses[0].LocalConsumer("node.private", bus.HandlerFunc(echo))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Unregister(context.Background())
	s.settle()
	ctx := testContext(t)
	if _, err := s.buses[0].Request(ctx, "node.private", "x"); err != nil {
		t.Fatalf("request from the same node: %v", err)
	}
	_, err = s.buses[1].Request(ctx, "node.private", "x", bus.Timeout(time.Hour))
	if !errors.Is(err, bus.ErrNoHandlers) {
		t.Fatalf("request from another node reached a local consumer: %v", err)
	}
}

func testLocalOnlyDelivery(t *testing.T, h Harness) {
	s := h.start(t, 2)
	var remote, local atomic.Int64
	s.consumer(s.buses[0], "mixed.addr", func(ctx context.Context, m *bus.Message) { remote.Add(1); _ = m.Reply("remote") })
	s.settle()
	ctx := testContext(t)
	_, err := s.buses[1].Request(ctx, "mixed.addr", "x", bus.LocalOnly(), bus.Timeout(time.Hour))
	if !errors.Is(err, bus.ErrNoHandlers) {
		t.Fatalf("local-only request reached another node: %v", err)
	}
	s.consumer(s.buses[1], "mixed.addr", func(ctx context.Context, m *bus.Message) { local.Add(1); _ = m.Reply("local") })
	s.settle()
	for range 10 {
		r, err := s.buses[1].Request(ctx, "mixed.addr", "x", bus.LocalOnly())
		if err != nil || string(r.Body()) != "local" {
			t.Fatalf("local-only request: %v %q", err, r.Body())
		}
	}
	if err := s.buses[1].Publish(ctx, "mixed.addr", "x", bus.LocalOnly()); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t.Context(), t, "local publish", func() bool { return local.Load() == 11 })
	if remote.Load() != 0 {
		t.Fatalf("remote consumer got %d local-only messages", remote.Load())
	}
}

var errForbidden = errors.New("forbidden by policy")

func testInterceptorVetoOutbound(t *testing.T, h Harness) {
	s := h.start(t, 1)
	var handled atomic.Int64
	s.consumer(s.buses[0], "guarded.out", func(ctx context.Context, m *bus.Message) { handled.Add(1); _ = m.Reply("x") })
	s.settle()
	s.buses[0].AddOutboundInterceptor(func(ctx context.Context, ev *bus.Event) error {
		if ev.Envelope.Headers["deny"] == "yes" {
			return errForbidden
		}
		return nil
	})
	ctx := testContext(t)
	for _, op := range []func() error{
		func() error { return s.buses[0].Send(ctx, "guarded.out", "x", bus.Header("deny", "yes")) },
		func() error { return s.buses[0].Publish(ctx, "guarded.out", "x", bus.Header("deny", "yes")) },
		func() error {
			_, err := s.buses[0].Request(ctx, "guarded.out", "x", bus.Header("deny", "yes"))
			return err
		},
	} {
		if err := op(); !errors.Is(err, errForbidden) || !errors.Is(err, bus.ErrDelivery) {
			t.Fatalf("vetoed message: %v", err)
		}
	}
	if _, err := s.buses[0].Request(ctx, "guarded.out", "x"); err != nil {
		t.Fatalf("allowed message: %v", err)
	}
	if handled.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", handled.Load())
	}
}

func testInterceptorVetoInbound(t *testing.T, h Harness) {
	s := h.start(t, 2)
	var handled atomic.Int64
	s.buses[0].AddInboundInterceptor(func(ctx context.Context, ev *bus.Event) error {
		if ev.Kind != bus.KindReply && ev.Envelope.Headers["token"] != "ok" {
			return errForbidden
		}
		return nil
	})
	c := s.consumer(s.buses[0], "guarded.in", func(ctx context.Context, m *bus.Message) { handled.Add(1); _ = m.Reply("x") })
	s.settle()
	ctx := testContext(t)
	_, err := s.buses[1].Request(ctx, "guarded.in", "x")
	if !errors.Is(err, bus.ErrDelivery) || !strings.Contains(err.Error(), errForbidden.Error()) {
		t.Fatalf("request refused inbound: %v", err)
	}
	if _, err := s.buses[1].Request(ctx, "guarded.in", "x", bus.Header("token", "ok")); err != nil {
		t.Fatalf("allowed request: %v", err)
	}
	if handled.Load() != 1 || c.Stats().Rejected != 1 {
		t.Fatalf("handled %d, rejected %d", handled.Load(), c.Stats().Rejected)
	}
}

func testInterceptorHeaders(t *testing.T, h Harness) {
	var outbound, inbound atomic.Int64
	s := h.start(t, 2,
		bus.WithOutboundInterceptor(func(ctx context.Context, ev *bus.Event) error {
			outbound.Add(1)
			if ev.Kind != bus.KindReply {
				if ev.Envelope.Headers == nil {
					ev.Envelope.Headers = bus.Headers{}
				}
				ev.Envelope.Headers["via"] = "interceptor"
			}
			return nil
		}),
		bus.WithInboundInterceptor(func(ctx context.Context, ev *bus.Event) error { inbound.Add(1); return nil }),
	)
	s.consumer(s.buses[0], "hdr.via", func(ctx context.Context, m *bus.Message) { _ = m.Reply(m.Header("via")) })
	s.settle()
	r, err := s.buses[1].Request(testContext(t), "hdr.via", "x")
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Body()) != "interceptor" {
		t.Fatalf("consumer saw via=%q", r.Body())
	}
	// Outbound: the request and the reply; inbound: the request and the reply.
	if outbound.Load() != 2 || inbound.Load() != 2 {
		t.Fatalf("interceptors ran outbound %d, inbound %d times; want 2 and 2", outbound.Load(), inbound.Load())
	}
}

func testCancellation(t *testing.T, h Harness) {
	s := h.start(t, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	arrived := make(chan struct{}, 1)
	s.consumer(s.buses[0], "never.answers", func(ctx context.Context, m *bus.Message) { arrived <- struct{}{}; <-release })
	s.settle()
	ctx, cancel := context.WithCancel(testContext(t))
	go func() { <-arrived; cancel() }()
	_, err := s.buses[0].Request(ctx, "never.answers", "x", bus.Timeout(time.Hour))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
	if errors.Is(err, bus.ErrTimeout) {
		t.Fatalf("a cancelled request reported a timeout: %v", err)
	}
}

func testConcurrentRequests(t *testing.T, h Harness) {
	s := h.start(t, 2)
	for i := range 2 {
		s.consumer(s.buses[i], "calc.double", func(ctx context.Context, m *bus.Message) {
			var v int
			_ = m.Decode(&v)
			_ = m.Reply(2 * v)
		})
	}
	s.settle()
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				v := g*1000 + i
				r, err := s.buses[g%2].Request(ctx, "calc.double", v)
				if err != nil {
					errs <- err
					return
				}
				var got int
				if err := r.Decode(&got); err != nil || got != 2*v {
					errs <- fmt.Errorf("double(%d) = %d, %v", v, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func testClose(t *testing.T, h Harness) {
	s := h.start(t, 1)
	b := s.buses[0]
	s.consumer(b, "closing.svc", echo)
	s.settle()
	if err := b.Close(testContext(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := testContext(t)
	if err := b.Send(ctx, "closing.svc", "x"); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if _, err := b.Request(ctx, "closing.svc", "x"); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Request after Close: %v", err)
	}
	if _, err := b.Consumer("closing.svc", bus.HandlerFunc(echo)); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Consumer after Close: %v", err)
	}
}
