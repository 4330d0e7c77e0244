package tracing_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/tracing"
)

// TestSpansOnOneBus: a traced request carries traceparent to its handler,
// which continues the trace with Extract; a send and a publish are
// recorded with their delivery; a request nobody serves ends in an error
// span naming the failure.
func TestSpansOnOneBus(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	ctx := context.Background()
	tr, err := tracing.New(ctx, tracing.Options{Exporter: exp, ServiceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.New()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	tr.Install(b)
	seen := make(chan trace.SpanContext, 4)
	if _, err := b.Consumer("svc", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		seen <- trace.SpanContextFromContext(tracing.Extract(ctx, m.Headers()))
		if m.ReplyExpected() {
			_ = m.Reply("ok")
		}
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Request(ctx, "svc", "x"); err != nil {
		t.Fatal(err)
	}
	handlerSaw := <-seen
	if err := b.Send(ctx, "svc", "y"); err != nil {
		t.Fatal(err)
	}
	<-seen
	if err := b.Publish(ctx, "svc", "z"); err != nil {
		t.Fatal(err)
	}
	<-seen
	if _, err := b.Request(ctx, "nobody", "x"); !errors.Is(err, bus.ErrNoHandlers) {
		t.Fatalf("want no handlers, got %v", err)
	}
	if err := tr.ForceFlush(ctx); err != nil { // (Shutdown would empty the in-memory exporter)
		t.Fatal(err)
	}
	defer tr.Shutdown(ctx)
	byName := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		byName[s.Name] = s
	}
	for _, name := range []string{"request svc", "handle svc", "send svc", "publish svc", "deliver svc", "request nobody"} {
		if _, ok := byName[name]; !ok {
			t.Errorf("no span %q among %d", name, len(byName))
		}
	}
	req, handle := byName["request svc"], byName["handle svc"]
	if handle.Parent.SpanID() != req.SpanContext.SpanID() || handle.SpanContext.TraceID() != req.SpanContext.TraceID() {
		t.Errorf("handle span is not the request's child")
	}
	if handlerSaw.SpanID() != handle.SpanContext.SpanID() {
		t.Errorf("the handler's extracted context is not its handle span")
	}
	if s := byName["request nobody"]; s.Status.Code != codes.Error || s.Status.Description != "no-handlers" {
		t.Errorf("failed request span status %+v", s.Status)
	}
}

func TestOptionsChecked(t *testing.T) {
	ctx := context.Background()
	for _, o := range []tracing.Options{{Endpoint: "127.0.0.1:4318"}, {Endpoint: "ftp://x/v1/traces"}, {Endpoint: "http://x", RootSampleRatio: 2}} {
		if _, err := tracing.New(ctx, o); err == nil {
			t.Errorf("New accepted %+v", o)
		}
	}
}
