package trusted

import (
	"context"

	"github.com/cloister-dev/cloister/wire"
)

// traceKey is the context key of the trace context (wire.HeaderTraceParent)
// of the message a handler handles.
type traceKey struct{}

// withTrace returns ctx carrying the trace header of a delivery's headers
// (read before a secured envelope is opened: the header travels outside
// it).
func withTrace(ctx context.Context, headers map[string]string) context.Context {
	if tp := headers[wire.HeaderTraceParent]; tp != "" {
		return context.WithValue(ctx, traceKey{}, tp)
	}
	return ctx
}

// passTrace returns headers with the trace header of ctx added (a copy;
// headers that already carry one keep theirs). The header is added after
// sealing, outside any envelope, where the host's tracer reads it.
func passTrace(ctx context.Context, headers map[string]string) map[string]string {
	tp, _ := ctx.Value(traceKey{}).(string)
	if tp == "" || headers[wire.HeaderTraceParent] != "" {
		return headers
	}
	out := make(map[string]string, len(headers)+1)
	for k, v := range headers {
		out[k] = v
	}
	out[wire.HeaderTraceParent] = tp
	return out
}
