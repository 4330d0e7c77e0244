// Package tracing carries W3C trace context (the traceparent header) in
// bus message headers and records OpenTelemetry spans on the host side of
// a node: a span for each message sent (send, publish, request; a request's
// span lasts until its answer), one for each request handled (until the
// reply; named "enclave ADDRESS" when an enclave serves the address, so it
// covers the crossing into the enclave and back), and a short one for each
// send or publish delivered. Spans go to an OTLP/HTTP collector.
//
// Tracing is off unless a node is given an endpoint (node.Options.Tracing).
// The trusted side imports no tracing library: the traceparent header is an
// ordinary message header that crosses the enclave boundary like any
// other. On secured addresses only the payload is sealed: the host, the
// broker and anyone on the network read the header, so a trace ID links
// the messages of one trace for them by design. Do not put secrets in
// trace state.
//
// A handler that sends further messages continues the trace by deriving
// its context from the message: ctx = tracing.Extract(ctx, m.Headers()).
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/wire"
)

// HeaderTraceparent is the W3C trace-context header carried in message
// headers; HeaderTracestate is its companion.
const (
	HeaderTraceparent = wire.HeaderTraceParent
	HeaderTracestate  = "tracestate"
)

// Defaults of Options.
const (
	DefaultMaxOpenSpans = 4096
	DefaultSpanTimeout  = bus.DefaultTimeout + 5*time.Second
)

// Options configure a Tracer. The zero value is not usable: set Endpoint
// (or Exporter).
type Options struct {
	// Endpoint is the URL of an OTLP/HTTP traces endpoint, such as
	// http://127.0.0.1:4318/v1/traces (http: plain text, https: TLS).
	Endpoint string
	// ServiceName names the process in the spans' resource (default
	// "cloister").
	ServiceName string
	// Attributes are extra resource attributes, such as the node's name.
	Attributes map[string]string
	// RootSampleRatio is the share of messages sent outside any trace that
	// start one (0 to 1; default 1: every one). Messages that carry a
	// trace follow its sampling decision.
	RootSampleRatio float64
	// EnclaveAddress reports whether an enclave serves address, to name
	// the span of a request it handles "enclave ADDRESS".
	EnclaveAddress func(address string) bool
	// MaxOpenSpans bounds the spans waiting for an answer (default
	// DefaultMaxOpenSpans); beyond, new ones are ended at once.
	MaxOpenSpans int
	// SpanTimeout ends spans still waiting for an answer after this long
	// (default DefaultSpanTimeout), so that lost answers leak nothing.
	SpanTimeout time.Duration
	// Exporter replaces the OTLP exporter (tests, other protocols).
	Exporter sdktrace.SpanExporter
}

// Tracer traces the messages of the buses it is installed on.
type Tracer struct {
	opts   Options
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	prop   propagation.TextMapPropagator

	mu   sync.Mutex
	open map[string]openSpan // traceparent → span waiting for an answer
}

type openSpan struct {
	span  trace.Span
	start time.Time
}

// New returns a tracer exporting to opts.Endpoint.
func New(ctx context.Context, opts Options) (*Tracer, error) {
	if opts.RootSampleRatio < 0 || opts.RootSampleRatio > 1 {
		return nil, fmt.Errorf("tracing: root sample ratio %v: want 0 to 1", opts.RootSampleRatio)
	}
	if opts.RootSampleRatio == 0 {
		opts.RootSampleRatio = 1
	}
	if opts.MaxOpenSpans < 0 || opts.SpanTimeout < 0 {
		return nil, errors.New("tracing: negative MaxOpenSpans or SpanTimeout")
	}
	if opts.MaxOpenSpans == 0 {
		opts.MaxOpenSpans = DefaultMaxOpenSpans
	}
	if opts.SpanTimeout == 0 {
		opts.SpanTimeout = DefaultSpanTimeout
	}
	if opts.ServiceName == "" {
		opts.ServiceName = "cloister"
	}
	exp := opts.Exporter
	if exp == nil {
		if err := CheckEndpoint(opts.Endpoint); err != nil {
			return nil, err
		}
		eopts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(opts.Endpoint)}
		if strings.HasPrefix(opts.Endpoint, "http:") {
			eopts = append(eopts, otlptracehttp.WithInsecure())
		}
		var err error
		if exp, err = otlptracehttp.New(ctx, eopts...); err != nil {
			return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
		}
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(opts.ServiceName)}
	for k, v := range opts.Attributes {
		attrs = append(attrs, attribute.String(k, v))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(opts.RootSampleRatio))),
	)
	return &Tracer{
		opts:   opts,
		tp:     tp,
		tracer: tp.Tracer("github.com/cloister-dev/cloister/tracing"),
		prop:   propagation.TraceContext{},
		open:   map[string]openSpan{},
	}, nil
}

// CheckEndpoint checks an OTLP/HTTP traces endpoint: an http:// (plain
// text) or https:// URL with a host.
func CheckEndpoint(endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("tracing: endpoint %q: want an http:// or https:// URL of an OTLP/HTTP traces endpoint, such as http://127.0.0.1:4318/v1/traces", endpoint)
	}
	return nil
}

// Install makes the tracer trace b's messages: an outbound and an inbound
// interceptor and an observer.
func (t *Tracer) Install(b *bus.Bus) {
	b.AddOutboundInterceptor(t.outbound)
	b.AddInboundInterceptor(t.inbound)
	b.AddObserver(t.observe)
}

// TracerProvider returns the tracer's provider, for spans of the
// application's own (this node's resource, exporter and sampler).
func (t *Tracer) TracerProvider() trace.TracerProvider { return t.tp }

// Shutdown ends the spans still open, exports what is buffered and stops
// the exporter, bounded by ctx.
func (t *Tracer) Shutdown(ctx context.Context) error {
	t.mu.Lock()
	for k, o := range t.open {
		o.span.SetStatus(codes.Error, "no answer before shutdown")
		o.span.End()
		delete(t.open, k)
	}
	t.mu.Unlock()
	if err := t.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}

// ForceFlush exports the spans ended so far, bounded by ctx.
func (t *Tracer) ForceFlush(ctx context.Context) error { return t.tp.ForceFlush(ctx) }

// headerCarrier adapts bus headers to the propagator.
type headerCarrier bus.Headers

func (c headerCarrier) Get(key string) string { return c[key] }
func (c headerCarrier) Set(key, value string) { c[key] = value }
func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Extract returns ctx carrying the trace context of headers (a message's
// headers), so that what a handler sends continues the trace.
func Extract(ctx context.Context, headers bus.Headers) context.Context {
	if headers[HeaderTraceparent] == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, headerCarrier(headers))
}

// Inject writes the trace context of ctx into headers (which must not be
// nil); it writes nothing when ctx carries no trace.
func Inject(ctx context.Context, headers bus.Headers) {
	propagation.TraceContext{}.Inject(ctx, headerCarrier(headers))
}

// outbound starts the span of a message this bus sends and puts its
// context in the message's headers.
func (t *Tracer) outbound(ctx context.Context, ev *bus.Event) error {
	if ev.Kind == bus.KindReply {
		return nil
	}
	env := ev.Envelope
	if !trace.SpanContextFromContext(ctx).IsValid() && env.Headers[HeaderTraceparent] != "" {
		// The sender forwarded a trace context in the headers.
		ctx = Extract(ctx, env.Headers)
	}
	name, kind := "send ", trace.SpanKindProducer
	switch {
	case ev.ReplyExpected:
		name, kind = "request ", trace.SpanKindClient
	case ev.Kind == bus.KindPublish:
		name = "publish "
	}
	_, span := t.tracer.Start(ctx, name+env.Address, trace.WithSpanKind(kind),
		trace.WithAttributes(attribute.String("messaging.system", "cloister"), attribute.String("messaging.destination.name", env.Address)))
	if !span.SpanContext().IsValid() {
		return nil
	}
	h := env.Headers.Clone()
	if h == nil {
		h = make(bus.Headers, 2)
	}
	t.prop.Inject(trace.ContextWithSpan(context.Background(), span), headerCarrier(h))
	env.Headers = h
	t.track(h[HeaderTraceparent], span)
	return nil
}

// inbound records the arrival of a traced message at a consumer of this
// node; a request's span stays open until the reply and becomes the
// parent the handler (or enclave) sees.
func (t *Tracer) inbound(ctx context.Context, ev *bus.Event) error {
	env := ev.Envelope
	if ev.Kind == bus.KindReply || env.Headers[HeaderTraceparent] == "" {
		return nil
	}
	parent := t.prop.Extract(context.Background(), headerCarrier(env.Headers))
	if !trace.SpanContextFromContext(parent).IsValid() {
		return nil
	}
	attrs := trace.WithAttributes(attribute.String("messaging.system", "cloister"), attribute.String("messaging.destination.name", env.Address))
	if !ev.ReplyExpected {
		_, span := t.tracer.Start(parent, "deliver "+env.Address, trace.WithSpanKind(trace.SpanKindConsumer), attrs)
		span.End()
		return nil
	}
	name := "handle "
	if t.opts.EnclaveAddress != nil && t.opts.EnclaveAddress(env.Address) {
		name = "enclave "
	}
	_, span := t.tracer.Start(parent, name+env.Address, trace.WithSpanKind(trace.SpanKindServer), attrs)
	if !span.SpanContext().IsValid() {
		return nil
	}
	h := env.Headers.Clone()
	delete(h, HeaderTracestate)
	t.prop.Inject(trace.ContextWithSpan(context.Background(), span), headerCarrier(h))
	env.Headers = h
	t.track(h[HeaderTraceparent], span)
	return nil
}

// track keeps span until its answer is observed.
func (t *Tracer) track(key string, span trace.Span) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.open) >= t.opts.MaxOpenSpans {
		for k, o := range t.open {
			if now.Sub(o.start) > t.opts.SpanTimeout {
				o.span.SetStatus(codes.Error, "no answer observed")
				o.span.End()
				delete(t.open, k)
			}
		}
		if len(t.open) >= t.opts.MaxOpenSpans {
			span.SetAttributes(attribute.Bool("cloister.untracked", true))
			span.End()
			return
		}
	}
	t.open[key] = openSpan{span: span, start: now}
}

func (t *Tracer) take(key string) (trace.Span, bool) {
	if key == "" {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	o, ok := t.open[key]
	if ok {
		delete(t.open, key)
	}
	return o.span, ok
}

// observe ends the span of an operation when it completed.
func (t *Tracer) observe(o bus.Outcome) {
	var span trace.Span
	var ok bool
	if o.Op == bus.OpReply {
		span, ok = t.take(o.InReplyTo[HeaderTraceparent])
		if ok {
			if f := o.Headers[bus.HeaderFailure]; f != "" {
				span.SetStatus(codes.Error, f)
				span.SetAttributes(attribute.String("cloister.failure", f))
			}
		}
	} else {
		span, ok = t.take(o.Headers[HeaderTraceparent])
	}
	if !ok {
		return
	}
	if o.Err != nil {
		f := bus.FailureOf(o.Err).String()
		span.SetStatus(codes.Error, f)
		span.SetAttributes(attribute.String("cloister.failure", f))
	}
	span.End()
}
