package enclave

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/wire"
)

// Failure codes of the recipient failures an Enclave answers requests
// with when the enclave itself (not the handler) could not answer. A
// handler's own Fail keeps its code.
const (
	// CodeUnavailable: the enclave is down, restarting, shutting down, or
	// died with the request in flight.
	CodeUnavailable = 503
	// CodeOverloaded: the enclave's delivery queue is full.
	CodeOverloaded = 429
	// CodeNoHandler: the enclave has no handler for the address.
	CodeNoHandler = 404
	// CodeInternal: the handler panicked or the trusted runtime failed.
	CodeInternal = 500
)

// Defaults of Config.
const (
	DefaultStartTimeout      = 30 * time.Second
	DefaultRestartBackoff    = 100 * time.Millisecond
	DefaultMaxRestartBackoff = 10 * time.Second
	DefaultShutdownGrace     = 10 * time.Second
	DefaultMaxOCALLs         = 1024
	DefaultMaxOCALLTimeout   = time.Minute
)

// Config configures one supervised enclave instance.
type Config struct {
	// Name names the enclave in logs, failures and health (required).
	Name string
	// Instance numbers instances of one deployment.
	Instance int
	// Image is the enclave image; required except for an inproc backend,
	// where it only supplies the identity.
	Image *Image
	// Backend runs the instance (required).
	Backend Backend
	// Bus carries what the enclave sends, publishes and requests. Without
	// it those OCALLs fail.
	Bus *bus.Bus
	// Store keeps protected storage. Without it, store reads fail and an
	// instance that writes is ended (its writes cannot be made durable).
	// A BatchStore commits many writes at once.
	Store Store
	// Issuer answers GetEvidence. Nil means Simulation's issuer claiming
	// the image's identity (debug attribute set for the inproc backend); the
	// gramine backend gets its evidence inside the enclave.
	Issuer attest.Issuer
	// Simulation is the simulation trust root of the inproc and process
	// backends: its platform key signs the enclave's simulated evidence
	// (unless Issuer is set) and its platform secret is handed to the image
	// in Init for simulated sealing (unless SealSecret is set). Nil: such an
	// enclave has no evidence and no protected storage, and says so when
	// asked. The gramine backend does not use it.
	Simulation *attest.SimulationRoot
	// Logger gets the enclave's logs; default slog.Default().
	Logger *slog.Logger
	// Allow lists the addresses the enclave may serve: exact addresses or
	// patterns where "*" matches one segment and a final ">" one or more.
	// Empty allows every address the image registers.
	Allow []string
	// Env is extra environment for the enclave process.
	Env []string
	// InitConfig is handed to the image in Init (its own configuration).
	InitConfig []byte
	// Workers is the handler concurrency asked of the image in Init (0:
	// the image's default; at most boundary.MaxWorkers). An image that
	// fixes its own keeps it.
	Workers int
	// Service is the manifest service the image is to join the
	// coordinator as, told in Init ("" for none; the image needs the
	// secured-address layer, package trusted/secured).
	Service string
	// SealSecret is the simulated platform secret handed to the image in
	// Init; empty means Simulation's.
	SealSecret []byte
	// SealPolicy is 0 (the image's default), 1 (MRENCLAVE) or 2 (MRSIGNER).
	SealPolicy uint8
	// Limits bound the frames the host accepts.
	Limits boundary.Limits
	// StartTimeout bounds launch, handshake and Init (default
	// DefaultStartTimeout).
	StartTimeout time.Duration
	// RestartBackoff is the first delay before a restart; it doubles with
	// every failed attempt up to MaxRestartBackoff.
	RestartBackoff    time.Duration
	MaxRestartBackoff time.Duration
	// ShutdownGrace is the drain time Stop gives the enclave when its
	// context has no deadline.
	ShutdownGrace time.Duration
	// MaxOCALLs bounds the OCALLs the host serves for one instance at once
	// (requests, store reads, evidence); an image that asks for more is
	// ended with ErrTooManyOCALLs and restarted. Default DefaultMaxOCALLs.
	MaxOCALLs int
	// MaxOCALLTimeout is the longest the host waits for the reply to a
	// Request OCALL: a longer timeout the image asks for is cut to it, and
	// so is the bus's default when the image asks for none. Default
	// DefaultMaxOCALLTimeout.
	MaxOCALLTimeout time.Duration
}

// State is an Enclave's lifecycle state.
type State int32

// States.
const (
	StateNew        State = iota // not started
	StateStarting                // launching, waiting for Ready
	StateUp                      // serving
	StateRestarting              // died; waiting for the next attempt
	StateStopped                 // stopped, or failed to start
)

func (s State) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateStarting:
		return "starting"
	case StateUp:
		return "up"
	case StateRestarting:
		return "restarting"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// ErrNoAddresses is wrapped by Start when none of the image's addresses is
// allowed.
var ErrNoAddresses = errors.New("enclave: no address to serve")

// ErrStopped is returned by operations on a stopped Enclave.
var ErrStopped = errors.New("enclave: stopped")

// DownError says why an enclave is not serving; Health returns it.
type DownError struct {
	Name     string
	State    State
	Restarts int
	// Cause is why the last instance ended (or failed to start).
	Cause error
	// NextAttempt is when the supervisor tries again (zero if it will not).
	NextAttempt time.Time
}

func (e *DownError) Error() string {
	s := fmt.Sprintf("enclave %s is %s", e.Name, e.State)
	if e.Restarts > 0 {
		s += fmt.Sprintf(" (restarts: %d)", e.Restarts)
	}
	if !e.NextAttempt.IsZero() {
		s += fmt.Sprintf(", next attempt in %v", time.Until(e.NextAttempt).Round(time.Millisecond))
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *DownError) Unwrap() error { return e.Cause }

// Enclave is one supervised enclave instance: it launches the image on its
// backend, speaks the boundary protocol with it, turns bus messages into
// Deliver ECALLs (HandleMessage makes it a bus.Handler) and the enclave's
// OCALLs into bus operations, storage and evidence, and restarts it with
// exponential backoff when it dies. Requests in flight when it dies fail at
// once with a recipient failure (CodeUnavailable) naming the enclave.
type Enclave struct {
	cfg      Config
	name     string // "NAME/INSTANCE"
	log      *slog.Logger
	identity boundary.Identity

	cur atomic.Pointer[session]

	issuerOnce sync.Once
	issuer     attest.Issuer
	issuerErr  error

	mu        sync.Mutex
	state     State
	lastErr   error
	restarts  int
	nextAt    time.Time
	addresses []string
	refused   []string
	workers   int
	stopping  bool
	started   bool

	firstReady chan error // the first launch's outcome
	stopCh     chan struct{}
	done       chan struct{}
}

// New checks cfg and returns an Enclave that has not started.
func New(cfg Config) (*Enclave, error) {
	if cfg.Name == "" {
		return nil, errors.New("enclave: config needs a name")
	}
	if cfg.Backend == nil {
		return nil, fmt.Errorf("enclave %s: config needs a backend", cfg.Name)
	}
	if cfg.Image == nil && cfg.Backend.Name() != "inproc" {
		return nil, fmt.Errorf("enclave %s: the %s backend needs an image", cfg.Name, cfg.Backend.Name())
	}
	if cfg.SealPolicy > 2 {
		return nil, fmt.Errorf("enclave %s: seal policy %d: want 0, 1 (MRENCLAVE) or 2 (MRSIGNER)", cfg.Name, cfg.SealPolicy)
	}
	if cfg.Workers < 0 || cfg.Workers > boundary.MaxWorkers {
		return nil, fmt.Errorf("enclave %s: workers %d: want 0 (the image's default) to %d", cfg.Name, cfg.Workers, boundary.MaxWorkers)
	}
	for _, p := range cfg.Allow {
		if err := validPattern(p); err != nil {
			return nil, fmt.Errorf("enclave %s: %w", cfg.Name, err)
		}
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = DefaultRestartBackoff
	}
	if cfg.MaxRestartBackoff <= 0 {
		cfg.MaxRestartBackoff = DefaultMaxRestartBackoff
	}
	if cfg.MaxRestartBackoff < cfg.RestartBackoff {
		cfg.MaxRestartBackoff = cfg.RestartBackoff
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxOCALLs <= 0 {
		cfg.MaxOCALLs = DefaultMaxOCALLs
	}
	if cfg.MaxOCALLTimeout <= 0 {
		cfg.MaxOCALLTimeout = DefaultMaxOCALLTimeout
	}
	e := &Enclave{
		cfg:        cfg,
		name:       fmt.Sprintf("%s/%d", cfg.Name, cfg.Instance),
		firstReady: make(chan error, 1),
		stopCh:     make(chan struct{}),
		done:       make(chan struct{}),
	}
	e.log = cfg.Logger.With("enclave", cfg.Name, "instance", cfg.Instance, "backend", cfg.Backend.Name())
	if cfg.Image != nil {
		e.identity = cfg.Image.Identity()
	} else {
		// inproc without an image: a recognisable all-zero-but-one
		// identity so that seal keys can still be derived.
		e.identity.MREnclave[0], e.identity.MRSigner[0] = 1, 1
	}
	return e, nil
}

// Name returns "NAME/INSTANCE".
func (e *Enclave) Name() string { return e.name }

// Start launches the enclave and waits (bounded by ctx and
// Config.StartTimeout) until it is Ready, then keeps it running in the
// background, restarting it when it dies, until Stop. It fails if the first
// launch fails, or if none of the image's addresses is allowed.
func (e *Enclave) Start(ctx context.Context) error {
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		return fmt.Errorf("enclave %s: already started", e.name)
	}
	e.started = true
	e.state = StateStarting
	e.mu.Unlock()
	if !e.cfg.Backend.Isolated() {
		e.log.Warn("enclave: INPROC BACKEND — the trusted runtime runs inside the host process with NO ISOLATION; its evidence is marked debug. For tests and development only.")
	}
	go e.supervise()
	select {
	case err := <-e.firstReady:
		if err != nil {
			<-e.done
			return err
		}
		return nil
	case <-ctx.Done():
		e.Stop(context.Background())
		return fmt.Errorf("enclave %s: start: %w", e.name, ctx.Err())
	}
}

// Addresses returns the addresses to consume: those the image registered
// (in its first Ready) that the configuration allows, sorted.
func (e *Enclave) Addresses() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.addresses)
}

// Refused returns the addresses the image registered but the configuration
// does not allow.
func (e *Enclave) Refused() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.refused)
}

// State returns the current state.
func (e *Enclave) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state
}

// PID returns the process ID of the running instance (0 when down or in
// process).
func (e *Enclave) PID() int {
	if s := e.cur.Load(); s != nil {
		return s.proc.PID()
	}
	return 0
}

// Transport returns how frames cross to the running instance: "shm"
// (shared-memory rings), "pipe", "inproc" (in-memory pipes of the inproc
// backend), or "" while it is down.
func (e *Enclave) Transport() string {
	s := e.cur.Load()
	if s == nil {
		return ""
	}
	if t, ok := s.proc.(interface{ Transport() string }); ok {
		return t.Transport()
	}
	if !e.cfg.Backend.Isolated() {
		return "inproc"
	}
	return "pipe"
}

// Restarts returns how many times the enclave was restarted.
func (e *Enclave) Restarts() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.restarts
}

// InFlight returns how many requests the running instance has not answered
// yet.
func (e *Enclave) InFlight() int {
	if s := e.cur.Load(); s != nil {
		return int(s.inflight.Load())
	}
	return 0
}

// Stats returns the boundary traffic of the running instance.
func (e *Enclave) Stats() boundary.Stats {
	if s := e.cur.Load(); s != nil {
		st := s.conn.Stats()
		o := s.out.Stats()
		st.FramesSent, st.Writes, st.BytesSent = o.Frames, o.Writes, o.Bytes
		return st
	}
	return boundary.Stats{}
}

// Health returns nil when the enclave is up and answers a Health ECALL
// (bounded by ctx, at most 5 s) as healthy; otherwise an error saying why,
// a *DownError while it is down or restarting.
func (e *Enclave) Health(ctx context.Context) error {
	s := e.cur.Load()
	if s == nil {
		return e.downError()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	st, err := s.health(ctx)
	if err != nil {
		return fmt.Errorf("enclave %s: health: %w", e.name, err)
	}
	if !st.Healthy {
		return fmt.Errorf("enclave %s: unhealthy: %s", e.name, st.Detail)
	}
	return nil
}

func (e *Enclave) downError() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	de := &DownError{Name: e.name, State: e.state, Restarts: e.restarts, Cause: e.lastErr}
	if e.state == StateRestarting {
		de.NextAttempt = e.nextAt
	}
	return de
}

// HandleMessage hands m to the enclave as a Deliver ECALL and returns at
// once; the reply comes back asynchronously. When the enclave is down, a
// request fails at once with a recipient failure (CodeUnavailable), a
// durable message is handed back for redelivery, and any other message is
// dropped (and logged). It makes the Enclave a bus.Handler.
func (e *Enclave) HandleMessage(ctx context.Context, m *bus.Message) {
	s := e.cur.Load()
	if s == nil {
		switch {
		case m.ReplyExpected():
			_ = m.Fail(CodeUnavailable, e.downError().Error())
		case m.AtLeastOnce():
			m.Hold()(e.downError())
		default:
			e.log.Warn("enclave: dropped a message: the enclave is down", "address", m.Address())
		}
		return
	}
	var w waiter
	kind := wire.KindSend
	switch {
	case m.ReplyExpected():
		w, kind = &busWaiter{e: e, m: m}, wire.KindRequest
	case m.AtLeastOnce():
		// A durable message is complete when the enclave's handler is.
		w = ackWaiter{e: e, release: m.Hold()}
	}
	if kind != wire.KindRequest && m.Kind() == bus.KindPublish {
		kind = wire.KindPublish
	}
	s.deliver(w, kind, m.Address(), m.Headers(), m.Body())
}

// Stop shuts the enclave down: a Shutdown ECALL lets it drain until ctx
// ends (or Config.ShutdownGrace without a deadline), then it is killed.
// Requests still in flight fail with CodeUnavailable. Stop does not restart
// it, and returns when the supervisor has ended.
func (e *Enclave) Stop(ctx context.Context) error {
	e.mu.Lock()
	if !e.started {
		e.state = StateStopped
		e.mu.Unlock()
		return nil
	}
	first := !e.stopping
	e.stopping = true
	e.mu.Unlock()
	if first {
		close(e.stopCh)
	}
	if s := e.cur.Load(); s != nil {
		grace := e.cfg.ShutdownGrace
		if dl, ok := ctx.Deadline(); ok {
			grace = time.Until(dl) * 3 / 4 // leave time to kill it
		}
		if grace > 0 {
			_ = s.out.send(&boundary.Shutdown{Grace: grace, Reason: "host is stopping the enclave"}, true)
			t := time.NewTimer(grace + 100*time.Millisecond)
			select {
			case <-s.done:
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		s.finish(errors.New("enclave stopped by the host"))
	}
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("enclave %s: stop: %w", e.name, ctx.Err())
	}
}

// supervise launches the enclave and relaunches it with backoff until Stop.
func (e *Enclave) supervise() {
	defer close(e.done)
	first := true
	attempt := 0
	for {
		s, err := e.launch()
		if err != nil {
			if first {
				e.setState(StateStopped, err)
				e.firstReady <- err
				return
			}
			e.log.Error("enclave: restart failed", "error", err, "attempt", attempt+1)
			e.setState(StateRestarting, err)
		} else {
			upSince := time.Now()
			if first {
				if err := e.acceptAddresses(s.ready); err != nil {
					s.finish(err)
					s.ended()
					e.setState(StateStopped, err)
					e.firstReady <- err
					return
				}
			} else {
				e.checkAddresses(s.ready)
			}
			e.mu.Lock()
			e.state, e.lastErr, e.nextAt = StateUp, nil, time.Time{}
			e.workers = int(s.ready.Workers)
			e.mu.Unlock()
			e.cur.Store(s)
			if first {
				first = false
				e.firstReady <- nil
			}
			e.log.Info("enclave: up", "pid", s.proc.PID(), "workers", s.ready.Workers, "addresses", e.Addresses())
			select {
			case <-s.done:
			case <-e.stopCh:
				<-s.done
			}
			e.cur.CompareAndSwap(s, nil)
			cause := s.cause()
			s.ended()
			if perr := s.proc.Err(); perr != nil {
				cause = fmt.Errorf("%w (process: %v)", cause, perr)
			}
			if time.Since(upSince) > e.cfg.MaxRestartBackoff {
				attempt = 0
			}
			if e.isStopping() {
				e.setState(StateStopped, cause)
				e.log.Info("enclave: stopped")
				return
			}
			e.log.Error("enclave: died; restarting", "error", cause, "pid", s.proc.PID())
			e.setState(StateRestarting, cause)
		}
		delay := e.cfg.RestartBackoff << min(attempt, 30)
		if delay > e.cfg.MaxRestartBackoff || delay <= 0 {
			delay = e.cfg.MaxRestartBackoff
		}
		attempt++
		e.mu.Lock()
		e.nextAt = time.Now().Add(delay)
		e.mu.Unlock()
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-e.stopCh:
			t.Stop()
			e.setState(StateStopped, e.lastCause())
			return
		}
		e.mu.Lock()
		e.restarts++
		e.mu.Unlock()
	}
}

func (e *Enclave) isStopping() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stopping
}

func (e *Enclave) lastCause() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastErr
}

// instanceDown records that the serving instance went down, before the
// supervisor has noticed.
func (e *Enclave) instanceDown(why error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state == StateUp {
		e.state, e.lastErr = StateRestarting, why
		if e.stopping {
			e.state = StateStopped
		}
	}
}

func (e *Enclave) setState(st State, err error) {
	e.mu.Lock()
	e.state, e.lastErr = st, err
	e.mu.Unlock()
}

// acceptAddresses computes the addresses to serve from the first Ready.
func (e *Enclave) acceptAddresses(r *boundary.Ready) error {
	var ok, refused []string
	for _, a := range r.Addresses {
		if bus.ValidateAddress(a) != nil {
			refused = append(refused, a)
			e.log.Error("enclave: refusing an address that is not a valid bus address", "address", a)
			continue
		}
		if allowed(e.cfg.Allow, a) {
			ok = append(ok, a)
		} else {
			refused = append(refused, a)
		}
	}
	if len(refused) > 0 {
		// The deployment narrowed what the image serves on purpose (a
		// coordinator replica serves its own slot's addresses only).
		e.log.Info("enclave: not serving the image's addresses this deployment does not allow", "refused", refused, "allowed", e.cfg.Allow)
	}
	slices.Sort(ok)
	ok = slices.Compact(ok)
	for _, p := range e.cfg.Allow {
		if !slices.ContainsFunc(ok, func(a string) bool { return matchAddress(p, a) }) {
			e.log.Warn("enclave: an allowed address pattern matches nothing the image serves", "pattern", p, "image_addresses", r.Addresses)
		}
	}
	e.mu.Lock()
	e.addresses, e.refused = ok, refused
	e.mu.Unlock()
	if len(ok) == 0 {
		return fmt.Errorf("%w: enclave %s registers %q, the configuration allows %q", ErrNoAddresses, e.name, r.Addresses, e.cfg.Allow)
	}
	return nil
}

// checkAddresses warns when a restarted image registers other addresses.
func (e *Enclave) checkAddresses(r *boundary.Ready) {
	cur := e.Addresses()
	for _, a := range cur {
		if !slices.Contains(r.Addresses, a) {
			e.log.Error("enclave: the restarted image no longer serves an address; its requests will fail", "address", a)
		}
	}
}

// launch starts one instance and waits for its Ready.
func (e *Enclave) launch() (*session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.StartTimeout)
	defer cancel()
	go func() {
		select {
		case <-e.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	proc, err := e.cfg.Backend.Launch(ctx, LaunchSpec{Name: e.cfg.Name, Instance: e.cfg.Instance, Image: e.cfg.Image, Env: e.cfg.Env, Logger: e.cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("enclave %s: launch: %w", e.name, err)
	}
	r, w := proc.Streams()
	// The handshake also ends when the process dies.
	hctx, hcancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-proc.Done():
			hcancel()
		case <-hctx.Done():
		}
	}()
	conn, err := boundary.NewConn(hctx, r, w, boundary.RoleHost, boundary.Options{Limits: e.cfg.Limits})
	hcancel()
	if err != nil {
		proc.Kill()
		<-proc.Done()
		if perr := proc.Err(); perr != nil {
			err = fmt.Errorf("%w (process: %v)", err, perr)
		}
		return nil, fmt.Errorf("enclave %s: %w", e.name, err)
	}
	s := newSession(e, proc, conn)
	mode, secret := boundary.SealSimulated, e.cfg.SealSecret
	if e.cfg.Backend.Name() == "gramine" {
		mode, secret = boundary.SealGramine, nil
	} else if len(secret) == 0 && e.cfg.Simulation != nil {
		secret = e.cfg.Simulation.SealSecret()
	}
	init := &boundary.Init{Identity: e.identity, Name: e.cfg.Name, Instance: uint32(e.cfg.Instance),
		SealMode: mode, SealPolicy: e.cfg.SealPolicy, SealSecret: secret, Config: e.cfg.InitConfig,
		Workers: uint32(e.cfg.Workers), Service: e.cfg.Service}
	if err := s.out.send(init, true); err != nil {
		s.finish(err)
		s.ended()
		return nil, fmt.Errorf("enclave %s: send Init: %w", e.name, err)
	}
	go s.readLoop()
	select {
	case <-s.readyCh:
		return s, nil
	case <-s.done:
		s.ended()
		err := s.cause()
		if perr := proc.Err(); perr != nil {
			err = fmt.Errorf("%w (process: %v)", err, perr)
		}
		return nil, fmt.Errorf("enclave %s: before Ready: %w", e.name, err)
	case <-ctx.Done():
		s.finish(fmt.Errorf("no Ready within %v", e.cfg.StartTimeout))
		s.ended()
		return nil, fmt.Errorf("enclave %s: waiting for Ready: %w", e.name, ctx.Err())
	}
}

// evidenceIssuer returns the issuer for GetEvidence, creating the
// simulated one on first use.
func (e *Enclave) evidenceIssuer() (attest.Issuer, error) {
	e.issuerOnce.Do(func() {
		if e.cfg.Issuer != nil {
			e.issuer = e.cfg.Issuer
			return
		}
		if e.cfg.Backend.Name() == "gramine" {
			e.issuerErr = errors.New("under Gramine the enclave reads its evidence from /dev/attestation itself")
			return
		}
		if e.cfg.Simulation == nil {
			e.issuerErr = errors.New("the host has no simulation root to sign simulated evidence with (enclave.Config.Simulation)")
			return
		}
		id := attest.SimIdentity{MREnclave: e.identity.MREnclave, MRSigner: e.identity.MRSigner,
			ProductID: e.identity.ProductID, SVN: e.identity.SVN, Debug: !e.cfg.Backend.Isolated()}
		e.issuer = e.cfg.Simulation.Issuer(id)
	})
	return e.issuer, e.issuerErr
}

// ---- addresses ----

func validPattern(p string) error { return bus.ValidatePattern(p) }

func matchAddress(pattern, address string) bool { return bus.MatchAddress(pattern, address) }

func allowed(patterns []string, address string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if matchAddress(p, address) {
			return true
		}
	}
	return false
}

// ---- replies ----

// waiter is whoever waits for the answer to one delivery: Reply or Fail
// for a request, Done or Fail for an acknowledged send or publish.
type waiter interface {
	reply(r *boundary.Reply)
	done()
	fail(f *boundary.Fail)
	abort(message string)
}

// busWaiter answers a bus message.
type busWaiter struct {
	e *Enclave
	m *bus.Message
}

func (w *busWaiter) reply(r *boundary.Reply) {
	body, opts, err := busBody(r.Headers, r.Body)
	if err != nil {
		_ = w.m.Fail(CodeInternal, fmt.Sprintf("enclave %s: bad reply: %v", w.e.name, err))
		return
	}
	if err := w.m.Reply(body, opts...); err != nil {
		w.e.log.Warn("enclave: could not pass a reply on", "address", w.m.Address(), "error", err)
	}
}

// done: a Done answers sends, not requests.
func (w *busWaiter) done() {
	_ = w.m.Fail(CodeInternal, fmt.Sprintf("enclave %s: answered a request with Done", w.e.name))
}

func (w *busWaiter) fail(f *boundary.Fail) {
	code, msg := int(f.Code), f.Message
	switch f.Kind {
	case boundary.FailApplication:
	case boundary.FailNoHandler:
		code = CodeNoHandler
	case boundary.FailOverloaded:
		code = CodeOverloaded
	case boundary.FailShuttingDown:
		code = CodeUnavailable
	default: // panic, internal
		code = CodeInternal
	}
	if f.Kind != boundary.FailApplication {
		msg = fmt.Sprintf("enclave %s: %s: %s", w.e.name, f.Kind, msg)
	}
	_ = w.m.Fail(code, msg)
}

func (w *busWaiter) abort(message string) { _ = w.m.Fail(CodeUnavailable, message) }

// ackWaiter completes an acknowledged (durable) send or publish: handled
// on Done, handed back for redelivery on Fail or when the enclave went down.
type ackWaiter struct {
	e       *Enclave
	release func(error)
}

func (w ackWaiter) reply(*boundary.Reply) { w.release(nil) }
func (w ackWaiter) done()                 { w.release(nil) }
func (w ackWaiter) fail(f *boundary.Fail) {
	w.release(fmt.Errorf("enclave %s: %s: %s", w.e.name, f.Kind, f.Message))
}
func (w ackWaiter) abort(message string) { w.release(errors.New(message)) }

// busBody turns boundary headers and body into what Message.Reply, Send
// and Request take: reserved headers are dropped, except the codec, which
// is kept by passing the body in a form the bus encodes unchanged.
func busBody(h map[string]string, body []byte) (any, []bus.DeliveryOption, error) {
	var opts []bus.DeliveryOption
	var user bus.Headers
	for k, v := range h {
		if len(k) >= len(bus.ReservedHeaderPrefix) && strings.EqualFold(k[:len(bus.ReservedHeaderPrefix)], bus.ReservedHeaderPrefix) {
			continue
		}
		if user == nil {
			user = make(bus.Headers, len(h))
		}
		user[k] = v
	}
	if user != nil {
		opts = append(opts, bus.WithHeaders(user))
	}
	switch codec := h[bus.HeaderCodec]; codec {
	case "", bus.CodecBytes:
		return body, opts, nil
	case bus.CodecString:
		return string(body), opts, nil
	case bus.CodecJSON:
		if !json.Valid(body) {
			return nil, nil, errors.New("body marked as JSON is not valid JSON")
		}
		return json.RawMessage(body), append(opts, bus.CodecName(bus.CodecJSON)), nil
	default:
		return nil, nil, fmt.Errorf("codec %q cannot cross the boundary (use bytes, string or json)", codec)
	}
}

// chanWaiter hands the answer to a channel (benchmarks, tests).
type chanWaiter chan boundary.Message

func (c chanWaiter) reply(r *boundary.Reply) { c <- r }
func (c chanWaiter) done()                   { c <- &boundary.Done{} }
func (c chanWaiter) fail(f *boundary.Fail)   { c <- f }
func (c chanWaiter) abort(message string) {
	c <- &boundary.Fail{Kind: boundary.FailInternal, Code: CodeUnavailable, Message: message}
}
