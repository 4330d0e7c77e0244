package boundary

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// SenderOptions configure a Sender.
type SenderOptions struct {
	// MaxPending is how many encoded bytes may queue behind a write in
	// progress before senders block (back-pressure). Default 1 MiB.
	MaxPending int
	// Gather starts a writer goroutine for Queue: a frame queued while no
	// write is in progress is written by it after the other runnable
	// goroutines had a chance to queue theirs, so that frames sent at about
	// the same time by many goroutines cross in one write (and cost the
	// peer one wake-up). Stop it with Close.
	Gather bool
	// GatherMax is the queued size from which Queue writes at once instead
	// of waiting for company (large frames gain nothing from it). Default
	// 16 KiB.
	GatherMax int
	// Cork holds frames back while the peer's frames are still being
	// handled (see Options.Cork); Conn sets it.
	cork bool
}

// Sender encodes frames and writes them to a stream in batches; it is the
// sending half of a Conn, and what a side that reads its stream otherwise
// uses to send. Safe for concurrent use: while one goroutine writes, frames
// sent by others collect in a buffer and go out in the next single write.
type Sender struct {
	w       io.Writer
	peerMax int
	maxPend int
	gathMax int

	mu      sync.Mutex
	cond    sync.Cond
	pending []byte
	spare   []byte
	writing bool
	cork    bool  // SenderOptions.cork
	corked  bool  // cork, and the reader has complete frames in hand
	nCorked int   // frames in pending
	err     error // sticky write error or ErrClosed
	enc     codec // encodes frames into pending

	kick      chan struct{} // Gather: wake the writer goroutine
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	frames, bytes, writes atomic.Uint64
}

// NewSender returns a Sender to w that refuses frames larger than peerMax
// (the limit the peer announced; DefaultMaxFrame when ≤ 0).
func NewSender(w io.Writer, peerMax int, opts SenderOptions) *Sender {
	if peerMax <= 0 {
		peerMax = DefaultMaxFrame
	}
	s := &Sender{w: w, peerMax: peerMax, maxPend: opts.MaxPending, gathMax: opts.GatherMax, cork: opts.cork,
		done: make(chan struct{})}
	if s.maxPend <= 0 {
		s.maxPend = 1 << 20
	}
	if s.gathMax <= 0 {
		s.gathMax = 16 << 10
	}
	s.cond.L = &s.mu
	if opts.Gather {
		s.kick = make(chan struct{}, 1)
		go s.gatherLoop()
	}
	return s
}

// how a frame that finds no write in progress is written.
const (
	writeInline = iota // by the sending goroutine, now
	writeAsync         // by a new goroutine, now
	writeGather        // by the gathering goroutine, after others queued theirs
)

// Send encodes m and writes it, batched with frames other goroutines send at
// the same time: if no write is in progress the caller writes everything
// queued; otherwise m is queued for the writing goroutine and Send returns
// (blocking only while more than MaxPending bytes are queued). An error from
// a write is returned to the writer and to every later Send. A frame larger
// than the peer's limit fails with ErrFrameTooLarge and nothing is sent.
func (s *Sender) Send(m Message) error { return s.send(m, writeInline) }

// Post is Send that never blocks on I/O: if no write is in progress it
// starts one in a new goroutine. Use it from a reading goroutine, which must
// never wait for the peer (both sides waiting on full pipes deadlock).
func (s *Sender) Post(m Message) error { return s.send(m, writeAsync) }

// Queue is Send for a frame that may wait for company: unless GatherMax
// bytes are queued, the gathering goroutine writes it (see
// SenderOptions.Gather; without Gather, Queue is Send).
func (s *Sender) Queue(m Message) error {
	if s.kick == nil {
		return s.send(m, writeInline)
	}
	return s.send(m, writeGather)
}

func (s *Sender) send(m Message, how int) error {
	s.mu.Lock()
	for how != writeAsync && s.err == nil && s.writing && len(s.pending) >= s.maxPend {
		s.cond.Wait()
	}
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	var err error
	s.pending, err = s.enc.appendChecked(s.pending, m, s.peerMax)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.frames.Add(1)
	s.nCorked++
	if s.writing || (s.corked && len(s.pending) < s.maxPend && s.nCorked < corkFrames) {
		s.mu.Unlock()
		return nil
	}
	if how == writeGather && len(s.pending) < s.gathMax {
		s.mu.Unlock()
		select {
		case s.kick <- struct{}{}:
		default:
		}
		return nil
	}
	s.writing = true
	if how == writeAsync {
		s.mu.Unlock()
		go s.flushAsync()
		return nil
	}
	return s.flushLocked()
}

// corkFrames is how many frames Cork holds back at most: then they are
// written, so that the peer starts on them while the rest are handled.
const corkFrames = 8

func (s *Sender) flushAsync() {
	s.mu.Lock()
	s.flushLocked()
}

// gatherLoop writes what Queue left, after letting the other runnable
// goroutines (requesters woken by the last replies, event loops) queue
// their frames: fewer, larger writes cost the peer fewer wake-ups.
func (s *Sender) gatherLoop() {
	for {
		select {
		case <-s.kick:
		case <-s.done:
			return
		}
		for range 3 {
			runtime.Gosched()
		}
		s.mu.Lock()
		if s.writing || len(s.pending) == 0 || s.err != nil {
			s.mu.Unlock()
			continue
		}
		s.writing = true
		s.flushLocked()
	}
}

// setCorked records whether the reader has complete frames in hand;
// uncorking starts the write of whatever was held back.
func (s *Sender) setCorked(corked bool) {
	s.mu.Lock()
	if s.corked == corked {
		s.mu.Unlock()
		return
	}
	s.corked = corked
	if corked || s.writing || len(s.pending) == 0 || s.err != nil {
		s.mu.Unlock()
		return
	}
	s.writing = true
	s.mu.Unlock()
	go s.flushAsync()
}

// flushLocked writes pending batches until none is left; called with s.mu
// held and s.writing set; returns with s.mu released.
func (s *Sender) flushLocked() error {
	var err error
	for len(s.pending) > 0 && s.err == nil {
		buf := s.pending
		s.pending = s.spare[:0]
		s.nCorked = 0
		s.mu.Unlock()
		_, err = s.w.Write(buf)
		s.writes.Add(1)
		s.bytes.Add(uint64(len(buf)))
		s.mu.Lock()
		// Keep the buffer for the next batch unless it is larger than any
		// batch should be: dropping it after each large batch made every
		// batch of large frames allocate and grow a new one (64 KiB frames,
		// 32 in flight, ran at a third of the speed of 1 in flight).
		if cap(buf) <= 2*s.maxPend {
			s.spare = buf[:0]
		} else {
			s.spare = nil // never share an array with s.pending
		}
		if err != nil {
			if s.err == nil {
				s.err = fmt.Errorf("boundary: write: %w", err)
			}
			err = s.err
		}
		s.cond.Broadcast()
	}
	s.writing = false
	s.cond.Broadcast()
	s.mu.Unlock()
	return err
}

// Flush writes every frame queued so far, corked ones included, and waits
// until they are written (or the stream failed). It returns nil once the
// Sender is closed.
func (s *Sender) Flush() error {
	s.mu.Lock()
	if s.err == nil && !s.writing && len(s.pending) > 0 {
		s.writing = true
		s.flushLocked()
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	for s.err == nil && (s.writing || len(s.pending) > 0) {
		s.cond.Wait()
	}
	if errors.Is(s.err, ErrClosed) {
		return nil
	}
	return s.err
}

// Close makes later sends fail with ErrClosed, drops frames not yet
// written, and stops the gathering goroutine. It does not close the
// stream.
func (s *Sender) Close() {
	s.mu.Lock()
	if s.err == nil {
		s.err = ErrClosed
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	s.closeOnce.Do(func() { close(s.done) })
}

// SenderStats count a Sender's traffic.
type SenderStats struct {
	// Frames sent; Writes: system-level writes (Frames/Writes is the
	// batching factor); Bytes written.
	Frames, Writes, Bytes uint64
}

// Stats returns the counters.
func (s *Sender) Stats() SenderStats {
	return SenderStats{Frames: s.frames.Load(), Writes: s.writes.Load(), Bytes: s.bytes.Load()}
}
