package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/wire"
)

// Durable addresses on JetStream.
const (
	// DurableStream is the JetStream stream holding the messages sent to
	// durable addresses (subjects cloister.durable.>, work-queue
	// retention: a message is removed once a consumer acknowledged it).
	DurableStream = "CLOISTER_DURABLE"
	// HeaderMessageID carries the ID of a durable message: the same on
	// every delivery of one message, so a consumer can drop duplicates.
	HeaderMessageID = wire.HeaderMessageID
	// HeaderDelivery counts the deliveries of a durable message (1 on the
	// first).
	HeaderDelivery = wire.HeaderDelivery
	// DefaultAckWait is how long a durable delivery may stay
	// unacknowledged before it is delivered again.
	DefaultAckWait = 30 * time.Second
	// durableDuplicates is JetStream's window for dropping a message
	// whose ID it has already stored (a sender's retry).
	durableDuplicates = 2 * time.Minute
	// durablePull bounds how many durable messages one subscription holds
	// without acknowledging them.
	durablePull = 64
	// durableRetryDelay is how long a durable message that was not
	// handled (refused, or its handler panicked) waits before it is
	// delivered again.
	durableRetryDelay = time.Second
)

type durableState struct {
	t       *Transport
	js      jetstream.JetStream
	addrs   map[string]bool
	ackWait time.Duration

	mu        sync.Mutex
	consumers map[string]jetstream.Consumer
}

type durableSub struct{ cc jetstream.ConsumeContext }

// DurableConsumerName is the JetStream durable consumer of a durable
// address: the address with every character other than A-Z a-z 0-9 and
// '-' escaped as _XX (hex).
func DurableConsumerName(address string) string {
	var b strings.Builder
	b.WriteString("cloister_")
	for i := 0; i < len(address); i++ {
		c := address[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02X", c)
		}
	}
	return b.String()
}

func newDurableState(ctx context.Context, t *Transport, cfg transportConfig) (*durableState, error) {
	d := &durableState{t: t, addrs: make(map[string]bool), ackWait: cfg.ackWait, consumers: make(map[string]jetstream.Consumer)}
	if d.ackWait <= 0 {
		d.ackWait = DefaultAckWait
	}
	for _, a := range cfg.durable {
		if err := bus.ValidateAddress(a); err != nil {
			return nil, fmt.Errorf("cluster: durable address: %w", err)
		}
		d.addrs[a] = true
	}
	js, err := jetstream.New(t.nc)
	if err != nil {
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	d.js = js
	if err := createStream(ctx, js, jetstream.StreamConfig{
		Name:        DurableStream,
		Description: "messages sent to Cloister's durable addresses",
		Subjects:    []string{DurablePrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  durableDuplicates,
	}); err != nil {
		return nil, fmt.Errorf("cluster: durable addresses need JetStream (a node with a store dir, or JetStream on the external servers): stream %s: %w", DurableStream, err)
	}
	for a := range d.addrs {
		if _, err := d.consumer(ctx, a); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// createStream creates or updates the stream, asking again every few
// seconds until ctx ends: a clustered JetStream does not answer a request
// that arrives before its meta leader is elected (the servers of a new
// cluster elect it once their routes are up).
func createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.CreateOrUpdateStream(actx, cfg)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *durableState) isDurable(address string) bool { return d.addrs[address] }

// consumer binds to the durable consumer of address, creating it if it does
// not exist yet (an existing one keeps its configuration).
func (d *durableState) consumer(ctx context.Context, address string) (jetstream.Consumer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.consumers[address]; c != nil {
		return c, nil
	}
	name := DurableConsumerName(address)
	c, err := d.js.Consumer(ctx, DurableStream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		c, err = d.js.CreateConsumer(ctx, DurableStream, jetstream.ConsumerConfig{
			Durable:       name,
			Description:   "consumers of durable address " + address,
			FilterSubject: DurablePrefix + address,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       d.ackWait,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if errors.Is(err, jetstream.ErrConsumerExists) {
			c, err = d.js.Consumer(ctx, DurableStream, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: durable consumer of %q: %w", address, err)
	}
	d.consumers[address] = c
	return c, nil
}

// send stores env in the durable stream; it returns once JetStream has
// stored it.
func (d *durableState) send(ctx context.Context, env *bus.Envelope) error {
	msg := &nats.Msg{Subject: DurablePrefix + env.Address, Header: toNATS(env.Headers), Data: env.Body}
	if _, err := d.js.PublishMsg(ctx, msg, jetstream.WithMsgID(nats.NewInbox()[len(nats.InboxPrefix):])); err != nil {
		return fmt.Errorf("cluster: durable send to %q: %w", env.Address, err)
	}
	return nil
}

func (d *durableState) subscribe(s *subscription) (*durableSub, error) {
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	c, err := d.consumer(ctx, s.address)
	if err != nil {
		return nil, err
	}
	cc, err := c.Consume(func(m jetstream.Msg) { s.onDurable(m) }, jetstream.PullMaxMessages(durablePull))
	if err != nil {
		return nil, fmt.Errorf("cluster: consume durable address %q: %w", s.address, err)
	}
	return &durableSub{cc: cc}, nil
}

// onDurable hands a durable message to the subscription's consumer, whose
// bus completes it through the delivery's Ack: acknowledged once handled,
// handed back for redelivery (after a second) when not.
func (s *subscription) onDurable(m jetstream.Msg) {
	h := fromNATS(m.Headers())
	if h == nil {
		h = bus.Headers{}
	}
	for k := range h {
		if strings.HasPrefix(k, "Nats-") {
			delete(h, k)
		}
	}
	h[HeaderMessageID] = m.Headers().Get(jetstream.MsgIDHeader)
	if md, err := m.Metadata(); err == nil {
		h[HeaderDelivery] = strconv.FormatUint(md.NumDelivered, 10)
	}
	d := &bus.Delivery{Envelope: bus.Envelope{Address: s.address, Headers: h, Body: m.Data()}, Kind: bus.KindSend}
	d.Ack = func(err error) {
		var aerr error
		if err == nil {
			aerr = m.Ack()
		} else {
			aerr = m.NakWithDelay(durableRetryDelay)
		}
		if aerr != nil {
			s.t.logger.Warn("cluster: acknowledging a durable message", "address", s.address, "handled", err == nil, "error", aerr)
		}
	}
	if !s.call(d) {
		_ = m.Nak()
	}
}

func (d *durableState) close() {}

func (ds *durableSub) stop() { ds.cc.Stop() }

// discoverTimeout bounds the look-up of the durable addresses already
// declared, at a transport's start.
const discoverTimeout = time.Second

// declaredDurable returns the durable addresses declared on the JetStream
// nc reaches: those with a durable consumer in DurableStream, which every
// transport that declares an address creates. None when there is no
// JetStream or no stream yet.
func declaredDurable(ctx context.Context, nc *nats.Conn) []string {
	ctx, cancel := context.WithTimeout(ctx, discoverTimeout)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil
	}
	st, err := js.Stream(ctx, DurableStream)
	if err != nil {
		return nil
	}
	var out []string
	names := st.ConsumerNames(ctx)
	for name := range names.Name() {
		if a, ok := DurableAddressOf(name); ok {
			out = append(out, a)
		}
	}
	return out
}

// DurableAddressOf returns the durable address whose JetStream consumer is
// named consumer (it inverts DurableConsumerName); false for any other name.
func DurableAddressOf(consumer string) (string, bool) {
	rest, ok := strings.CutPrefix(consumer, "cloister_")
	if !ok {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(rest); i++ {
		if rest[i] != '_' {
			b.WriteByte(rest[i])
			continue
		}
		if i+2 >= len(rest) {
			return "", false
		}
		v, err := strconv.ParseUint(rest[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(v))
		i += 2
	}
	a := b.String()
	if bus.ValidateAddress(a) != nil || DurableConsumerName(a) != consumer {
		return "", false
	}
	return a, true
}
