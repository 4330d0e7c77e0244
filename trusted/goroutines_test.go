package trusted

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/wire"
)

// passLayer is a Layer that changes nothing and starts one goroutine.
type passLayer struct {
	rt    *Runtime
	start func(ctx context.Context)
}

func (l *passLayer) Start(context.Context) error         { l.rt.Go(l.start); return nil }
func (l *passLayer) Handlers() map[string]Handler        { return nil }
func (l *passLayer) Serves(registered []string) []string { return registered }
func (l *passLayer) Open(*Delivery) (Opened, error)      { return nil, nil }
func (l *passLayer) Outgoing(_ string, _ wire.Kind, h map[string]string, b []byte) (map[string]string, []byte, OpenReply, error) {
	return h, b, nil, nil
}
func (l *passLayer) Health() string             { return "" }
func (l *passLayer) Stop(context.Context) error { return nil }

// TestServeWaitsForItsGoroutines: Serve returns only once the goroutines
// it started have ended — a handler still running when the grace period
// ran out, and a layer's background goroutine (Runtime.Go). Both are held
// at a sync point the test releases only after the host saw Stopped; each
// marks its end, and Serve must not return before both marks are set.
func TestServeWaitsForItsGoroutines(t *testing.T) {
	release := make(chan struct{})
	var handlerEnded, layerEnded atomic.Bool
	app := New(Options{Workers: 2, ShutdownGrace: time.Millisecond,
		Layer: func(rt *Runtime) Layer {
			return &passLayer{rt: rt, start: func(ctx context.Context) {
				<-ctx.Done()
				<-release
				layerEnded.Store(true)
			}}
		}})
	started := make(chan struct{})
	app.HandleFunc("stuck", func(ctx context.Context, c *Call) {
		close(started)
		<-ctx.Done() // the instance stops
		<-release
		handlerEnded.Store(true)
	})
	h := startInproc(t, app, testInit(), nil)
	h.deliver(wire.KindSend, "stuck", nil, nil)
	<-started
	if err := h.conn.Send(&boundary.Shutdown{Reason: "test", Grace: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if st := h.next(boundary.TypeStopped).(*boundary.Stopped); st.Message == "" {
		t.Fatalf("stopped: %+v", st)
	}
	select {
	case err := <-h.serv:
		t.Fatalf("Serve returned (%v) while a handler and a layer goroutine it started were still running", err)
	default:
	}
	close(release)
	if err := h.waitEnd(true); err != nil {
		t.Fatal(err)
	}
	if !handlerEnded.Load() || !layerEnded.Load() {
		t.Fatalf("Serve returned before its goroutines ended: handler ended %v, layer goroutine ended %v", handlerEnded.Load(), layerEnded.Load())
	}
}
