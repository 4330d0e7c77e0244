package enclave

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/wire"
)

// session is one running enclave instance: its process, its boundary
// connection and the calls in flight across it.
type session struct {
	e    *Enclave
	proc Process
	conn *boundary.Conn
	out  *frameWriter    // all host → enclave frames after the handshake
	ctx  context.Context // ends with the session; bounds OCALL work
	stop context.CancelFunc

	nextToken  atomic.Uint64
	inflight   atomic.Int64 // deliveries waiting for their answer
	nextHealth atomic.Uint64

	work   sync.WaitGroup // goroutines serving OCALLs (spawn) and the store writer
	commit *committer     // orders store writes before what follows them
	ocalls atomic.Int64   // OCALLs being served (Request, StoreGet, GetEvidence)

	mu      sync.Mutex
	pending map[uint64]waiter
	healthW map[uint64]chan *boundary.HealthStatus
	closed  bool
	why     error

	ready    *boundary.Ready
	readyCh  chan struct{}
	done     chan struct{} // closed by finish
	stopped  atomic.Pointer[boundary.Stopped]
	fatalMsg atomic.Pointer[string]
}

// exitDrainTime is how long the reader may go on draining the stream after
// the enclave process exited.
const exitDrainTime = 500 * time.Millisecond

func newSession(e *Enclave, proc Process, conn *boundary.Conn) *session {
	ctx, cancel := context.WithCancel(context.Background())
	_, w := proc.Streams()
	s := &session{e: e, proc: proc, conn: conn, out: newFrameWriter(w, conn.PeerMaxFrame()), ctx: ctx, stop: cancel,
		pending: make(map[uint64]waiter), healthW: make(map[uint64]chan *boundary.HealthStatus),
		readyCh: make(chan struct{}), done: make(chan struct{})}
	s.commit = newCommitter(s)
	s.work.Add(1)
	go func() {
		defer s.work.Done()
		s.commit.run()
	}()
	// A process that dies closes its streams, but a descendant could keep
	// them open: watch the exit too.
	go func() {
		select {
		case <-proc.Done():
			// What the enclave wrote before it exited (a Fatal saying why)
			// is still in the stream: let the reader drain it, unless a
			// descendant keeps the stream open.
			t := time.NewTimer(exitDrainTime)
			select {
			case <-s.done:
			case <-t.C:
			}
			t.Stop()
			s.finish(errors.New("the enclave process exited"))
		case <-s.done:
		}
	}()
	return s
}

// ended waits, once the session is finished, until the instance's process
// has exited and the goroutines serving its OCALLs have returned (they
// give up once the session's context ends), so that nothing of the
// instance still touches the bus or the store afterwards.
func (s *session) ended() {
	<-s.proc.Done()
	s.work.Wait()
}

// spawn runs f in a goroutine that ended waits for; once the session is
// closed it does not run f (the instance is going away unanswered) and
// returns false.
func (s *session) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.work.Add(1)
	go func() {
		defer s.work.Done()
		f()
	}()
	return true
}

// ErrTooManyOCALLs is wrapped by the cause of an instance ended because its
// image had more than Config.MaxOCALLs OCALLs outstanding.
var ErrTooManyOCALLs = errors.New("enclave: too many outstanding OCALLs")

// ocall serves an OCALL that takes time (Request, StoreGet, GetEvidence)
// in a goroutine of its own, at most Config.MaxOCALLs at once: an image
// that asks for more is ended (and restarted by the supervisor), since a
// well-behaved one waits for its answers.
func (s *session) ocall(what string, f func()) {
	limit := int64(s.e.cfg.MaxOCALLs)
	if s.ocalls.Add(1) > limit {
		s.ocalls.Add(-1)
		err := fmt.Errorf("%w: the image asked for a %s with %d already outstanding (limit %d)", ErrTooManyOCALLs, what, limit, limit)
		s.e.log.Error("enclave: the image exceeded its OCALL limit; ending the instance", "limit", limit, "error", err)
		s.finish(err)
		return
	}
	if !s.spawn(func() {
		defer s.ocalls.Add(-1)
		f()
	}) {
		s.ocalls.Add(-1)
	}
}

// cause says why the session ended.
func (s *session) cause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.why == nil {
		return errors.New("running")
	}
	return s.why
}

// finish ends the session once: it fails every request in flight at once,
// closes the connection and kills the process.
func (s *session) finish(why error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	if st := s.stopped.Load(); st != nil && why != nil {
		why = fmt.Errorf("%w (the enclave had stopped: %s)", why, st.Message)
	}
	if fm := s.fatalMsg.Load(); fm != nil {
		why = fmt.Errorf("%w (fatal: %s)", why, *fm)
	}
	s.why = why
	pending := s.pending
	s.pending = nil
	health := s.healthW
	s.healthW = nil
	s.mu.Unlock()
	s.commit.close()
	if s.e.cur.CompareAndSwap(s, nil) {
		s.e.instanceDown(why)
	}
	s.stop()
	s.out.close()
	s.conn.Close()
	_ = s.proc.Kill()
	msg := fmt.Sprintf("enclave %s", s.e.name)
	if pid := s.proc.PID(); pid != 0 {
		msg += fmt.Sprintf(" (pid %d)", pid)
	}
	msg += fmt.Sprintf(" went down with the request in flight: %v", why)
	for _, w := range pending {
		if w != nil {
			w.abort(msg)
		}
	}
	for _, ch := range health {
		close(ch)
	}
	close(s.done)
}

// deliver sends one Deliver ECALL; w gets the answer (a request's, or an
// acknowledged send's or publish's). With w nil nothing is answered.
func (s *session) deliver(w waiter, kind wire.Kind, address string, headers map[string]string, body []byte) {
	d := &boundary.Deliver{Kind: kind, Address: address, Headers: headers, Body: body}
	if w != nil {
		d.Token = s.nextToken.Add(1)
		s.mu.Lock()
		if s.closed {
			why := s.why
			s.mu.Unlock()
			w.abort(fmt.Sprintf("enclave %s is down: %v", s.e.name, why))
			return
		}
		s.pending[d.Token] = w
		s.inflight.Add(1)
		s.mu.Unlock()
	}
	// Alone in flight, the frame is written at once (lowest latency); with
	// others in flight it joins the next batched write.
	err := s.out.send(d, s.inflight.Load() <= 1)
	if err != nil {
		if w != nil {
			if w := s.take(d.Token); w != nil {
				if errors.Is(err, boundary.ErrFrameTooLarge) {
					w.fail(&boundary.Fail{Kind: boundary.FailInternal, Message: err.Error()})
				} else {
					w.abort(fmt.Sprintf("enclave %s: could not deliver: %v", s.e.name, err))
				}
			}
		} else {
			s.e.log.Warn("enclave: could not deliver a message", "address", address, "error", err)
		}
	}
}

// take removes and returns the waiter of token.
func (s *session) take(token uint64) waiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.pending[token]
	if ok {
		delete(s.pending, token)
		s.inflight.Add(-1)
	}
	return w
}

// health sends a Health ECALL and waits for the status.
func (s *session) health(ctx context.Context) (*boundary.HealthStatus, error) {
	id := s.nextHealth.Add(1)
	ch := make(chan *boundary.HealthStatus, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("instance went down: %w", s.why)
	}
	s.healthW[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.healthW, id)
		s.mu.Unlock()
	}()
	if err := s.out.send(&boundary.Health{ID: id}, true); err != nil {
		return nil, err
	}
	select {
	case st, ok := <-ch:
		if !ok {
			return nil, errors.New("instance went down")
		}
		return st, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no answer to Health: %w", ctx.Err())
	}
}

// readLoop receives OCALLs until the stream ends. It never waits for the
// enclave: answers to OCALLs that take time are sent from goroutines of
// their own.
func (s *session) readLoop() {
	for {
		m, err := s.conn.Recv()
		if err != nil {
			var de *boundary.DecodeError
			if errors.As(err, &de) {
				s.e.log.Error("enclave: rejected a frame from the enclave", "error", err)
				if (de.Type == boundary.TypeReply || de.Type == boundary.TypeFail || de.Type == boundary.TypeDone) && de.ID != 0 {
					if w := s.take(de.ID); w != nil {
						w.fail(&boundary.Fail{Kind: boundary.FailInternal, Message: "the enclave's answer could not be decoded: " + err.Error()})
					}
				}
				continue
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("the enclave closed the boundary")
			} else {
				err = fmt.Errorf("boundary: %w", err)
			}
			// What the enclave answered before the end waits only for its
			// writes.
			s.commit.flush()
			s.finish(err)
			return
		}
		s.dispatch(m)
	}
}

// dispatch acts on an OCALL frame, in stream order with the store writes:
// a frame that follows a write not yet durable is held by the committer.
func (s *session) dispatch(m boundary.Message) {
	switch m := m.(type) {
	case *boundary.StorePut:
		s.commit.put(m)
		return
	case *boundary.Reply, *boundary.Fail, *boundary.Done, *boundary.Send, *boundary.Publish,
		*boundary.Request, *boundary.StoreGet:
		if s.commit.hold(m) {
			return
		}
	}
	s.act(m)
}

// act acts on an OCALL frame (or sends a StoreResult the committer
// released).
func (s *session) act(m boundary.Message) {
	e := s.e
	switch m := m.(type) {
	case *boundary.StoreResult:
		if err := s.out.send(m, false); err != nil && !closed(err) {
			e.log.Warn("enclave: could not answer a store write", "error", err)
		}
	case *boundary.Ready:
		if s.ready != nil {
			e.log.Error("enclave: ignoring a second Ready")
			return
		}
		s.ready = m
		close(s.readyCh)
	case *boundary.Reply:
		if w := s.take(m.Token); w != nil {
			w.reply(m)
		} else {
			e.log.Warn("enclave: reply for an unknown or answered delivery", "token", m.Token)
		}
	case *boundary.Fail:
		if w := s.take(m.Token); w != nil {
			w.fail(m)
		} else {
			e.log.Warn("enclave: failure for an unknown or answered delivery", "token", m.Token)
		}
	case *boundary.Done:
		if w := s.take(m.Token); w != nil {
			w.done()
		} else {
			e.log.Warn("enclave: Done for an unknown or answered delivery", "token", m.Token)
		}
	case *boundary.Send:
		s.send(bus.KindSend, m.Address, m.Headers, m.Body)
	case *boundary.Publish:
		s.send(bus.KindPublish, m.Address, m.Headers, m.Body)
	case *boundary.Request:
		s.ocall("request", func() { s.request(m) })
	case *boundary.Log:
		attrs := make([]slog.Attr, 0, len(m.Attrs)+1)
		attrs = append(attrs, slog.String("source", "enclave"))
		for _, a := range m.Attrs {
			attrs = append(attrs, slog.String(a.Key, a.Value))
		}
		e.log.LogAttrs(s.ctx, m.Level, m.Message, attrs...)
	case *boundary.StoreGet:
		s.ocall("store read", func() { s.storeGet(m) })
	case *boundary.GetEvidence:
		s.ocall("evidence", func() { s.evidence(m) })
	case *boundary.HealthStatus:
		s.mu.Lock()
		ch := s.healthW[m.ID]
		delete(s.healthW, m.ID)
		s.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	case *boundary.Stopped:
		s.stopped.Store(m)
		if m.Abandoned > 0 {
			e.log.Warn("enclave: stopped with requests unanswered", "abandoned", m.Abandoned, "message", m.Message)
		} else {
			e.log.Info("enclave: drained and stopped", "message", m.Message)
		}
	case *boundary.Fatal:
		msg := m.Message
		s.fatalMsg.Store(&msg)
		e.log.Error("enclave: fatal error in the enclave", "message", m.Message)
	default:
		e.log.Error("enclave: unexpected frame", "type", m.Type().String())
	}
}

func (s *session) send(kind bus.Kind, address string, h map[string]string, body []byte) {
	b := s.e.cfg.Bus
	if b == nil {
		s.e.log.Warn("enclave: the enclave sent a message but the host has no bus", "address", address)
		return
	}
	v, opts, err := busBody(h, body)
	if err == nil {
		if kind == bus.KindPublish {
			err = b.Publish(s.ctx, address, v, opts...)
		} else {
			err = b.Send(s.ctx, address, v, opts...)
		}
	}
	if err != nil {
		s.e.log.Warn("enclave: could not pass on a message from the enclave", "kind", kind.String(), "address", address, "error", err)
	}
}

func (s *session) request(m *boundary.Request) {
	res := &boundary.RequestResult{CallID: m.CallID}
	b := s.e.cfg.Bus
	v, opts, err := busBody(m.Headers, m.Body)
	switch {
	case b == nil:
		res.Failure, res.Message = wire.FailureError, "the host has no bus"
	case err != nil:
		res.Failure, res.Message = wire.FailureError, err.Error()
	default:
		if t := min(m.Timeout, s.e.cfg.MaxOCALLTimeout); t > 0 {
			// The image may ask for less time than the host allows, not more.
			opts = append(opts, bus.Timeout(t))
		}
		// Nor more than that by asking for the bus's default.
		ctx, cancel := context.WithTimeout(s.ctx, s.e.cfg.MaxOCALLTimeout)
		reply, err := b.Request(ctx, m.Address, v, opts...)
		cancel()
		if err != nil {
			var re *bus.ReplyError
			if errors.As(err, &re) {
				res.Failure, res.Code, res.Message = re.Failure, int32(re.Code), re.Message
				if res.Message == "" {
					res.Message = err.Error()
				}
			} else {
				res.Failure, res.Message = wire.FailureError, err.Error()
			}
		} else {
			res.Headers, res.Body = reply.Headers(), reply.Body()
		}
	}
	if err := s.out.send(res, false); err != nil && !closed(err) {
		s.e.log.Warn("enclave: could not return a request's result", "address", m.Address, "error", err)
	}
}

func (s *session) storeGet(m *boundary.StoreGet) {
	res := &boundary.StoreResult{CallID: m.CallID}
	if st := s.e.cfg.Store; st == nil {
		res.Error = "the host has no store for this enclave"
	} else {
		blob, found, err := st.Get(s.ctx, m.Key)
		if err != nil {
			res.Error = err.Error()
			s.e.log.Error("enclave: store get failed", "error", err)
		}
		res.Found, res.Blob = found, blob
	}
	_ = s.out.send(res, false)
}

func (s *session) evidence(m *boundary.GetEvidence) {
	res := &boundary.EvidenceResult{CallID: m.CallID}
	iss, err := s.e.evidenceIssuer()
	if err == nil {
		e, ierr := iss.Issue(s.ctx, m.ReportData)
		if ierr != nil {
			err = ierr
		} else {
			res.EvidenceType, res.Quote = string(e.Type), e.Quote
		}
	}
	if err != nil {
		res.Error = err.Error()
	}
	_ = s.out.send(res, false)
}
