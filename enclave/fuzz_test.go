package enclave

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/bus"
)

// FuzzHostFromHostileEnclave feeds arbitrary bytes, after a correct
// handshake, as the enclave's OCALL stream: the host must neither panic
// nor hang, whatever the enclave sends.
func FuzzHostFromHostileEnclave(f *testing.F) {
	frames := func(ms ...boundary.Message) []byte {
		var b []byte
		for _, m := range ms {
			b = boundary.AppendFrame(b, m)
		}
		return b
	}
	f.Add(frames(&boundary.Ready{Workers: 1, Addresses: []string{"a.b"}}))
	f.Add(frames(&boundary.Ready{Workers: 1, Addresses: []string{"a.b", "bad address"}},
		&boundary.Reply{Token: 7, Body: []byte("x")}, &boundary.Fail{Token: 1, Kind: boundary.FailPanic},
		&boundary.Log{Level: 4, Message: "m", Attrs: []boundary.Attr{{Key: "k", Value: "v"}}},
		&boundary.StorePut{CallID: 1, Key: "../../etc/passwd", Blob: []byte("b")},
		&boundary.StoreGet{CallID: 2, Key: "k"}, &boundary.Send{Address: "x.y", Body: []byte("z")},
		&boundary.Request{CallID: 3, Address: "nobody.here"}, &boundary.HealthStatus{ID: 99},
		&boundary.Stopped{}, &boundary.Ready{}))
	f.Add(frames(&boundary.Fatal{Message: "no"}))
	f.Add([]byte{0, 0, 0, 1, 0x40})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, stream []byte) {
		serve := hostileImage(func(_ *boundary.Conn, w io.Writer) error {
			_, err := w.Write(stream)
			return err // and the stream ends
		})
		b, _ := bus.New()
		defer b.Close(context.Background())
		store, _ := NewFileStore(filepath.Join(t.TempDir(), "state"))
		e, err := New(Config{Simulation: testRoot, Name: "hostile", Backend: NewInProc(serve), Bus: b, Store: store, Issuer: nil,
			StartTimeout: 2 * time.Second, RestartBackoff: time.Hour, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			return
		}
		probeAndStop(t, e)
	})
}

// hostileImage is the serve function of an inproc image that does the
// handshake, takes Init and then runs act on the connection (and the raw
// stream to the host), whatever act sends.
func hostileImage(act func(c *boundary.Conn, w io.Writer) error) func(ctx context.Context, r io.Reader, w io.Writer) error {
	return func(ctx context.Context, r io.Reader, w io.Writer) error {
		c, err := boundary.NewConn(ctx, r, w, boundary.RoleEnclave, boundary.Options{})
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Recv(); err != nil { // Init
			return err
		}
		return act(c, w)
	}
}

// FuzzLoadMetadata loads images whose metadata file holds arbitrary bytes.
func FuzzLoadMetadata(f *testing.F) {
	f.Add([]byte(`{"format":1,"measurement":"00","signer":"00"}`))
	f.Add([]byte(`{"format":1,"measurement":"` + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" + `","signer":"` + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" + `"}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, meta []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "img")
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+MetadataSuffix, meta, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := Load(path)
		if err == nil && img.Measurement.String() != img.Meta.Measurement {
			t.Fatalf("loaded an image whose measurement does not match: %+v", img.Meta)
		}
	})
}

// FuzzParseSize checks ParseSize on arbitrary text.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512M", "1G", "65536", "64K", "", "-1", "9999999999G"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && (n <= 0 || n > 1<<40) {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}

// probeAndStop asks an enclave a hostile image runs in for its health
// (briefly: it may never answer) and stops it; a host that cannot stop it
// fails t.
func probeAndStop(t *testing.T, e *Enclave) {
	t.Helper()
	hctx, hcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_ = e.Health(hctx)
	hcancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
