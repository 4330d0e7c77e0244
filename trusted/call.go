package trusted

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/seal"
	"github.com/cloister-dev/cloister/wire"
)

// Runtime is the enclave instance as seen by handlers: the OCALLs it can
// make and what the host said in Init. It is safe for concurrent use. Every
// *Call embeds it.
type Runtime struct {
	s   *session
	log *slog.Logger

	identity Identity
	name     string
	service  string
	instance uint32
	config   []byte

	sealer   *seal.Sealer
	sealErr  error
	sealMode string // "gramine", "simulated" or "custom"
	nameKey  []byte // HMAC key for the storage names the host sees
	store    storeCache
	tracker  StoreTracker // see TrackStore
}

// Identity is the enclave identity as the host measured or was told it.
// Under simulation it is what the seal keys are derived from; under SGX the
// enclave ignores it for sealing (the CPU knows better).
type Identity struct {
	MREnclave [32]byte
	MRSigner  [32]byte
	ProductID uint16
	SVN       uint16
}

// Identity returns the enclave identity the host reported in Init (under
// simulation, the one seal keys derive from).
func (rt *Runtime) Identity() Identity { return rt.identity }

// Name returns the instance's name from Init (for logs).
func (rt *Runtime) Name() string { return rt.name }

// ServiceToJoin returns the manifest service the host asked the instance to
// join as in Init ("" for none); a Layer that joins reads it.
func (rt *Runtime) ServiceToJoin() string { return rt.service }

// Layer returns the instance's layer (nil without Options.Layer).
func (rt *Runtime) Layer() Layer { return rt.s.layer }

// StorageErr returns why protected storage is unavailable (nil when Put
// and Get work).
func (rt *Runtime) StorageErr() error { return rt.sealErr }

// Go runs f in a goroutine that Serve waits for before it returns; f gets
// a context that ends when the instance stops. Layers run their background
// work with it.
func (rt *Runtime) Go(f func(ctx context.Context)) {
	rt.s.wg.Go(func() { f(rt.s.ctx) })
}

// Fatal ends the instance because of err, which the host receives as the
// Fatal reason (Serve returns context.Canceled): for a Layer's background
// work that finds the instance must not go on serving.
func (rt *Runtime) Fatal(err error) {
	rt.log.Error("stopping the enclave", "err", err.Error())
	rt.s.fatal(err)
	rt.s.halt()
}

// Instance returns the instance number from Init.
func (rt *Runtime) Instance() uint32 { return rt.instance }

// Config returns the image configuration bytes from Init (host-supplied:
// treat as untrusted input). Do not modify.
func (rt *Runtime) Config() []byte { return rt.config }

// SealMode returns where the storage keys come from: "gramine",
// "simulated" or "custom" (Options.KeySource); empty if none is available.
func (rt *Runtime) SealMode() string { return rt.sealMode }

// Logger returns a logger whose records go to the host as Log OCALLs. The
// host reads them in plaintext: never log secrets or payloads.
func (rt *Runtime) Logger() *slog.Logger { return rt.log }

// init applies the Init frame: identity, config and seal keys.
func (rt *Runtime) init(in *boundary.Init) {
	rt.identity = Identity(in.Identity)
	rt.name, rt.service, rt.instance, rt.config = in.Name, in.Service, in.Instance, in.Config
	src, mode, err := rt.s.app.keySource(in)
	if err != nil {
		rt.sealErr = err
		return
	}
	rt.sealMode = mode
	policy := rt.s.opts.SealPolicy
	if policy == 0 {
		policy = seal.Policy(in.SealPolicy)
	}
	if policy == 0 {
		policy = seal.PolicyMRENCLAVE
	}
	sealer, err := seal.NewSealer(src, policy)
	if err != nil {
		rt.sealErr = fmt.Errorf("trusted: protected storage: %w", err)
		return
	}
	rt.nameKey, err = sealer.Derive("trusted/store-names", 32)
	if err != nil {
		rt.sealErr = fmt.Errorf("trusted: protected storage: %w", err)
		return
	}
	rt.sealer = sealer
}

// ErrSimulationRefused is returned when the host asks for simulated sealing
// in an enclave that has hardware seal keys.
var ErrSimulationRefused = errors.New("trusted: host asked for simulated sealing but this enclave runs under Gramine with hardware seal keys; refusing the downgrade")

// ErrNoPlatformSecret is the protected-storage error of a simulated
// enclave whose host sent no platform secret in Init: the image never looks
// for one on the machine itself.
var ErrNoPlatformSecret = errors.New("trusted: simulated sealing needs a platform secret and the host sent none in Init")

func (a *App) keySource(in *boundary.Init) (seal.KeySource, string, error) {
	if a.opts.KeySource != nil {
		return a.opts.KeySource, "custom", nil
	}
	g := seal.GramineKeySource{Root: a.opts.GramineRoot}
	switch {
	case g.Available():
		if in.SealMode == boundary.SealSimulated {
			return nil, "", ErrSimulationRefused
		}
		return g, "gramine", nil
	case in.SealMode == boundary.SealGramine || os.Getenv(boundary.EnvGramineSeal) == "gramine":
		_, err := g.RootKey(seal.PolicyMRENCLAVE)
		return nil, "", fmt.Errorf("trusted: Gramine sealing requested but unavailable: %w", err)
	}
	if len(in.SealSecret) == 0 {
		return nil, "", ErrNoPlatformSecret
	}
	return &seal.SimulatedKeySource{Secret: in.SealSecret, MREnclave: in.Identity.MREnclave, MRSigner: in.Identity.MRSigner}, "simulated", nil
}

// Send sends body to address, point to point, through the host (Send
// OCALL). It returns once the frame is on its way; delivery is not
// confirmed. A Layer may check and transform it (the secured-address layer
// needs the grant's send right and seals for a secured address).
func (rt *Runtime) Send(ctx context.Context, address string, headers map[string]string, body []byte) error {
	return rt.oneWay(ctx, wire.KindSend, address, headers, body)
}

// Publish publishes body to every consumer of address through the host
// (Publish OCALL); a Layer may check and transform it, as for Send.
func (rt *Runtime) Publish(ctx context.Context, address string, headers map[string]string, body []byte) error {
	return rt.oneWay(ctx, wire.KindPublish, address, headers, body)
}

// oneWay is Send (kind wire.KindSend) and Publish.
func (rt *Runtime) oneWay(ctx context.Context, kind wire.Kind, address string, headers map[string]string, body []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if l := rt.s.layer; l != nil {
		var err error
		if headers, body, _, err = l.Outgoing(address, kind, headers, body); err != nil {
			return err
		}
	}
	if err := rt.hold(ctx); err != nil {
		return fmt.Errorf("trusted: %s to %q: %w", kind, address, err)
	}
	headers = passTrace(ctx, headers)
	var m boundary.Message = &boundary.Send{Address: address, Headers: headers, Body: body}
	if kind == wire.KindPublish {
		m = &boundary.Publish{Address: address, Headers: headers, Body: body}
	}
	if err := rt.s.conn.Send(m); err != nil {
		return fmt.Errorf("trusted: %s to %q: %w", kind, address, err)
	}
	return nil
}

// Response is the reply to a Request.
type Response struct {
	Headers map[string]string
	Body    []byte
}

// RequestError is a failed Request: the failure kind, and for
// wire.FailureRecipient the recipient's code and message.
type RequestError struct {
	Address string
	Failure wire.Failure
	Code    int
	Message string
}

// Error names the address and the failure.
func (e *RequestError) Error() string {
	if e.Failure == wire.FailureRecipient {
		return fmt.Sprintf("trusted: request to %q: recipient failure: code %d: %s", e.Address, e.Code, e.Message)
	}
	s := fmt.Sprintf("trusted: request to %q: %s", e.Address, e.Failure)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Request sends body to address and waits for the reply (Request OCALL,
// answered by a RequestResult ECALL). timeout is passed to the host; zero
// means the time left in ctx, or the host's default. A failed request
// returns a *RequestError; ctx ending returns ctx's error.
//
// A Layer may check and transform the request and its reply (see
// trusted/secured for what the secured-address layer does).
func (rt *Runtime) Request(ctx context.Context, address string, headers map[string]string, body []byte, timeout time.Duration) (*Response, error) {
	l := rt.s.layer
	if l == nil {
		return rt.request(ctx, address, headers, body, timeout)
	}
	headers, body, open, err := l.Outgoing(address, wire.KindRequest, headers, body)
	if err != nil {
		return nil, err
	}
	r, err := rt.request(ctx, address, headers, body, timeout)
	if err != nil || open == nil {
		return r, err
	}
	return open(r.Body)
}

// request is Request without the layer.
func (rt *Runtime) request(ctx context.Context, address string, headers map[string]string, body []byte, timeout time.Duration) (*Response, error) {
	if timeout <= 0 {
		if dl, ok := ctx.Deadline(); ok {
			timeout = max(time.Until(dl), time.Millisecond)
		}
	}
	if err := rt.hold(ctx); err != nil {
		return nil, fmt.Errorf("trusted: request to %q: %w", address, err)
	}
	headers = passTrace(ctx, headers)
	m, err := rt.s.call(ctx, func(id uint64) boundary.Message {
		return &boundary.Request{CallID: id, Timeout: timeout, Address: address, Headers: headers, Body: body}
	})
	if err != nil {
		return nil, fmt.Errorf("trusted: request to %q: %w", address, err)
	}
	r := m.(*boundary.RequestResult)
	if r.Failure != wire.FailureNone {
		return nil, &RequestError{Address: address, Failure: r.Failure, Code: int(r.Code), Message: r.Message}
	}
	return &Response{Headers: r.Headers, Body: r.Body}, nil
}

// Evidence is attestation evidence the host obtained for the enclave.
type Evidence struct {
	Type  string // e.g. "simulated" or "sgx-dcap"
	Quote []byte
}

// ErrNoEvidence wraps the host's reason for not providing evidence.
var ErrNoEvidence = errors.New("trusted: no evidence")

// Evidence returns attestation evidence binding reportData: from
// Options.Evidence if set; else, under Gramine (<GramineRoot>/user_report_data
// exists), a DCAP quote the enclave reads itself by writing reportData to
// <GramineRoot>/user_report_data and reading <GramineRoot>/quote; else from
// the host (GetEvidence OCALL; the process backend returns a simulated
// quote). Evidence must be verified by whoever relies on it.
func (rt *Runtime) Evidence(ctx context.Context, reportData [64]byte) (*Evidence, error) {
	if f := rt.s.opts.Evidence; f != nil {
		return f(ctx, reportData)
	}
	if root := rt.s.app.attestationRoot(); root != "" {
		return rt.s.app.gramineEvidence(root, reportData)
	}
	m, err := rt.s.call(ctx, func(id uint64) boundary.Message {
		return &boundary.GetEvidence{CallID: id, ReportData: reportData}
	})
	if err != nil {
		return nil, fmt.Errorf("trusted: evidence: %w", err)
	}
	r := m.(*boundary.EvidenceResult)
	if r.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrNoEvidence, r.Error)
	}
	return &Evidence{Type: r.EvidenceType, Quote: r.Quote}, nil
}

// Call is one delivery to a handler. It embeds the *Runtime, so a handler
// can c.Send, c.Request, c.Put, c.Logger() and so on.
type Call struct {
	*Runtime
	handler Handler
	token   uint64 // a request's reply token (0 for sends and publishes)
	// doneToken: a send or publish whose handling the host must learn of
	// (a durable message); Done or Fail answers it when the handler ends.
	doneToken uint64
	kind      wire.Kind
	timeout   time.Duration
	address   string
	headers   map[string]string
	body      []byte
	done      atomic.Bool
	opened    Opened // what the layer kept to answer it (nil if nothing)
}

// handled tells the host that the handler of an acknowledged send or publish
// has ended: handled (f nil) or not (f: why, sent as a Fail). It does
// nothing for other deliveries.
func (c *Call) handled(f *boundary.Fail) {
	if c.doneToken == 0 {
		return
	}
	var m boundary.Message = &boundary.Done{Token: c.doneToken}
	if f != nil {
		f.Token = c.doneToken
		m = f
	}
	c.doneToken = 0
	if err := c.hold(c.s.ctx); err != nil {
		c.s.rt.log.Warn("a handled message is not reported: protected storage did not become durable", "address", c.address, "err", err)
		return
	}
	if err := c.s.conn.Send(m); err != nil && !errors.Is(err, boundary.ErrClosed) {
		c.s.rt.log.Warn("could not report a handled message to the host", "address", c.address, "err", err)
	}
}

// Errors of Reply and Fail.
var (
	ErrAlreadyAnswered = errors.New("trusted: call already answered")
	ErrNoReplyExpected = errors.New("trusted: call expects no reply (send or publish)")
)

// Address returns the address the message was sent to.
func (c *Call) Address() string { return c.address }

// Kind returns how the message was sent (wire.KindSend, KindPublish or
// KindRequest).
func (c *Call) Kind() wire.Kind { return c.kind }

// ExpectsReply reports whether the caller waits for Reply or Fail.
func (c *Call) ExpectsReply() bool { return c.token != 0 }

// Headers returns the message headers (nil if none). Do not modify.
func (c *Call) Headers() map[string]string { return c.headers }

// Header returns one header value ("" if absent).
func (c *Call) Header(key string) string { return c.headers[key] }

// Body returns the message body. Do not modify.
func (c *Call) Body() []byte { return c.body }

// Timeout returns the time the requester allowed (0 if none); the handler's
// context has this deadline.
func (c *Call) Timeout() time.Duration { return c.timeout }

// Reply answers a request with headers and body (Reply OCALL). It may be
// called from any goroutine, also after the handler returned, and only once.
// A Layer that opened the request seals the reply (see trusted/secured).
func (c *Call) Reply(headers map[string]string, body []byte) error {
	if c.token == 0 {
		return ErrNoReplyExpected
	}
	var err error
	if c.opened != nil {
		headers, body, err = c.opened.SealReply(headers, body)
	}
	if err != nil {
		if c.done.Load() {
			return ErrAlreadyAnswered
		}
		c.answer(&boundary.Fail{Token: c.token, Kind: boundary.FailInternal, Message: fmt.Sprintf("could not seal the reply on %q", c.address)})
		return err
	}
	return c.answer(&boundary.Reply{Token: c.token, Headers: headers, Body: body})
}

// Fail answers a request with a failure code and message (Fail OCALL); the
// requester sees a recipient failure.
func (c *Call) Fail(code int, message string) error {
	return c.answer(&boundary.Fail{Token: c.token, Kind: boundary.FailApplication, Code: int32(code), Message: message})
}

func (c *Call) answer(m boundary.Message) error {
	if c.token == 0 {
		return ErrNoReplyExpected
	}
	if !c.done.CompareAndSwap(false, true) {
		return ErrAlreadyAnswered
	}
	defer c.s.answered()
	if c.opened != nil {
		// A client-session message counts as seen once answered, and
		// only if it succeeded: a failed one may be retried.
		_, ok := m.(*boundary.Reply)
		c.opened.Settle(ok)
	}
	if err := c.hold(c.s.ctx); err != nil {
		return fmt.Errorf("trusted: answer %q: %w", c.address, err)
	}
	err := c.s.conn.Send(m)
	if errors.Is(err, boundary.ErrFrameTooLarge) {
		// The requester must still learn that the call failed.
		c.s.conn.Send(&boundary.Fail{Token: c.token, Kind: boundary.FailInternal,
			Message: fmt.Sprintf("answer from %q too large for the boundary: %v", c.address, err)})
	}
	if err != nil {
		return fmt.Errorf("trusted: answer %q: %w", c.address, err)
	}
	return nil
}
