package boundary

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/wire"
)

// samples returns one populated message of every type.
func samples() []Message {
	h := map[string]string{"content-type": "application/json", "x": ""}
	return []Message{
		&Init{Identity: Identity{MREnclave: [32]byte{1, 2}, MRSigner: [32]byte{3}, ProductID: 7, SVN: 2}, Name: "counter", Instance: 3, SealMode: SealSimulated, SealPolicy: 2, SealSecret: []byte("s3cret"), Config: []byte(`{"a":1}`)},
		&Deliver{Token: 42, Kind: wire.KindRequest, Timeout: 3 * time.Second, Address: "counter.inc", Headers: h, Body: []byte("hello")},
		&Deliver{Kind: wire.KindPublish, Address: "news", Body: []byte("x")},
		&Deliver{Token: 43, Kind: wire.KindSend, Address: "jobs", Body: []byte("durable")},
		&RequestResult{CallID: 9, Headers: h, Body: []byte("answer")},
		&RequestResult{CallID: 10, Failure: wire.FailureRecipient, Code: -3, Message: "nope"},
		&StoreResult{CallID: 11, Found: true, Blob: []byte("sealed")},
		&StoreResult{CallID: 12, Error: "disk full"},
		&EvidenceResult{CallID: 13, EvidenceType: "simulated", Quote: []byte("quote")},
		&Health{ID: 99},
		&Shutdown{Grace: time.Second, Reason: "rolling restart"},
		&Ready{Workers: 8, Addresses: []string{"counter.inc", "counter.get"}},
		&Reply{Token: 42, Headers: h, Body: []byte("1")},
		&Done{Token: 43},
		&Fail{Token: 42, Kind: FailPanic, Code: 500, Message: "handler panic: boom"},
		&Send{Address: "audit", Headers: h, Body: []byte("e")},
		&Publish{Address: "events", Body: []byte("p")},
		&Request{CallID: 5, Timeout: time.Second, Address: "users.get", Headers: h, Body: []byte("u")},
		&Log{Level: slog.LevelWarn, Message: "careful", Attrs: []Attr{{"user", "alice"}, {"n", "3"}}},
		&StorePut{CallID: 6, Key: "k", Blob: []byte("blob")},
		&StorePut{Key: "s1.0123456789abcdef0123456789abcdef01234567", Blob: []byte("posted blob")},
		&StoreGet{CallID: 7, Key: "k"},
		&GetEvidence{CallID: 8, ReportData: [64]byte{1, 2, 3}},
		&HealthStatus{ID: 99, Healthy: true, Running: 2, Queued: 1, Workers: 8, Detail: "ok"},
		&Stopped{Abandoned: 1, Message: "drained"},
		&Fatal{Message: "init failed"},
	}
}

func TestRoundTripEveryType(t *testing.T) {
	seen := map[Type]bool{}
	for _, m := range samples() {
		f := AppendFrame(nil, m)
		if int(binary.BigEndian.Uint32(f)) != len(f)-4 {
			t.Fatalf("%s: bad length prefix", m.Type())
		}
		got, err := Decode(f[4:], Limits{})
		if err != nil {
			t.Fatalf("%s: %v", m.Type(), err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%s: got %+v, want %+v", m.Type(), got, m)
		}
		seen[m.Type()] = true
	}
	for ty, ft := range frameTypes {
		if ft.make != nil && !seen[Type(ty)] {
			t.Errorf("no sample of %s", Type(ty))
		}
	}
}

func TestDecodeErrorsNameTheField(t *testing.T) {
	frame := func(m Message) []byte { return AppendFrame(nil, m)[4:] }
	good := frame(&Deliver{Token: 1, Kind: wire.KindRequest, Address: "a.b", Headers: map[string]string{"k": "v"}, Body: []byte("x")})
	// layout: type(1) token(8) kind(1) timeout(8) addrlen(4) "a.b"(3) hcount(4) klen(4) k vlen(4) v bodylen(4) x
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := []struct {
		name  string
		b     []byte
		lim   Limits
		field string
		err   error
	}{
		{"unknown type", []byte{0x30}, Limits{}, "type", ErrUnknownType},
		{"empty", nil, Limits{}, "type", ErrTruncated},
		{"trailing", append(bytes.Clone(good), 0), Limits{}, "", ErrTrailingBytes},
		{"truncated body", good[:len(good)-1], Limits{}, "body", ErrTruncated},
		{"bad kind", mut(func(b []byte) []byte { b[9] = 7; return b }), Limits{}, "kind", ErrInvalidValue},
		{"request without token", mut(func(b []byte) []byte { b[8] = 0; return b }), Limits{}, "token", ErrInvalidValue},
		{"done without token", frame(&Done{}), Limits{}, "token", ErrInvalidValue},
		{"bad utf8 address", mut(func(b []byte) []byte { b[22] = 0xff; return b }), Limits{}, "address", ErrInvalidUTF8},
		{"address too long", good, Limits{MaxAddress: 2}, "address", ErrTooLong},
		{"too many headers", frame(&Reply{Token: 1, Headers: map[string]string{"a": "", "b": ""}}), Limits{MaxHeaders: 1}, "headers", ErrTooLong},
		{"header value too long", frame(&Reply{Token: 1, Headers: map[string]string{"a": "xyz"}}), Limits{MaxString: 2}, "headers[0].value", ErrTooLong},
		{"negative timeout", mut(func(b []byte) []byte { b[10] = 0x80; return b }), Limits{}, "timeout", ErrInvalidValue},
		{"empty header key", frame(&Reply{Token: 1, Headers: map[string]string{"": "v"}}), Limits{}, "headers[0].key", ErrEmpty},
		{"zero reply token", frame(&Reply{}), Limits{}, "token", ErrInvalidValue},
		{"bad bool", mut2(frame(&StoreResult{CallID: 1}), 9, 2), Limits{}, "found", ErrInvalidValue},
		{"bad fail kind", frame(&Fail{Token: 1, Kind: 0}), Limits{}, "kind", ErrInvalidValue},
		{"empty address", frame(&Send{}), Limits{}, "address", ErrEmpty},
		{"huge header count", mut(func(b []byte) []byte { binary.BigEndian.PutUint32(b[25:], 200); return b }), Limits{}, "headers", ErrTruncated},
	}
	for _, c := range cases {
		_, err := Decode(c.b, c.lim)
		var de *DecodeError
		if !errors.As(err, &de) || !errors.Is(err, c.err) || de.Field != c.field {
			t.Errorf("%s: got %v (field %q), want field %q and %v", c.name, err, fieldOf(de), c.field, c.err)
		}
	}
	// Duplicate header keys.
	b := AppendFrame(nil, &Reply{Token: 1, Headers: map[string]string{"a": "1", "b": "2"}})[4:]
	b = bytes.Replace(b, []byte{0, 0, 0, 1, 'b'}, []byte{0, 0, 0, 1, 'a'}, 1)
	if _, err := Decode(b, Limits{}); !errors.Is(err, ErrDuplicate) || !strings.Contains(err.Error(), "headers[") {
		t.Errorf("duplicate: %v", err)
	}
}

func mut2(b []byte, i int, v byte) []byte { b[i] = v; return b }

func fieldOf(e *DecodeError) string {
	if e == nil {
		return "<nil>"
	}
	return e.Field
}

func pipes() (hostR, enclR *io.PipeReader, hostW, enclW *io.PipeWriter) {
	enclR, hostW = io.Pipe()
	hostR, enclW = io.Pipe()
	return
}

func connPair(t testing.TB, opts Options) (host, encl *Conn) {
	t.Helper()
	host, encl, _ = pairWith(t, opts, opts)
	return host, encl
}

// pairWith connects a host Conn and an enclave Conn with their own options
// and returns the host's raw writer too, so that a test can put many frames
// in one write.
func pairWith(t testing.TB, hostOpts, enclOpts Options) (host, encl *Conn, raw io.Writer) {
	t.Helper()
	hr, er, hw, ew := pipes()
	errc := make(chan error, 1)
	go func() {
		var err error
		encl, err = NewConn(context.Background(), er, ew, RoleEnclave, enclOpts)
		errc <- err
	}()
	host, err := NewConn(context.Background(), hr, hw, RoleHost, hostOpts)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(); encl.Close() })
	return host, encl, hw
}

func TestConnConcurrentAndBatched(t *testing.T) {
	host, encl := connPair(t, Options{})
	const n = 2000
	// Enclave echoes every Deliver as a Reply from many goroutines.
	go func() {
		var wg sync.WaitGroup
		for {
			m, err := encl.Recv()
			if err != nil {
				wg.Wait()
				return
			}
			d := m.(*Deliver)
			wg.Go(func() { encl.Send(&Reply{Token: d.Token, Body: d.Body}) })
		}
	}()
	got := make(chan uint64, n)
	go func() {
		for {
			m, err := host.Recv()
			if err != nil {
				return
			}
			r := m.(*Reply)
			if string(r.Body) != string(binary.BigEndian.AppendUint64(nil, r.Token)) {
				t.Errorf("token %d body mismatch", r.Token)
			}
			got <- r.Token
		}
	}()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < n; i += 8 {
				tok := uint64(i + 1)
				if err := host.Send(&Deliver{Token: tok, Kind: wire.KindRequest, Address: "echo", Body: binary.BigEndian.AppendUint64(nil, tok)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for range n {
		select {
		case tok := <-got:
			if seen[tok] {
				t.Fatalf("token %d twice", tok)
			}
			seen[tok] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d replies", len(seen))
		}
	}
	s := encl.Stats()
	t.Logf("enclave sent %d frames in %d writes; host sent %d frames in %d writes", s.FramesSent, s.Writes, host.Stats().FramesSent, host.Stats().Writes)
	if s.FramesSent != n || s.Writes > s.FramesSent {
		t.Fatalf("stats %+v", s)
	}
}

func TestWrongDirectionRejected(t *testing.T) {
	host, encl := connPair(t, Options{})
	go host.Send(&Reply{Token: 1}) // an OCALL sent by the host: the enclave must refuse it
	_, err := encl.Recv()
	if !errors.Is(err, ErrWrongDirection) {
		t.Fatalf("got %v", err)
	}
	// The stream is still in sync.
	go host.Send(&Health{ID: 5})
	m, err := encl.Recv()
	if err != nil || m.(*Health).ID != 5 {
		t.Fatal(m, err)
	}
}

func TestFrameLimits(t *testing.T) {
	host, encl := connPair(t, Options{Limits: Limits{MaxFrame: 8 << 10}})
	if host.PeerMaxFrame() != 8<<10 {
		t.Fatal(host.PeerMaxFrame())
	}
	err := host.Send(&Deliver{Kind: wire.KindSend, Address: "a", Body: make([]byte, 9<<10)})
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v", err)
	}
	// A peer that ignores the limit: the reader refuses the length.
	hr, hw := io.Pipe()
	go func() {
		hw.Write(AppendFrame(nil, &Deliver{Kind: wire.KindSend, Address: "a", Body: make([]byte, 9<<10)}))
	}()
	_ = encl
	r := NewReader(hr, Limits{MaxFrame: 8 << 10})
	if _, err := r.Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v", err)
	}
}

func TestHandshakeMismatch(t *testing.T) {
	hello := func(magic string, version uint16, role Role) []byte {
		b := append([]byte(magic), 0, 0, byte(role), 0, 0, 0, 0x10, 0)
		binary.BigEndian.PutUint16(b[8:], version)
		return b
	}
	cases := []struct {
		name string
		peer []byte
		want error
	}{
		{"magic", hello("HTTP/1.1", ProtocolVersion, RoleHost), ErrBadMagic},
		{"version", hello(HandshakeMagic, ProtocolVersion+1, RoleHost), ErrVersionMismatch},
		{"role", hello(HandshakeMagic, ProtocolVersion, RoleEnclave), ErrRoleMismatch},
		{"short", []byte("CLB"), io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		var out bytes.Buffer
		_, err := NewConn(context.Background(), bytes.NewReader(c.peer), &out, RoleEnclave, Options{})
		var he *HandshakeError
		if !errors.As(err, &he) || !errors.Is(err, c.want) {
			t.Errorf("%s: got %v", c.name, err)
			continue
		}
		if c.name == "version" && !strings.Contains(err.Error(), fmt.Sprintf("version %d", ProtocolVersion)) {
			t.Errorf("version error does not say the versions: %v", err)
		}
		// The enclave answered with its own hello, so the host learns too.
		if c.name != "short" && !bytes.HasPrefix(out.Bytes(), []byte(HandshakeMagic)) {
			t.Errorf("%s: enclave did not answer", c.name)
		}
	}
}

func TestHandshakeContext(t *testing.T) {
	r, w := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := NewConn(ctx, r, w, RoleEnclave, Options{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}

func TestOverOSPipes(t *testing.T) {
	er, hw, _ := os.Pipe()
	hr, ew, _ := os.Pipe()
	errc := make(chan error, 1)
	go func() {
		c, err := NewConn(context.Background(), er, ew, RoleEnclave, Options{})
		if err != nil {
			errc <- err
			return
		}
		m, err := c.Recv()
		if err == nil {
			err = c.Send(&Reply{Token: m.(*Deliver).Token, Body: []byte("pong")})
		}
		errc <- err
	}()
	h, err := NewConn(context.Background(), hr, hw, RoleHost, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.Send(&Deliver{Token: 7, Kind: wire.KindRequest, Address: "ping"})
	m, err := h.Recv()
	if err != nil || string(m.(*Reply).Body) != "pong" {
		t.Fatal(m, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	h.Close()
	if _, err := h.Recv(); err == nil {
		t.Fatal("recv after close")
	}
	if err := h.Send(&Health{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
}

func TestPostFromReader(t *testing.T) {
	host, encl := connPair(t, Options{})
	go func() {
		for {
			m, err := encl.Recv()
			if err != nil {
				return
			}
			encl.Post(&HealthStatus{ID: m.(*Health).ID, Healthy: true})
		}
	}()
	go func() {
		for i := range 100 {
			host.Send(&Health{ID: uint64(i)})
		}
	}()
	for range 100 {
		if _, err := host.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if err := encl.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeErrorCarriesID(t *testing.T) {
	b := AppendFrame(nil, &Deliver{Token: 77, Kind: wire.KindSend, Address: "a\xff"})[4:]
	_, err := Decode(b, Limits{})
	var de *DecodeError
	if !errors.As(err, &de) || de.ID != 77 || de.Type != TypeDeliver || de.Field != "address" {
		t.Fatalf("got %#v", err)
	}
	b = AppendFrame(nil, &EvidenceResult{CallID: 5, EvidenceType: "\xff"})[4:]
	if _, err := Decode(b, Limits{}); !errors.As(err, &de) || de.ID != 5 || de.Field != "evidence_type" {
		t.Fatalf("got %#v", err)
	}
}

// TestReaderSplits: frames written back to back in one buffer come out of
// the Reader one by one.
func TestReaderSplits(t *testing.T) {
	var buf bytes.Buffer
	for _, m := range samples() {
		buf.Write(AppendFrame(nil, m))
	}
	r := NewReader(&buf, Limits{})
	for i, want := range samples() {
		got, err := r.Next()
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("frame %d: %+v %v", i, got, err)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	// A frame cut in the middle is an unexpected EOF, not a clean end.
	f := AppendFrame(nil, &Health{ID: 1})
	if _, err := NewReader(bytes.NewReader(f[:len(f)-1]), Limits{}).Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut frame: %v", err)
	}
}

// answerAll receives n Delivers on encl and answers each at once with a
// Reply, then keeps receiving until the stream ends.
func answerAll(encl *Conn, body []byte) {
	for {
		m, err := encl.Recv()
		if err != nil {
			return
		}
		encl.Send(&Reply{Token: m.(*Deliver).Token, Body: body})
	}
}

// batch returns n request Delivers, framed back to back.
func batch(n int) []byte {
	var b []byte
	for i := range n {
		b = AppendFrame(b, &Deliver{Token: uint64(i + 1), Kind: wire.KindRequest, Address: "a"})
	}
	return b
}

func sendBatch(t *testing.T, raw io.Writer, n int) {
	t.Helper()
	if _, err := raw.Write(batch(n)); err != nil {
		t.Fatal(err)
	}
}

// answerBatch sends n Delivers to a peer with opts in one write, lets it
// answer each at once with body, receives the answers (in order) and
// returns the answering side's counters.
func answerBatch(t *testing.T, opts Options, n int, body []byte) Stats {
	t.Helper()
	host, encl, raw := pairWith(t, Options{}, opts)
	go answerAll(encl, body)
	sendBatch(t, raw, n) // one write: the peer reads the whole batch at once
	for i := range n {
		m, err := host.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := m.(*Reply); !ok || r.Token != uint64(i+1) {
			t.Fatalf("answer %d: %#v", i, m)
		}
	}
	if err := encl.Flush(); err != nil { // the write counter moves after the write
		t.Fatal(err)
	}
	return encl.Stats()
}

func TestCorkAnswersABatchInFewWrites(t *testing.T) {
	const n = 20
	st := answerBatch(t, Options{Cork: true}, n, []byte("answer"))
	t.Logf("enclave: %d frames received in %d reads, %d answers in %d writes", st.FramesReceived, st.Reads, st.FramesSent, st.Writes)
	if want := uint64(n+corkFrames-1) / corkFrames; st.FramesSent != n || st.Writes != want {
		t.Fatalf("%d answers to one batch left in %d writes, want %d (%d per write)", st.FramesSent, st.Writes, want, corkFrames)
	}
	// Without Cork answers leave (nearly) one by one.
	if st := answerBatch(t, Options{}, n, []byte("answer")); st.Writes < n/2 {
		t.Fatalf("uncorked: %d answers in %d writes, want about one write each", st.FramesSent, st.Writes)
	}
}

func TestCorkBoundedByMaxPending(t *testing.T) {
	// Answers larger than MaxPending are not held back at all.
	const n = 10
	if st := answerBatch(t, Options{Cork: true, MaxPending: 64}, n, make([]byte, 100)); st.Writes < n/2 {
		t.Fatalf("%d answers over MaxPending left in %d writes, want about one write each", st.FramesSent, st.Writes)
	}
}

func TestFlushWritesCorkedFrames(t *testing.T) {
	// The enclave side holds answers while it has frames in hand; Flush
	// (before exiting, say) must write them anyway.
	host, encl, raw := pairWith(t, Options{}, Options{Cork: true})
	go raw.Write(batch(3)) // one write: the enclave reads all three at once
	for range 2 {          // the third stays in hand: the conn is corked
		if _, err := encl.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		encl.Send(&Fatal{Message: "going away"})
		done <- encl.Flush()
	}()
	got := make(chan Message, 1)
	go func() {
		m, _ := host.Recv()
		got <- m
	}()
	select {
	case m := <-got:
		if f, ok := m.(*Fatal); !ok || f.Message != "going away" {
			t.Fatalf("got %#v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a corked frame was never written by Flush")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSenderGathersIntactFrames queues frames from many goroutines through
// a gathering Sender (the host's writer) and decodes them all; after Close
// sends fail with ErrClosed.
func TestSenderGathersIntactFrames(t *testing.T) {
	pr, pw := io.Pipe()
	s := NewSender(pw, DefaultMaxFrame, SenderOptions{Gather: true, MaxPending: 1 << 20})
	const senders, each = 8, 50
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				token := uint64(g*each + i + 1)
				body := bytes.Repeat([]byte{byte(token)}, 1+int(token%7)*5000)
				send := s.Queue
				if i%4 == 0 {
					send = s.Send
				}
				if err := send(&Deliver{Token: token, Kind: wire.KindRequest, Address: "a.b", Body: body}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	r := NewReader(pr, Limits{})
	seen := map[uint64]bool{}
	for len(seen) < senders*each {
		m, err := r.Next()
		if err != nil {
			t.Fatalf("after %d frames: %v", len(seen), err)
		}
		d := m.(*Deliver)
		if seen[d.Token] || bytes.Count(d.Body, []byte{byte(d.Token)}) != len(d.Body) {
			t.Fatalf("frame %d corrupt or repeated", d.Token)
		}
		seen[d.Token] = true
	}
	wg.Wait()
	if st := s.Stats(); st.Frames != senders*each || st.Writes == 0 || st.Writes > st.Frames {
		t.Fatalf("stats %+v", st)
	}
	s.Close()
	if err := s.Queue(&Health{ID: 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("queue after close: %v", err)
	}
	if err := s.Flush(); err != nil {
		t.Fatalf("flush after close: %v", err)
	}
}
