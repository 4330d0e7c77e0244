package trusted

import (
	"context"
	"testing"

	"github.com/cloister-dev/cloister/wire"
)

func TestPassTrace(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := withTrace(context.Background(), map[string]string{wire.HeaderTraceParent: tp, "other": "x"})
	in := map[string]string{"a": "b"}
	out := passTrace(ctx, in)
	if out[wire.HeaderTraceParent] != tp || out["a"] != "b" || out["other"] != "" {
		t.Fatalf("passTrace = %v", out)
	}
	if _, ok := in[wire.HeaderTraceParent]; ok {
		t.Fatal("passTrace changed the caller's headers")
	}
	own := map[string]string{wire.HeaderTraceParent: "mine"}
	if got := passTrace(ctx, own)[wire.HeaderTraceParent]; got != "mine" {
		t.Fatalf("a handler's own trace header was replaced: %q", got)
	}
	if got := passTrace(context.Background(), nil); got != nil {
		t.Fatalf("no trace: headers %v", got)
	}
}
