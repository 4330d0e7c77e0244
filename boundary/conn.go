package boundary

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// ProtocolVersion is the boundary protocol version this package speaks. Both
// sides of a connection must speak the same version.
//
// Version 2 added acknowledged sends: a send or publish Deliver may carry a
// token, answered by Done (or Fail).
//
// Version 3 added posted store writes: a StorePut with CallID 0 gets no
// StoreResult, and the host makes it durable before it acts on any later
// frame of the enclave's stream that the write must precede (see "Ordered
// store writes" in the package doc). A version-2 host would answer such a
// put and release replies before the write is on disk, so the versions
// refuse each other.
//
// Version 4 moved the host's settings for an image into Init: the worker
// count and the manifest service to join travel there (they were
// environment variables). A version-3 image would not read them, so the
// versions refuse each other.
const ProtocolVersion uint16 = 4

// HandshakeMagic opens each side's hello.
const HandshakeMagic = "CLBNDRY\n"

// HelloSize is the size of each side's handshake hello: the bytes that
// cross before the first frame. A transport that changes medium after the
// handshake (package boundary/shm) switches after this many bytes each way.
const HelloSize = 16

// Role is a connection side.
type Role uint8

// Roles.
const (
	RoleHost    Role = 1 // sends ECALLs, receives OCALLs
	RoleEnclave Role = 2 // receives ECALLs, sends OCALLs
)

// String returns "host" or "enclave".
func (r Role) String() string {
	switch r {
	case RoleHost:
		return "host"
	case RoleEnclave:
		return "enclave"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// accepts reports whether a side of role r (host or enclave) may receive
// frames of type t.
func (r Role) accepts(t Type) bool { return t.IsECALL() == (r == RoleEnclave) }

// ---- Reader ----

// Reader decodes frames from a byte stream. It is not safe for concurrent
// use; run one reading goroutine per stream.
type Reader struct {
	r    *bufio.Reader
	c    codec // decodes, under the Reader's limits
	role Role  // 0: accept every type
	hdr  [4]byte
}

// NewReader returns a Reader of frames from r under lim. It reads ahead, so
// do not read r otherwise afterwards.
func NewReader(r io.Reader, lim Limits) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), c: codec{lim: lim.WithDefaults()}}
}

// ReadFrame reads the next raw frame (type byte + payload) into a new slice.
// It returns io.EOF at a clean end of stream, io.ErrUnexpectedEOF inside a
// frame, and an error wrapping ErrFrameTooLarge for an oversized length (the
// stream is unusable afterwards).
func (r *Reader) ReadFrame() ([]byte, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(r.hdr[:])
	if n == 0 {
		return nil, &DecodeError{Field: "length", Err: fmt.Errorf("%w: zero-length frame", ErrTruncated)}
	}
	if uint64(n) > uint64(r.c.lim.MaxFrame) {
		return nil, fmt.Errorf("%w: peer sent a %d-byte frame, limit %d", ErrFrameTooLarge, n, r.c.lim.MaxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// complete reports whether a whole frame is buffered, so that the next
// ReadFrame will not wait for input.
func (r *Reader) complete() bool {
	n := r.r.Buffered()
	if n < 4 {
		return false
	}
	h, _ := r.r.Peek(4)
	return uint64(n) >= 4+uint64(binary.BigEndian.Uint32(h))
}

// Next reads and decodes the next frame. A *DecodeError leaves the stream in
// sync (the bad frame was consumed), so Next may be called again; any other
// error ends the stream. Byte-slice fields of the message are owned by it.
func (r *Reader) Next() (Message, error) {
	b, err := r.ReadFrame()
	if err != nil {
		return nil, err
	}
	t := Type(b[0])
	if r.role != 0 && frameTypes[t].make != nil && !r.role.accepts(t) {
		return nil, &DecodeError{Type: t, Field: "type", Err: fmt.Errorf("%w: %s received by the %s", ErrWrongDirection, t, r.role)}
	}
	return r.c.decode(b)
}

// appendChecked appends m as a frame to dst with c, or refuses a frame
// larger than maxFrame (leaving dst as it was).
func (c *codec) appendChecked(dst []byte, m Message, maxFrame int) ([]byte, error) {
	start := len(dst)
	dst = c.appendFrame(dst, m)
	if n := len(dst) - start - 4; n > maxFrame {
		return dst[:start], fmt.Errorf("%w: %s frame of %d bytes, peer accepts %d", ErrFrameTooLarge, m.Type(), n, maxFrame)
	}
	return dst, nil
}

// ---- handshake ----

func appendHello(b []byte, role Role, maxFrame int) []byte {
	b = append(b, HandshakeMagic...)
	b = binary.BigEndian.AppendUint16(b, ProtocolVersion)
	b = append(b, byte(role), 0)
	return binary.BigEndian.AppendUint32(b, uint32(maxFrame))
}

func checkHello(h []byte, local Role) (peerMax int, err error) {
	if string(h[:8]) != HandshakeMagic {
		return 0, &HandshakeError{LocalVersion: ProtocolVersion, Err: ErrBadMagic, Detail: fmt.Sprintf("got %q", h[:8])}
	}
	v := binary.BigEndian.Uint16(h[8:])
	if v != ProtocolVersion {
		return 0, &HandshakeError{LocalVersion: ProtocolVersion, PeerVersion: v, Err: ErrVersionMismatch}
	}
	if r := Role(h[10]); r == local || (r != RoleHost && r != RoleEnclave) {
		return 0, &HandshakeError{LocalVersion: ProtocolVersion, PeerVersion: v, Err: ErrRoleMismatch, Detail: fmt.Sprintf("this side is %s, peer says %s", local, r)}
	}
	m := binary.BigEndian.Uint32(h[12:])
	if m < MinMaxFrame || m > MaxMaxFrame {
		return 0, &HandshakeError{LocalVersion: ProtocolVersion, PeerVersion: v, Err: ErrTooLong, Detail: fmt.Sprintf("peer frame limit %d outside [%d, %d]", m, MinMaxFrame, MaxMaxFrame)}
	}
	return int(m), nil
}

// ---- Conn ----

// Options configure a Conn.
type Options struct {
	// Limits bound what this side accepts; Limits.MaxFrame is announced to
	// the peer.
	Limits Limits
	// MaxPending is how many encoded bytes Send lets queue behind a write in
	// progress before it blocks the caller (back-pressure). Default 1 MiB.
	MaxPending int
	// Cork holds back frames sent while the receiving goroutine still has
	// complete frames in hand (read but not yet returned by Recv): they are
	// written together, in one write, when Recv runs out of input, when 8
	// frames are held (so that the peer can start on them), when MaxPending
	// bytes have queued, or on Flush. Answers to a batch of calls that
	// arrived together then leave together, which saves the peer a wake-up
	// per answer. Recv never writes itself; a corked batch is written by a
	// goroutine of its own. Keep calling Recv while frames are held.
	Cork bool
}

// Stats count a Conn's traffic.
type Stats struct {
	FramesSent, BytesSent, Writes uint64 // Writes: system-level writes; FramesSent/Writes is the batching factor
	FramesReceived                uint64
	// Reads: system-level reads; FramesReceived/Reads is the peer's
	// batching factor as seen by this side.
	Reads uint64
}

// countingReader counts the reads of its underlying reader.
type countingReader struct {
	r io.Reader
	n atomic.Uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.n.Add(1)
	return c.r.Read(p)
}

// Conn is one side of a boundary connection over a byte stream: a
// handshake, then Send (any goroutine, batched by a Sender) and Recv (one
// goroutine).
type Conn struct {
	in      *countingReader
	r       *Reader
	w       io.Writer
	role    Role
	peerMax int
	opts    Options
	closers []io.Closer
	out     *Sender // after the handshake

	framesRecv atomic.Uint64
	closeOnce  sync.Once
}

// NewConn performs the handshake as role over r and w and returns the
// connection. The host side writes its hello first; the enclave side reads
// first and always answers, so both learn of a mismatch. If ctx ends first,
// r and w are closed (when they are io.Closers) and ctx's error returned.
func NewConn(ctx context.Context, r io.Reader, w io.Writer, role Role, opts Options) (*Conn, error) {
	if role != RoleHost && role != RoleEnclave {
		return nil, fmt.Errorf("boundary: invalid role %d", role)
	}
	lim := opts.Limits.WithDefaults()
	if lim.MaxFrame < MinMaxFrame || lim.MaxFrame > MaxMaxFrame {
		return nil, fmt.Errorf("boundary: MaxFrame %d outside [%d, %d]", lim.MaxFrame, MinMaxFrame, MaxMaxFrame)
	}
	c := &Conn{in: &countingReader{r: r}, w: w, role: role, opts: opts}
	c.r = NewReader(c.in, lim)
	c.r.role = role
	if cl, ok := r.(io.Closer); ok {
		c.closers = append(c.closers, cl)
	}
	if cl, ok := w.(io.Closer); ok && any(w) != any(r) {
		c.closers = append(c.closers, cl)
	}
	done := make(chan error, 1)
	go func() { done <- c.handshake(lim.MaxFrame) }()
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
		c.out = NewSender(w, c.peerMax, SenderOptions{MaxPending: opts.MaxPending, cork: opts.Cork})
		return c, nil
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("boundary: handshake: %w", ctx.Err())
	}
}

func (c *Conn) handshake(maxFrame int) error {
	hello := appendHello(make([]byte, 0, HelloSize), c.role, maxFrame)
	var peer [HelloSize]byte
	read := func() error {
		if _, err := io.ReadFull(c.r.r, peer[:]); err != nil {
			return &HandshakeError{LocalVersion: ProtocolVersion, Err: fmt.Errorf("read peer hello: %w", err)}
		}
		return nil
	}
	write := func() error {
		if _, err := c.w.Write(hello); err != nil {
			return &HandshakeError{LocalVersion: ProtocolVersion, Err: fmt.Errorf("write hello: %w", err)}
		}
		return nil
	}
	var err error
	if c.role == RoleHost {
		if err = write(); err == nil {
			err = read()
		}
	} else {
		if err = read(); err == nil {
			err = write()
		}
	}
	if err != nil {
		return err
	}
	c.peerMax, err = checkHello(peer[:], c.role)
	return err
}

// Role returns this side's role.
func (c *Conn) Role() Role { return c.role }

// PeerMaxFrame returns the frame limit the peer announced.
func (c *Conn) PeerMaxFrame() int { return c.peerMax }

// Send encodes m and writes it, batched with frames other goroutines send at
// the same time (see Sender.Send). Safe for concurrent use.
func (c *Conn) Send(m Message) error { return c.out.Send(m) }

// Post is Send that never blocks on I/O (see Sender.Post): use it from the
// reading goroutine.
func (c *Conn) Post(m Message) error { return c.out.Post(m) }

// Flush writes every frame queued so far, corked ones included, and waits
// until they are written (or the connection failed).
func (c *Conn) Flush() error { return c.out.Flush() }

// Recv reads the next frame. Call it from one goroutine only. It returns
// io.EOF when the peer closed the stream cleanly between frames. A
// *DecodeError leaves the stream in sync; the caller decides whether to go
// on. A frame type of the wrong direction is a *DecodeError wrapping
// ErrWrongDirection.
func (c *Conn) Recv() (Message, error) {
	if c.opts.Cork && !c.r.complete() {
		c.out.setCorked(false) // about to wait for input: let held frames go
	}
	m, err := c.r.Next()
	if err == nil {
		c.framesRecv.Add(1)
	}
	if c.opts.Cork && err == nil && c.r.complete() {
		c.out.setCorked(true)
	}
	return m, err
}

// Stats returns traffic counters.
func (c *Conn) Stats() Stats {
	o := c.out.Stats()
	return Stats{
		FramesSent: o.Frames, BytesSent: o.Bytes, Writes: o.Writes,
		FramesReceived: c.framesRecv.Load(), Reads: c.in.n.Load(),
	}
}

// Close makes later Sends fail with ErrClosed and closes the underlying
// reader and writer if they are io.Closers (which unblocks a pending Recv
// for pipes and sockets). Frames queued but not yet written are dropped;
// call Flush first to keep them.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.out != nil {
			c.out.Close()
		}
		for _, cl := range c.closers {
			if e := cl.Close(); e != nil && err == nil {
				err = e
			}
		}
	})
	return err
}
