package trusted

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/seal"
	"github.com/cloister-dev/cloister/wire"
)

// Handler serves the deliveries of one address.
type Handler interface {
	ServeCall(ctx context.Context, c *Call)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, c *Call)

// ServeCall calls f(ctx, c).
func (f HandlerFunc) ServeCall(ctx context.Context, c *Call) { f(ctx, c) }

// Options configure an App. The zero value is usable.
type Options struct {
	// Workers is the most handlers running at once (the enclave's TCS
	// count). Default: the count the host asks for in Init (what a node's
	// enclave configuration sets), else DefaultWorkers.
	Workers int
	// MaxQueue is the most deliveries waiting for a worker; more fail with
	// boundary.FailOverloaded. Default 1024.
	MaxQueue int
	// Limits bound the frames the enclave accepts (boundary defaults).
	Limits boundary.Limits
	// ShutdownGrace is how long a Shutdown without its own grace period
	// drains. Default 10s.
	ShutdownGrace time.Duration
	// SealPolicy is the policy of protected storage (see the package doc).
	SealPolicy seal.Policy
	// KeySource overrides the choice of seal keys.
	KeySource seal.KeySource
	// GramineRoot is where Gramine's attestation files are looked for.
	// Default seal.DefaultAttestationRoot.
	GramineRoot string
	// LogLevel is the lowest level handlers' logs are sent to the host at.
	// Default slog.LevelInfo.
	LogLevel slog.Leveler
	// MemoryLimit is the Go memory limit Main sets unless GOMEMLIMIT is set.
	// Default DefaultMemoryLimit; negative leaves the limit alone.
	MemoryLimit int64
	// Procs is the number of processors (GOMAXPROCS) Main lets the image
	// use unless the GOMAXPROCS environment variable is set. Default
	// DefaultProcs; negative leaves Go's default (every CPU). Handlers that
	// compute in parallel want more; see DefaultProcs for why it is small.
	Procs int
	// SharedMemory, if set, is how Main takes the shared-memory region the
	// host offers for the boundary (shm.Adopt of package boundary/shm,
	// which an image links only if it opts in): it gets the boundary's
	// descriptors and returns the streams to serve. Unset, the image stays
	// on the descriptors (the host falls back to them).
	SharedMemory func(r, w *os.File) (io.Reader, io.Writer)
	// RedactPanics keeps panic values inside the enclave: a panicking
	// handler's Fail message and log record then name only the address.
	// By default the panic value (at most 512 bytes of it) is included, and
	// like every Fail message and log record it is visible to the host.
	RedactPanics bool
	// Evidence, if set, produces attestation evidence for Runtime.Evidence
	// instead of Gramine's /dev/attestation or the host.
	Evidence EvidenceFunc
	// OnInit, if set, runs after Init (and after the Layer started) and
	// before Ready; an error is sent to the host as Fatal and ends Serve.
	OnInit func(ctx context.Context, rt *Runtime) error
	// Layer, if set, makes the layer of each instance once Init arrived
	// (see Layer), such as trusted/secured's secured-address layer; it may
	// return nil for none. Without a layer, an Init that names a manifest
	// service to join is refused.
	Layer func(rt *Runtime) Layer
	// StoreCacheBytes and StoreCacheEntries bound the protected-storage
	// cache in enclave memory (see Runtime.Put and Runtime.Get): least
	// recently used values are dropped beyond either bound. Each entry is
	// charged its key and value bytes plus 96. Defaults
	// DefaultStoreCacheBytes and DefaultStoreCacheEntries; a negative
	// StoreCacheEntries caches nothing.
	StoreCacheBytes   int
	StoreCacheEntries int
	// SyncStore makes Put wait for the host's answer and Get always ask the
	// host, with no cache: the protocol before posted writes, kept to
	// compare against.
	SyncStore bool
}

// DefaultWorkers is the worker count when neither Options.Workers nor the
// host's Init sets one.
const DefaultWorkers = 8

// DefaultMemoryLimit is the Go memory limit Main sets by default: an SGX1
// enclave has about 93 MB of protected memory in all.
const DefaultMemoryLimit = 24 << 20

// DefaultProcs is the default of Options.Procs. One processor serves the
// boundary best when handlers mostly wait for the host or answer quickly:
// the runtime then hands work between goroutines without waking other
// threads, and an SGX enclave needs fewer thread control structures. On a
// 2-core machine it cut the enclave's CPU per request by about a third
// (BenchmarkTrustedVsRegular in package node) with the same throughput.
const DefaultProcs = 1

// App is an enclave image's set of handlers and options. Register handlers,
// then call Main (or Serve).
type App struct {
	opts     Options
	mu       sync.Mutex
	handlers map[string]Handler
	frozen   bool

	evidenceMu sync.Mutex // Gramine's report data + quote are per process
}

// New returns an App with opts (defaults filled in).
func New(opts Options) *App {
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = 1024
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	if opts.LogLevel == nil {
		opts.LogLevel = slog.LevelInfo
	}
	opts.Limits = opts.Limits.WithDefaults()
	return &App{opts: opts, handlers: map[string]Handler{}}
}

// Handle registers h for address. It panics if address is empty, not valid
// for the boundary protocol, already registered, or if the App is serving.
func (a *App) Handle(address string, h Handler) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch err := wire.ValidateAddress(address); {
	case a.frozen:
		panic("trusted: Handle after Serve")
	case err != nil:
		panic("trusted: " + err.Error())
	case h == nil:
		panic("trusted: nil handler for " + address)
	case a.handlers[address] != nil:
		panic("trusted: address registered twice: " + address)
	}
	a.handlers[address] = h
}

// HandleFunc registers f for address; see Handle.
func (a *App) HandleFunc(address string, f func(ctx context.Context, c *Call)) {
	a.Handle(address, HandlerFunc(f))
}

// Addresses returns the registered addresses, sorted.
func (a *App) Addresses() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := make([]string, 0, len(a.handlers))
	for k := range a.handlers {
		l = append(l, k)
	}
	slices.Sort(l)
	return l
}

// Errors returned by Serve and the Runtime.
var (
	// ErrHostClosed: the host closed the boundary without a Shutdown.
	ErrHostClosed = errors.New("trusted: host closed the boundary")
	// ErrStopped: the enclave instance has stopped (after Shutdown's grace
	// period, or the boundary failed); OCALLs fail with it.
	ErrStopped = errors.New("trusted: enclave stopped")
	// ErrProtocol: the host broke the boundary protocol (e.g. no Init first).
	ErrProtocol = errors.New("trusted: boundary protocol violation")
)

// Serve runs one enclave instance over r (ECALLs in) and w (OCALLs out):
// handshake, Init, Ready, then deliveries until Shutdown (returns nil after
// sending Stopped), the host closing the stream (ErrHostClosed), a fatal
// error, or ctx ending. It closes r and w when they are io.Closers, and
// returns only once the goroutines it started (workers, and those of the
// Layer, see Runtime.Go) have ended: handlers must return when their
// context ends.
func (a *App) Serve(ctx context.Context, r io.Reader, w io.Writer) error {
	a.mu.Lock()
	a.frozen = true
	handlers := make(map[string]Handler, len(a.handlers))
	for k, v := range a.handlers {
		handlers[k] = v
	}
	a.mu.Unlock()

	conn, err := boundary.NewConn(ctx, r, w, boundary.RoleEnclave, boundary.Options{Limits: a.opts.Limits, Cork: true})
	if err != nil {
		return fmt.Errorf("trusted: %w", err)
	}
	// Ending ctx closes the streams, which ends a blocked Recv.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &session{app: a, opts: a.opts, conn: conn, handlers: handlers, ctx: ctx, cancel: cancel,
		pending: map[uint64]chan boundary.Message{}, stopped: make(chan struct{}), readDone: make(chan struct{}),
		shutdown: make(chan *boundary.Shutdown, 1)}
	s.cond.L = &s.mu
	s.idle.L = &s.mu
	s.rt = &Runtime{s: s}
	s.rt.log = slog.New(&logHandler{s: s, level: a.opts.LogLevel})
	s.rt.store.limits(&a.opts)
	err = s.serve()
	s.halt()
	conn.Close()
	s.wg.Wait()
	return err
}

// session is one running enclave instance.
//
// Scheduling is leader/followers: Workers+1 goroutines share the work. At
// any time at most one of them (the leader) reads frames; the others run
// handlers or wait. A leader that reads a Deliver while a worker slot is
// free and nothing is queued hands the reading to a follower and runs the
// handler itself, so a request crosses no goroutine on its way from the
// read to the reply. Since at most Workers goroutines run handlers, one is
// always free to read: OCALL results reach waiting handlers even when every
// worker is busy.
type session struct {
	app      *App
	opts     Options // the App's, with Workers as Init asked
	conn     *boundary.Conn
	handlers map[string]Handler
	rt       *Runtime
	layer    Layer           // nil without Options.Layer
	own      map[string]bool // addresses served by the layer's own handlers
	wg       sync.WaitGroup  // the pool's and the layer's goroutines
	ctx      context.Context
	cancel   context.CancelFunc
	shutdown chan *boundary.Shutdown // the first Shutdown

	mu          sync.Mutex
	cond        sync.Cond // goroutines of the pool wait here
	idle        sync.Cond // drain waits here
	queue       []*Call   // waiting for a worker
	running     int       // handlers running
	openReplies int       // accepted requests not yet answered
	serving     bool      // Ready sent: handlers may run
	reading     bool      // a leader is reading
	draining    bool      // Shutdown received
	halted      bool      // the pool must exit
	readerGone  bool      // reading ended (readErr set, readDone closed)
	nextID      uint64
	pending     map[uint64]chan boundary.Message
	stopped     chan struct{} // closed when OCALLs must give up
	readDone    chan struct{} // closed when reading ended
	readErr     error         // why; read after readDone
	stopOnce    sync.Once
}

func (s *session) fatal(err error) error {
	s.conn.Send(&boundary.Fatal{Message: err.Error()})
	s.conn.Flush()
	return err
}

func (s *session) serve() error {
	m, err := s.conn.Recv()
	if err != nil {
		return fmt.Errorf("trusted: waiting for Init: %w", err)
	}
	init, ok := m.(*boundary.Init)
	if !ok {
		return s.fatal(fmt.Errorf("%w: first frame is %s, want Init", ErrProtocol, m.Type()))
	}
	s.rt.init(init)
	if s.opts.Workers <= 0 {
		s.opts.Workers = int(init.Workers)
	}
	if s.opts.Workers <= 0 {
		s.opts.Workers = DefaultWorkers
	}
	if s.opts.Layer != nil {
		s.layer = s.opts.Layer(s.rt)
	}
	if init.Service != "" && s.layer == nil {
		return s.fatal(fmt.Errorf("%w: the host asks this enclave to join as service %q, but the image has no secured-address layer (Options.Layer, package trusted/secured)", ErrProtocol, init.Service))
	}
	if s.layer != nil {
		s.own = map[string]bool{}
		for addr, h := range s.layer.Handlers() {
			if s.handlers[addr] == nil {
				s.handlers[addr] = h
				s.own[addr] = true
			}
		}
	}

	// Read from here on, so that OnInit's OCALLs get their results;
	// deliveries wait in the queue until Ready.
	for range s.opts.Workers + 1 {
		s.wg.Go(s.loop)
	}
	if s.layer != nil {
		if err := s.layer.Start(s.ctx); err != nil {
			s.halt()
			return s.fatal(err)
		}
	}
	if s.opts.OnInit != nil {
		if err := s.opts.OnInit(s.ctx, s.rt); err != nil {
			s.halt()
			return s.fatal(fmt.Errorf("trusted: init: %w", err))
		}
	}
	if s.rt.sealErr != nil {
		s.rt.log.Error("protected storage unavailable", "err", s.rt.sealErr)
	} else if s.rt.sealMode == "simulated" {
		s.rt.log.Warn("SIMULATED sealing: protected storage keys derive from a host-held platform secret and a host-chosen identity; this promises nothing against a malicious host")
	}
	if err := s.conn.Send(&boundary.Ready{Workers: uint32(s.opts.Workers), Addresses: s.serveAddresses()}); err != nil {
		s.halt()
		return fmt.Errorf("trusted: send Ready: %w", err)
	}
	s.mu.Lock()
	s.serving = true
	s.mu.Unlock()
	s.cond.Broadcast()

	select {
	case sd := <-s.shutdown:
		return s.drain(sd)
	case <-s.readDone:
		s.halt()
		err := s.readErr
		if errors.Is(err, io.EOF) {
			return ErrHostClosed
		}
		return err
	case <-s.ctx.Done():
		s.halt()
		return s.ctx.Err()
	}
}

// loop is one goroutine of the pool (see session).
func (s *session) loop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		switch {
		case s.halted:
			return
		case !s.reading && !s.readerGone:
			s.lead()
		case s.serving && len(s.queue) > 0 && s.running < s.opts.Workers:
			c := s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			if len(s.queue) == 0 {
				s.queue = s.queue[:0:0]
			}
			s.runLocked(c)
		default:
			s.cond.Wait()
		}
	}
}

// runLocked runs c with s.mu released, counting it as running.
func (s *session) runLocked(c *Call) {
	s.running++
	s.mu.Unlock()
	s.run(c)
	s.mu.Lock()
	s.running--
	s.cond.Signal() // a worker slot is free for queued work
	s.idle.Broadcast()
}

// lead reads and dispatches one frame; called and returns with s.mu held.
// It never blocks on a handler or on writing (answers go out with Post).
func (s *session) lead() {
	s.reading = true
	s.mu.Unlock()
	m, err := s.conn.Recv()
	s.mu.Lock()
	s.reading = false
	if err != nil {
		var de *boundary.DecodeError
		if errors.As(err, &de) {
			// The stream is still in sync: answer the call the frame
			// belonged to, if known, report, and go on.
			s.mu.Unlock()
			s.rejected(de)
			s.mu.Lock()
			return
		}
		s.readErr = err
		s.readerGone = true
		close(s.readDone)
		s.idle.Broadcast()
		return
	}
	if d, ok := m.(*boundary.Deliver); ok {
		c := s.accept(d)
		switch {
		case c == nil:
		case s.serving && len(s.queue) == 0 && s.running < s.opts.Workers && !s.halted:
			s.cond.Signal() // a follower takes over reading
			s.runLocked(c)
		default:
			s.queue = append(s.queue, c)
			s.cond.Signal()
		}
		return
	}
	s.mu.Unlock()
	s.dispatch(m)
	s.mu.Lock()
}

// dispatch handles an ECALL other than Deliver.
func (s *session) dispatch(m boundary.Message) {
	switch m := m.(type) {
	case *boundary.RequestResult:
		s.complete(m.CallID, m)
	case *boundary.StoreResult:
		s.complete(m.CallID, m)
	case *boundary.EvidenceResult:
		s.complete(m.CallID, m)
	case *boundary.Health:
		s.mu.Lock()
		st := &boundary.HealthStatus{ID: m.ID, Healthy: !s.draining, Running: uint32(s.running),
			Queued: uint32(len(s.queue)), Workers: uint32(s.opts.Workers)}
		if s.draining {
			st.Detail = "draining"
		} else if s.layer != nil {
			st.Detail = s.layer.Health()
		}
		s.mu.Unlock()
		s.conn.Post(st)
	case *boundary.Shutdown:
		s.mu.Lock()
		first := !s.draining
		s.draining = true
		s.mu.Unlock()
		if first {
			s.shutdown <- m
		}
	case *boundary.Init:
		s.postLog(slog.LevelError, "ignoring a second Init from the host")
	}
}

// accept turns a Deliver into a Call, or fails it at once (draining, no
// handler, queue full) and returns nil. Called with s.mu held.
func (s *session) accept(d *boundary.Deliver) *Call {
	h := s.handlers[d.Address]
	var fk boundary.FailKind
	var msg string
	switch {
	case s.draining:
		fk, msg = boundary.FailShuttingDown, "enclave is shutting down"
	case h == nil:
		fk, msg = boundary.FailNoHandler, fmt.Sprintf("no handler for address %q in this enclave", d.Address)
	case len(s.queue) >= s.opts.MaxQueue:
		fk, msg = boundary.FailOverloaded, fmt.Sprintf("enclave overloaded: %d deliveries queued", len(s.queue))
	}
	if fk != 0 {
		if d.Token != 0 {
			s.conn.Post(&boundary.Fail{Token: d.Token, Kind: fk, Message: msg})
		} else {
			s.postLog(slog.LevelWarn, "dropped a delivery", "address", d.Address, "reason", msg)
		}
		return nil
	}
	c := &Call{Runtime: s.rt, handler: h, kind: d.Kind, timeout: d.Timeout,
		address: d.Address, headers: d.Headers, body: d.Body}
	if d.Kind == wire.KindRequest {
		c.token = d.Token
		s.openReplies++
	} else {
		c.doneToken = d.Token // the host wants a Done (0: it does not)
	}
	return c
}

func (s *session) run(c *Call) {
	ctx := withTrace(s.ctx, c.headers)
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	if s.layer != nil && !s.own[c.address] && !s.open(c) {
		return
	}
	defer func() {
		r := recover()
		if r == nil {
			if c.opened != nil && !c.ExpectsReply() {
				c.opened.Settle(true) // a one-way message was handled
			}
			c.handled(nil)
			return
		}
		if c.opened != nil && !c.ExpectsReply() {
			c.opened.Settle(false)
		}
		msg := fmt.Sprintf("handler for %q panicked", c.address)
		if !s.opts.RedactPanics {
			v := fmt.Sprint(r)
			if len(v) > 512 {
				v = strings.ToValidUTF8(v[:512], "") + "…"
			}
			msg += ": " + v
		}
		s.rt.log.Error(msg, "address", c.address)
		if c.ExpectsReply() {
			c.answer(&boundary.Fail{Token: c.token, Kind: boundary.FailPanic, Message: msg})
		}
		c.handled(&boundary.Fail{Kind: boundary.FailPanic, Message: msg})
	}()
	c.handler.ServeCall(ctx, c)
}

// open lets the layer open c before its handler runs, and reports whether
// the handler may run; a refused delivery is answered here.
func (s *session) open(c *Call) bool {
	d := &Delivery{Address: c.address, Kind: c.kind, ExpectsReply: c.ExpectsReply(), Headers: c.headers, Body: c.body}
	opened, err := s.layer.Open(d)
	if err == nil {
		c.headers, c.body, c.opened = d.Headers, d.Body, opened
		return true
	}
	r, ok := err.(*Refusal)
	if !ok {
		r = &Refusal{Code: 500, Message: err.Error()}
	}
	if c.ExpectsReply() {
		c.answer(&boundary.Fail{Token: c.token, Kind: boundary.FailApplication, Code: int32(r.Code), Message: r.Message})
	}
	if r.Retry {
		c.handled(&boundary.Fail{Kind: boundary.FailApplication, Code: int32(r.Code), Message: r.Message})
	} else {
		c.handled(nil) // refused for good: redelivering it would not help
	}
	return false
}

// serveAddresses returns the addresses to announce in Ready: every
// registered one, or those the layer lets the instance serve.
func (s *session) serveAddresses() []string {
	all := s.app.Addresses()
	if s.layer == nil {
		return all
	}
	return s.layer.Serves(all)
}

// answered is called once per answered request.
func (s *session) answered() {
	s.mu.Lock()
	s.openReplies--
	s.mu.Unlock()
	s.idle.Broadcast()
}

// drain finishes queued and running deliveries and open replies, for at most
// the grace period, then sends Stopped.
func (s *session) drain(sd *boundary.Shutdown) error {
	grace := sd.Grace
	if grace <= 0 {
		grace = s.opts.ShutdownGrace
	}
	expired := false
	timer := time.AfterFunc(grace, func() {
		s.mu.Lock()
		expired = true
		s.mu.Unlock()
		s.idle.Broadcast()
	})
	defer timer.Stop()
	s.mu.Lock()
	for !expired && !s.readerGone && (len(s.queue) > 0 || s.running > 0 || s.openReplies > 0) {
		s.idle.Wait()
	}
	abandoned := s.openReplies
	readerGone := s.readerGone
	s.mu.Unlock()
	if s.layer != nil && !readerGone {
		ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
		if err := s.layer.Stop(ctx); err != nil {
			s.rt.log.Warn("layer not stopped cleanly", "err", err.Error())
		}
		cancel()
	}
	s.halt()
	st := &boundary.Stopped{Abandoned: uint32(abandoned), Message: "drained"}
	if abandoned > 0 {
		st.Message = fmt.Sprintf("grace period %v ended with %d requests unanswered", grace, abandoned)
	}
	if err := s.conn.Send(st); err != nil {
		return fmt.Errorf("trusted: send Stopped: %w", err)
	}
	return s.conn.Flush()
}

// halt stops the pool, fails waiting OCALLs and cancels handler contexts.
func (s *session) halt() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.halted = true
		s.mu.Unlock()
		s.cond.Broadcast()
		s.idle.Broadcast()
		close(s.stopped)
		s.cancel()
	})
}

// call sends an OCALL built by mk with a fresh call ID and waits for its
// result.
func (s *session) call(ctx context.Context, mk func(id uint64) boundary.Message) (boundary.Message, error) {
	ch := make(chan boundary.Message, 1)
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.pending[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}()
	if err := s.conn.Send(mk(id)); err != nil {
		return nil, fmt.Errorf("trusted: OCALL: %w", err)
	}
	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.stopped:
		return nil, ErrStopped
	case <-s.readDone:
		return nil, fmt.Errorf("%w: %w", ErrStopped, s.readErr)
	}
}

func (s *session) complete(id uint64, m boundary.Message) {
	s.mu.Lock()
	ch := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if ch == nil {
		// Late (the caller gave up) or bogus; nothing waits for it.
		return
	}
	ch <- m
}

// rejected handles a frame from the host that did not decode: the call it
// belonged to (if its ID was readable) ends with an error rather than a
// timeout.
func (s *session) rejected(de *boundary.DecodeError) {
	s.postLog(slog.LevelError, "rejected a frame from the host", "err", de.Error())
	if de.ID == 0 {
		return
	}
	msg := "malformed frame from the host: " + de.Error()
	switch de.Type {
	case boundary.TypeDeliver:
		s.conn.Post(&boundary.Fail{Token: de.ID, Kind: boundary.FailInternal, Message: msg})
	case boundary.TypeRequestResult:
		s.complete(de.ID, &boundary.RequestResult{CallID: de.ID, Failure: wire.FailureError, Message: msg})
	case boundary.TypeStoreResult:
		s.complete(de.ID, &boundary.StoreResult{CallID: de.ID, Error: msg})
	case boundary.TypeEvidenceResult:
		s.complete(de.ID, &boundary.EvidenceResult{CallID: de.ID, Error: msg})
	}
}
