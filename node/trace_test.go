package node

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/tracing"
)

// collectedSpan is a span as an OTLP collector received it.
type collectedSpan struct {
	service, name, traceID, spanID, parentID string
	kind                                     int32
	status                                   int32
}

// otlpStandIn is an OTLP/HTTP traces endpoint that keeps what it is sent.
type otlpStandIn struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []collectedSpan
}

func startOTLP(t *testing.T) *otlpStandIn {
	c := &otlpStandIn{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		raw, err := io.ReadAll(body)
		var req coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(raw, &req)
		}
		if err != nil || r.URL.Path != "/v1/traces" {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		for _, rs := range req.ResourceSpans {
			service := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					c.spans = append(c.spans, collectedSpan{service: service, name: s.Name,
						traceID: hex.EncodeToString(s.TraceId), spanID: hex.EncodeToString(s.SpanId),
						parentID: hex.EncodeToString(s.ParentSpanId), kind: int32(s.Kind), status: int32(s.GetStatus().GetCode())})
				}
			}
		}
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		_, _ = io.Copy(w, bytes.NewReader(out))
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *otlpStandIn) collected() []collectedSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]collectedSpan(nil), c.spans...)
}

// routedNode starts a node of a routed cluster, tracing to the collector.
func routedNode(t *testing.T, name string, routes []string, endpoint string) (*Node, *cluster.Node) {
	t.Helper()
	return startClusterNode(t, cluster.Options{Name: name, ClusterListen: "127.0.0.1:-1", Routes: routes},
		Options{Tracing: tracing.Options{Endpoint: endpoint, ServiceName: name}})
}

// TestTraceSpansClientNodeEnclaveReply follows one request from a client
// span on one node, over NATS, into an enclave on another node and back:
// the OTLP collector stand-in receives the client's span, the request's
// span and the enclave crossing's span, in one trace, each the parent of
// the next.
func TestTraceSpansClientNodeEnclaveReply(t *testing.T) {
	col := startOTLP(t)
	endpoint := col.srv.URL + "/v1/traces"
	b, bcn := routedNode(t, "node-b", nil, endpoint)
	a, _ := routedNode(t, "node-a", []string{bcn.ClusterURL()}, endpoint)
	ctx := context.Background()
	if _, err := b.DeployEnclave(ctx, EnclaveConfig{Name: "vault", Image: enclaveImage(t),
		Addresses: []string{"test.*"}, StateDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	// Wait (bounded) until node A sees the enclave's consumer across the
	// route; these requests are traced too, in traces of their own.
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := a.Bus().Request(ctx, "test.echo", "warm-up", bus.Timeout(5*time.Second))
		if err == nil {
			break
		}
		if !errors.Is(err, bus.ErrNoHandlers) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cctx, client := a.Tracer().TracerProvider().Tracer("test-client").Start(ctx, "client")
	if _, err := a.Bus().Request(cctx, "test.echo", "hi"); err != nil {
		t.Fatal(err)
	}
	client.End()
	traceID := client.SpanContext().TraceID().String()
	// A span ends when its side is done, which may be just after the
	// reply: flush and collect until every span the check names is in.
	var inTrace []collectedSpan
	collect := func(want ...string) {
		t.Helper()
		testenv.WaitFor(ctx, t, "the trace's spans", func() error {
			for _, n := range []*Node{a, b} {
				if err := n.Tracer().ForceFlush(ctx); err != nil {
					return err
				}
			}
			inTrace = nil
			for _, s := range col.collected() {
				if s.traceID == traceID {
					inTrace = append(inTrace, s)
				}
			}
			for _, w := range want {
				if !slices.ContainsFunc(inTrace, func(s collectedSpan) bool { return s.name+"@"+s.service == w }) {
					return fmt.Errorf("no span %s in trace %s yet", w, traceID)
				}
			}
			return nil
		})
	}
	collect("client@node-a", "request test.echo@node-a", "enclave test.echo@node-b")
	find := func(name, service string) collectedSpan {
		for _, s := range inTrace {
			if s.name == name && s.service == service {
				return s
			}
		}
		t.Fatalf("no span %q from %s in trace %s: %+v", name, service, traceID, inTrace)
		return collectedSpan{}
	}
	cs := find("client", "node-a")
	req := find("request test.echo", "node-a")
	encl := find("enclave test.echo", "node-b")
	if req.parentID != cs.spanID || encl.parentID != req.spanID {
		t.Fatalf("spans not chained client → request → enclave: %+v", inTrace)
	}
	if req.status == 2 || encl.status == 2 { // STATUS_CODE_ERROR
		t.Fatalf("a span of a successful request is an error: %+v", inTrace)
	}

	// Through the enclave: a handler that requests a host service passes
	// the trace header on (the trusted runtime copies it), so the host's
	// request and its handling join the trace under the enclave's span.
	if _, err := b.Deploy(ctx, func() Service { return opsEcho{} }, DeployOptions{Name: "echo"}); err != nil {
		t.Fatal(err)
	}
	cctx, client = a.Tracer().TracerProvider().Tracer("test-client").Start(ctx, "client-2")
	if _, err := a.Bus().Request(cctx, "test.request", "via", bus.Header("to", "ops.echo")); err != nil {
		t.Fatal(err)
	}
	client.End()
	traceID = client.SpanContext().TraceID().String()
	collect("enclave test.request@node-b", "request ops.echo@node-b", "handle ops.echo@node-b")
	encl = find("enclave test.request", "node-b")
	inner := find("request ops.echo", "node-b")
	handled := find("handle ops.echo", "node-b")
	if inner.parentID != encl.spanID || handled.parentID != inner.spanID {
		t.Fatalf("the enclave's own request is not chained under its span: %+v", inTrace)
	}
}
