package enclave

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cloister-dev/cloister/boundary"
)

// maxPendingBytes is how many encoded bytes may wait behind a write before
// senders block (back-pressure).
const maxPendingBytes = 4 << 20

// bigBatch is the size from which queued frames are written at once.
const bigBatch = 16 << 10

// frameWriter writes the host's frames to the enclave in batches. A frame
// sent while nothing else is in flight is written at once; otherwise it is
// queued and a writer goroutine, after letting the other runnable
// goroutines add theirs, writes everything queued in one system call. So
// under load many deliveries cross per write, and per enclave wake-up.
type frameWriter struct {
	w       io.Writer
	maxSize int // the peer's frame limit

	mu      sync.Mutex
	cond    sync.Cond
	pending []byte
	spare   []byte
	writing bool
	err     error

	kick chan struct{}
	done chan struct{}

	frames, writes atomic.Uint64
}

func newFrameWriter(w io.Writer, peerMax int) *frameWriter {
	f := &frameWriter{w: w, maxSize: peerMax, kick: make(chan struct{}, 1), done: make(chan struct{})}
	f.cond.L = &f.mu
	go f.loop()
	return f
}

// send queues m. With now set it writes at once when no write is in
// progress; otherwise the writer goroutine writes it with whatever else
// arrives meanwhile.
func (f *frameWriter) send(m boundary.Message, now bool) error {
	f.mu.Lock()
	for f.err == nil && f.writing && len(f.pending) >= maxPendingBytes {
		f.cond.Wait()
	}
	if f.err != nil {
		err := f.err
		f.mu.Unlock()
		return err
	}
	start := len(f.pending)
	f.pending = boundary.AppendFrame(f.pending, m)
	if n := len(f.pending) - start - 4; n > f.maxSize {
		f.pending = f.pending[:start]
		f.mu.Unlock()
		return fmt.Errorf("%w: %s frame of %d bytes, the enclave accepts %d", boundary.ErrFrameTooLarge, m.Type(), n, f.maxSize)
	}
	f.frames.Add(1)
	if f.writing {
		f.mu.Unlock()
		return nil
	}
	f.writing = true
	// Large frames gain nothing from waiting for company.
	if now || len(f.pending) >= bigBatch {
		return f.flushLocked()
	}
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
	return nil
}

// flushLocked writes until nothing is pending; called with f.mu held and
// f.writing set, returns with f.mu released.
func (f *frameWriter) flushLocked() error {
	var err error
	for len(f.pending) > 0 && f.err == nil {
		buf := f.pending
		f.pending = f.spare[:0]
		f.mu.Unlock()
		_, err = f.w.Write(buf)
		f.writes.Add(1)
		f.mu.Lock()
		// Keep the buffer for the next batch unless it is larger than any
		// batch should be: dropping it after each large batch made every
		// batch of large frames allocate and grow a new one (64 KiB frames,
		// 32 in flight, ran at a third of the speed of 1 in flight).
		if cap(buf) <= 2*maxPendingBytes {
			f.spare = buf[:0]
		} else {
			f.spare = nil // never share an array with f.pending
		}
		if err != nil {
			f.err = fmt.Errorf("enclave: write to the enclave: %w", err)
			err = f.err
		}
		f.cond.Broadcast()
	}
	f.writing = false
	f.cond.Broadcast()
	f.mu.Unlock()
	return err
}

func (f *frameWriter) loop() {
	for {
		select {
		case <-f.kick:
		case <-f.done:
			return
		}
		// Let the other runnable goroutines (requesters woken by the last
		// replies, the node's event loops) queue their frames first: fewer,
		// larger writes cost the enclave fewer wake-ups.
		for range 3 {
			runtime.Gosched()
		}
		f.mu.Lock()
		f.flushLocked()
	}
}

// close fails later sends and stops the writer goroutine.
func (f *frameWriter) close() {
	f.mu.Lock()
	if f.err == nil {
		f.err = boundary.ErrClosed
	}
	f.cond.Broadcast()
	f.mu.Unlock()
	select {
	case <-f.done:
	default:
		close(f.done)
	}
}

// closed reports whether err means the writer was closed.
func closed(err error) bool { return errors.Is(err, boundary.ErrClosed) }
