package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
)

// TestHeaderValuesSurviveNATS checks header values NATS would otherwise
// alter (leading whitespace) and keys whose case NATS must keep.
func TestHeaderValuesSurviveNATS(t *testing.T) {
	n := startNode(t, cluster.Options{Name: "headers"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	buses := make([]*bus.Bus, 2)
	for i := range buses {
		tr, err := n.NewTransport(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := bus.New(bus.WithTransport(tr), bus.WithLogger(quietLogger()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(context.Background()) })
		buses[i] = b
	}
	if _, err := buses[0].Consumer("hdr.echo", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		h := bus.Headers{}
		for k, v := range m.Headers() {
			if k != bus.HeaderCodec {
				h[k] = v
			}
		}
		_ = m.Reply(m.Body(), bus.WithHeaders(h))
	})); err != nil {
		t.Fatal(err)
	}
	in := bus.Headers{
		"lead":       "  two spaces first",
		"tab":        "\tthen text",
		"trail":      "text then spaces  ",
		"only-space": " ",
		"mixed-Case": "x",
		"MIXED-case": "y",
		"colon":      "a: b",
	}
	r, err := buses[1].Request(ctx, "hdr.echo", "x", bus.WithHeaders(in))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range in {
		if got, ok := r.Headers()[k]; !ok || got != v {
			t.Errorf("header %q: got %q (present %v), want %q", k, got, ok, v)
		}
	}
}
