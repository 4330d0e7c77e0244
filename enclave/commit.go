package enclave

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cloister-dev/cloister/boundary"
)

// Bounds of what a committer queues before the reading goroutine stops
// reading the enclave's stream (back-pressure on the enclave).
const (
	maxQueuedWriteBytes = 64 << 20
	maxQueuedWrites     = 16384
	maxHeldFrames       = 4096
)

// ErrStoreWrite is wrapped by the cause of an instance ended because the
// host could not make one of its protected-storage writes durable.
var ErrStoreWrite = errors.New("enclave: protected storage write failed")

// committer applies an instance's store writes in stream order, in batches
// with one durable commit each (group commit), and holds back every frame
// the enclave wrote after a write until that write is durable.
//
// The reading goroutine numbers the writes as they arrive (put); a frame
// that must follow the writes before it (a reply, Done, send, publish,
// request or store read) is held with the number of the last write before
// it (hold) unless all of them are durable already and nothing is held.
// The writer goroutine takes every write queued so far as one batch,
// writes it (Store.PutBatch: blobs synced, renamed, directory synced), then
// advances the durable number and releases the held frames it covers, in
// their stream order. A failed batch releases nothing more: the frames held
// behind it are failed as unavailable, the writes after it are dropped and
// the instance is ended (its cache may hold the lost write); the
// supervisor restarts it from what is durable.
type committer struct {
	s *session

	mu        sync.Mutex
	cond      sync.Cond // the writer waits for work, the reader for room
	queue     []queuedWrite
	queued    int    // bytes in queue
	seq       uint64 // writes received
	durable   uint64 // writes made durable
	held      []heldFrame
	releasing bool  // the writer is acting on released frames
	writing   bool  // the writer is writing a batch
	failed    error // a batch failed: nothing more is written or released
	closed    bool  // the session ended: the writer drains and exits
}

// queuedWrite is one store write: posted (callID 0) or awaiting a
// StoreResult.
type queuedWrite struct {
	callID uint64
	key    string
	blob   []byte
}

// heldFrame is a frame that may be acted on once write number after is
// durable.
type heldFrame struct {
	after uint64
	m     boundary.Message
}

func newCommitter(s *session) *committer {
	c := &committer{s: s}
	c.cond.L = &c.mu
	return c
}

// put queues a store write (reading goroutine). With too many writes or
// bytes queued it waits for the writer, which stops reading the enclave.
func (c *committer) put(m *boundary.StorePut) {
	c.mu.Lock()
	for (len(c.queue) >= maxQueuedWrites || c.queued > 0 && c.queued+len(m.Blob) > maxQueuedWriteBytes) && !c.closed && c.failed == nil {
		c.cond.Wait()
	}
	if c.failed != nil {
		c.mu.Unlock()
		return
	}
	c.seq++
	c.queue = append(c.queue, queuedWrite{callID: m.CallID, key: m.Key, blob: m.Blob})
	c.queued += len(m.Blob)
	if m.CallID != 0 {
		// The answer of a waiting put is released like a held frame.
		c.held = append(c.held, heldFrame{after: c.seq, m: &boundary.StoreResult{CallID: m.CallID}})
	}
	c.mu.Unlock()
	c.cond.Broadcast()
}

// hold reports whether m must wait for writes (reading goroutine); if so it
// keeps m, to be acted on in stream order once they are durable (or
// dropped once a write failed). With too many frames held it waits.
func (c *committer) hold(m boundary.Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed != nil {
		c.dropped(m)
		return true
	}
	if c.seq == c.durable && len(c.held) == 0 && !c.releasing {
		return false
	}
	for len(c.held) >= maxHeldFrames && !c.closed && c.failed == nil {
		c.cond.Wait()
	}
	c.held = append(c.held, heldFrame{after: c.seq, m: m})
	return true
}

// dropped answers what it can of a frame that will never be acted on (under
// c.mu): the delivery it answers fails as unavailable.
func (c *committer) dropped(m boundary.Message) {
	var token uint64
	switch m := m.(type) {
	case *boundary.Reply:
		token = m.Token
	case *boundary.Fail:
		token = m.Token
	case *boundary.Done:
		token = m.Token
	default:
		return
	}
	if w := c.s.take(token); w != nil {
		w.abort(fmt.Sprintf("enclave %s: the answer was not released: %v", c.s.e.name, c.failed))
	}
}

// close ends the committer with the session: the writer writes what was
// queued and exits; readers waiting for room go on.
func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cond.Broadcast()
}

// run is the writer goroutine.
func (c *committer) run() {
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closed {
			c.cond.Wait()
		}
		if len(c.queue) == 0 || c.failed != nil {
			c.mu.Unlock()
			return
		}
		batch, last := c.queue, c.seq
		c.queue, c.queued, c.writing = nil, 0, true
		c.mu.Unlock()
		c.cond.Broadcast()

		if err := c.write(batch); err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		c.durable, c.writing = last, false
		c.mu.Unlock()
		c.release()
	}
}

// write makes one batch durable. The session ending does not cut it short:
// the enclave made these writes, and what it answered after them may
// already be on its way once they are durable.
func (c *committer) write(batch []queuedWrite) error {
	st := c.s.e.cfg.Store
	if st == nil {
		return errors.New("the enclave wrote to protected storage but the host has no store for it")
	}
	ctx := context.WithoutCancel(c.s.ctx)
	if bs, ok := st.(BatchStore); ok {
		writes := make([]StoreWrite, len(batch))
		for i, w := range batch {
			writes[i] = StoreWrite{Key: w.key, Blob: w.blob}
		}
		return bs.PutBatch(ctx, writes)
	}
	for _, w := range batch {
		if err := st.Put(ctx, w.key, w.blob); err != nil {
			return err
		}
	}
	return nil
}

// release acts, in stream order, on the held frames whose writes are
// durable. Frames held meanwhile are picked up before it returns.
func (c *committer) release() {
	c.mu.Lock()
	if c.releasing {
		c.mu.Unlock()
		return
	}
	c.releasing = true
	for {
		n := 0
		for n < len(c.held) && c.held[n].after <= c.durable {
			n++
		}
		if n == 0 || c.failed != nil {
			break
		}
		ready := c.held[:n:n]
		c.held = c.held[n:]
		closed := c.closed
		c.mu.Unlock()
		c.cond.Broadcast()
		if !closed { // else the session has failed what these answer
			for _, h := range ready {
				c.s.act(h.m)
			}
		}
		c.mu.Lock()
	}
	c.releasing = false
	c.mu.Unlock()
	c.cond.Broadcast()
}

// flush waits until every write received is durable and every frame held
// for one was acted on (or a write failed, or the session closed): the
// stream ended, and what the enclave answered before it ended goes out.
func (c *committer) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for (len(c.queue) > 0 || c.writing || len(c.held) > 0 || c.releasing) && c.failed == nil && !c.closed {
		c.cond.Wait()
	}
}

// fail records a failed batch: the held frames are failed as unavailable,
// later writes dropped, and the instance ended.
func (c *committer) fail(err error) {
	err = fmt.Errorf("%w: %w", ErrStoreWrite, err)
	c.s.e.log.Error("enclave: a protected-storage write failed; failing the answers that waited for it and restarting the instance", "error", err)
	c.mu.Lock()
	c.failed = err
	held := c.held
	c.held, c.queue, c.queued = nil, nil, 0
	for _, h := range held {
		c.dropped(h.m)
	}
	c.mu.Unlock()
	c.cond.Broadcast()
	c.s.finish(err)
}
