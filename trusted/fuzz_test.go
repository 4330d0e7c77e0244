package trusted

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/wire"
)

// hostStream is what a host sends: its hello, then frames.
func hostStream(frames ...boundary.Message) []byte {
	b := []byte(boundary.HandshakeMagic)
	b = binary.BigEndian.AppendUint16(b, boundary.ProtocolVersion)
	b = append(b, byte(boundary.RoleHost), 0)
	b = binary.BigEndian.AppendUint32(b, boundary.DefaultMaxFrame)
	for _, f := range frames {
		b = boundary.AppendFrame(b, f)
	}
	return b
}

// FuzzServe feeds an arbitrary ECALL stream (after a valid handshake and
// Init) to a running enclave: it must neither panic nor hang.
func FuzzServe(f *testing.F) {
	f.Add(boundary.AppendFrame(nil, &boundary.Deliver{Token: 1, Kind: wire.KindRequest, Address: "echo", Body: []byte("x")}))
	var all []byte
	for _, m := range []boundary.Message{
		&boundary.Deliver{Token: 1, Kind: wire.KindRequest, Address: "put", Headers: map[string]string{"key": "k"}, Body: []byte("v")},
		&boundary.StoreResult{CallID: 1},
		&boundary.Deliver{Token: 2, Kind: wire.KindRequest, Address: "get", Headers: map[string]string{"key": "k"}},
		&boundary.StoreResult{CallID: 2, Found: true, Blob: []byte("not a blob")},
		&boundary.Deliver{Token: 3, Kind: wire.KindRequest, Address: "panic"},
		&boundary.Deliver{Kind: wire.KindPublish, Address: "emit"},
		&boundary.Health{ID: 4},
		&boundary.Deliver{Token: 5, Kind: wire.KindRequest, Address: "ask", Headers: map[string]string{"to": "svc"}},
		&boundary.RequestResult{CallID: 3, Body: []byte("r")},
		&boundary.Init{},
		&boundary.Shutdown{Grace: time.Millisecond},
	} {
		all = boundary.AppendFrame(all, m)
	}
	f.Add(all)
	f.Fuzz(func(t *testing.T, ecalls []byte) {
		app := New(Options{Workers: 2, ShutdownGrace: 10 * time.Millisecond})
		app.HandleFunc("echo", func(ctx context.Context, c *Call) { c.Reply(c.Headers(), c.Body()) })
		app.HandleFunc("panic", func(ctx context.Context, c *Call) { panic("fuzz") })
		app.HandleFunc("emit", func(ctx context.Context, c *Call) { c.Publish(ctx, "out", nil, c.Body()) })
		app.HandleFunc("put", func(ctx context.Context, c *Call) { c.Put(ctx, c.Header("key"), c.Body()) })
		app.HandleFunc("get", func(ctx context.Context, c *Call) { c.Get(ctx, c.Header("key")) })
		app.HandleFunc("ask", func(ctx context.Context, c *Call) { c.Request(ctx, c.Header("to"), nil, nil, time.Second) })
		in := hostStream(testInit())
		in = append(in, ecalls...)
		done := make(chan error, 1)
		go func() { done <- app.Serve(context.Background(), bytes.NewReader(in), io.Discard) }()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, ErrHostClosed) && !errors.Is(err, boundary.ErrFrameTooLarge) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve hung")
		}
	})
}
