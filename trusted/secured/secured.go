package trusted

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/wire"
)

// CodeRejected is the failure code of a request on a secured or
// client-channel address whose message the runtime rejected (it did not
// open, was replayed, came in the clear, or the service may not consume the
// address). The handler never ran.
const CodeRejected = 400

// CodeNotAllowed is the failure code of a request delivered on an address
// the service's grant gives it no right to consume.
const CodeNotAllowed = 403

// CodeAlreadyHandled is the failure code of a copy of a client-session
// message that was already handled (a replay, or a retry whose first try
// succeeded). Nothing is lost: a forwarder may acknowledge it.
const CodeAlreadyHandled = 409

// CodeSessionUnknown is the failure code of a client-session message whose
// session this enclave does not hold (it restarted, forgot the session,
// the session expired, or the handshake is under a channel key the service
// no longer holds). The handler never ran: the client seals the message
// again in a new session (package client does so by itself).
const CodeSessionUnknown = 410

// CodeBusy is the failure code of a client-session message refused for now:
// a copy of it is being handled, or its client opened too many sessions
// recently. Retry later.
const CodeBusy = 429

// Errors of the secured-address layer.
var (
	// ErrNotAllowed: the grant gives the service no such right on the
	// address (Send, Publish or Request refused inside the enclave).
	ErrNotAllowed = errors.New("trusted: not allowed by the grant")
	// ErrRejected: a reply on a secured or client-channel address did not
	// open; the reason is wrapped too (a secure.Err*).
	ErrRejected = errors.New("trusted: message rejected")
)

// Rejection reasons, as counted by Runtime.Rejections.
const (
	ReasonMalformed         = "malformed"
	ReasonUnknownEpoch      = "unknown-epoch"
	ReasonEpochRetired      = "epoch-retired"
	ReasonAuth              = "auth"
	ReasonReplay            = "replay"
	ReasonTooOld            = "too-old"
	ReasonWrongKind         = "wrong-kind"
	ReasonWrongRequest      = "wrong-request"
	ReasonTooManySenders    = "too-many-senders"
	ReasonNotAllowed        = "not-allowed"     // no consume right on the address
	ReasonPlaintext         = "plaintext"       // a client-channel address got something else
	ReasonUnauthenticated   = "unauthenticated" // no credential, an unknown client, or another client's name
	ReasonSessionUnknown    = "session-unknown"
	ReasonInProgress        = "in-progress"
	ReasonClockSkew         = "clock-skew"
	ReasonTooManyHandshakes = "too-many-handshakes"
	ReasonOther             = "other"
)

// codeFor returns the failure code a requester gets for a rejection reason.
func codeFor(why string) int {
	switch why {
	case ReasonNotAllowed:
		return CodeNotAllowed
	case ReasonSessionUnknown:
		return CodeSessionUnknown
	case ReasonInProgress, ReasonTooManyHandshakes:
		return CodeBusy
	}
	return CodeRejected
}

// retryable reports whether a delivery refused for why may succeed if the
// same bytes are delivered again later.
func retryable(why string) bool {
	return why == ReasonInProgress || why == ReasonTooManyHandshakes
}

// HealthRejectionsPrefix starts HealthStatus.Detail when the runtime has
// rejected messages: the prefix, then JSON {address: {reason: count}}. The
// host (package enclave) parses it; it carries counts only.
const HealthRejectionsPrefix = "rejected="

// reason maps a rejection error to its counter name.
func reason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{secure.ErrMalformed, ReasonMalformed}, {secure.ErrUnknownEpoch, ReasonUnknownEpoch},
		{secure.ErrEpochRetired, ReasonEpochRetired}, {secure.ErrAuth, ReasonAuth},
		{secure.ErrReplay, ReasonReplay}, {secure.ErrTooOld, ReasonTooOld},
		{secure.ErrWrongKind, ReasonWrongKind}, {secure.ErrWrongRequest, ReasonWrongRequest},
		{secure.ErrTooManySenders, ReasonTooManySenders}, {ErrNotAllowed, ReasonNotAllowed},
		{errPlaintext, ReasonPlaintext}, {secure.ErrUnauthenticated, ReasonUnauthenticated},
		{secure.ErrSessionUnknown, ReasonSessionUnknown}, {secure.ErrInProgress, ReasonInProgress},
		{secure.ErrClockSkew, ReasonClockSkew}, {secure.ErrTooManyHandshakes, ReasonTooManyHandshakes},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return ReasonOther
}

var errPlaintext = errors.New("trusted: not a client-channel message")

// granted is one address of the grant with the state to use it.
type granted struct {
	provision.AddressGrant
	opener  *secure.Opener                  // secured addresses
	keys    map[uint32][secure.KeySize]byte // the grant's keys by epoch
	sealers map[uint32]*secure.Sealer       // by epoch, made on first use
	dirty   *atomic.Bool                    // windows changed since saved
}

// keys is what the runtime holds after joining: the grant's rights, keys and
// secrets. The session has at most one.
type keys struct {
	rt *Runtime

	mu        sync.RWMutex
	grant     *provision.Grant // Keys cleared; kept in the openers
	addresses map[string]*granted
	channel   *secure.ServiceKey
	info      []byte                       // secure.ChannelInfo(service, manifest hash)
	clients   map[string]ed25519.PublicKey // the manifest's clients
	sessions  *secure.SessionTable

	joinMu   sync.Mutex      // one join at a time
	lastJoin time.Time       // guarded by joinMu
	ctx      context.Context // the session's: background re-joins end with it

	countMu  sync.Mutex
	rejected map[string]map[string]uint64
}

func newKeys(rt *Runtime) *keys {
	return &keys{rt: rt, addresses: map[string]*granted{}, rejected: map[string]map[string]uint64{},
		sessions: secure.NewSessionTable(rt.s.opts.Sessions)}
}

// apply installs a grant: new rights, new epochs' keys; epochs the grant no
// longer holds are retired, the previous epoch at the end of its grace.
func (k *keys) apply(g *provision.Grant) error {
	addrs := make(map[string]*granted, len(g.Addresses))
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, ag := range g.Addresses {
		old := k.addresses[ag.Address]
		n := &granted{AddressGrant: ag, keys: map[uint32][secure.KeySize]byte{}, sealers: map[uint32]*secure.Sealer{}, dirty: new(atomic.Bool)}
		n.Keys = nil
		if old != nil {
			// Shared, so that calls holding the old entry stay consistent.
			n.opener, n.keys, n.sealers, n.dirty = old.opener, old.keys, old.sealers, old.dirty
		}
		if ag.Secured {
			if n.opener == nil {
				o, err := secure.NewOpener(ag.Address, secure.OpenerOptions{})
				if err != nil {
					return fmt.Errorf("trusted: grant: %w", err)
				}
				n.opener = o
			}
			held := map[uint32]bool{}
			for _, ek := range ag.Keys {
				held[ek.Epoch] = true
				if len(ek.Key) != secure.KeySize {
					return fmt.Errorf("trusted: grant: key of %q epoch %d: %d bytes", ag.Address, ek.Epoch, len(ek.Key))
				}
				if slices.Contains(n.opener.Epochs(), ek.Epoch) {
					continue
				}
				ak := secure.AddressKey{Address: ag.Address, Epoch: ek.Epoch}
				copy(ak.Key[:], ek.Key)
				n.keys[ek.Epoch] = ak.Key
				err := n.opener.AddKey(ak)
				clear(ak.Key[:])
				if err != nil {
					return fmt.Errorf("trusted: grant: %w", err)
				}
			}
			if !held[g.Epoch] {
				return fmt.Errorf("trusted: grant: no key of the current epoch %d for %q", g.Epoch, ag.Address)
			}
			for _, e := range n.opener.Epochs() {
				switch {
				case e == g.Epoch:
				case held[e] && !g.GraceUntil.IsZero():
					n.opener.RetireAfter(e, g.GraceUntil)
				default:
					n.opener.Retire(e)
				}
			}
			for e := range n.sealers {
				if e != g.Epoch {
					delete(n.sealers, e)
				}
			}
			for e := range n.keys {
				if !held[e] {
					delete(n.keys, e)
				}
			}
		}
		addrs[ag.Address] = n
	}
	var ch *secure.ServiceKey
	if g.ChannelKey != nil {
		var err error
		if ch, err = secure.ParseServiceKey(g.ChannelKey); err != nil {
			return fmt.Errorf("trusted: grant: channel key: %w", err)
		}
	}
	clients := make(map[string]ed25519.PublicKey, len(g.Clients))
	for name, pub := range g.Clients {
		if len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("trusted: grant: client %q: key of %d bytes", name, len(pub))
		}
		clients[name] = ed25519.PublicKey(pub)
	}
	var hash [32]byte
	copy(hash[:], g.ManifestHash)
	gc := *g
	gc.Addresses, gc.ChannelKey, gc.Clients = nil, nil, nil
	if k.channel == nil || ch == nil || !k.channel.PublicKey().Equal(ch.PublicKey()) || (k.grant != nil && k.grant.ManifestVersion != g.ManifestVersion) {
		// Sessions are bound to the channel key and the manifest: a new
		// one ends them (their clients seal again in new sessions).
		k.sessions.Clear()
	}
	k.grant, k.addresses, k.channel, k.clients = &gc, addrs, ch, clients
	k.info = secure.ChannelInfo(g.Service, hash)
	return nil
}

// address returns the grant's entry for address (nil if none).
func (k *keys) address(address string) *granted {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.addresses[address]
}

// epoch returns the current key epoch.
func (k *keys) epoch() uint32 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.grant == nil {
		return 0
	}
	return k.grant.Epoch
}

// sealer returns the Sealer of address for epoch (0: the current epoch, or
// if the epoch is no longer held, the current one).
func (k *keys) sealer(a *granted, epoch uint32) (*secure.Sealer, error) {
	k.mu.RLock()
	e := epoch
	if e == 0 {
		e = k.grant.Epoch
	}
	s := a.sealers[e]
	k.mu.RUnlock()
	if s != nil {
		return s, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := a.keys[epoch]; epoch == 0 || !ok || !slices.Contains(a.opener.Epochs(), epoch) {
		epoch = k.grant.Epoch
	}
	if s := a.sealers[epoch]; s != nil {
		return s, nil
	}
	raw, ok := a.keys[epoch]
	if !ok {
		return nil, fmt.Errorf("trusted: no key of epoch %d for %q", epoch, a.Address)
	}
	key := secure.AddressKey{Address: a.Address, Epoch: epoch, Key: raw}
	s, err := secure.NewSealer(key)
	clear(key.Key[:])
	if err != nil {
		return nil, fmt.Errorf("trusted: sealer for %q: %w", a.Address, err)
	}
	a.sealers[epoch] = s
	return s, nil
}

// count records one rejection.
func (k *keys) count(address, why string) {
	k.countMu.Lock()
	defer k.countMu.Unlock()
	m := k.rejected[address]
	if m == nil {
		m = map[string]uint64{}
		k.rejected[address] = m
	}
	m[why]++
}

// rejections returns a copy of the counters.
func (k *keys) rejections() map[string]map[string]uint64 {
	k.countMu.Lock()
	defer k.countMu.Unlock()
	out := make(map[string]map[string]uint64, len(k.rejected))
	for a, m := range k.rejected {
		out[a] = maps.Clone(m)
	}
	return out
}

// healthDetail renders the counters for HealthStatus.Detail ("" if none).
func (k *keys) healthDetail() string {
	r := k.rejections()
	if len(r) == 0 {
		return ""
	}
	b, err := json.Marshal(r)
	if err != nil {
		return ""
	}
	return HealthRejectionsPrefix + string(b)
}

// open turns a delivery on a granted address into plaintext for the
// handler, or returns why it is rejected.
func (k *keys) open(c *Call) error {
	a := k.address(c.address)
	if a == nil || !a.Consume {
		return fmt.Errorf("%w: the grant of %s gives no right to consume %q", ErrNotAllowed, k.service(), c.address)
	}
	if a.Clients && (secure.IsSessionMessage(c.body) || bytes.HasPrefix(c.body, []byte("CSQ"))) {
		return k.openClient(c)
	}
	if !a.Secured {
		if a.Clients {
			return fmt.Errorf("%w: %q accepts client-channel messages only", errPlaintext, c.address)
		}
		return nil // a plain address
	}
	var kind wire.Kind
	switch c.kind {
	case wire.KindSend:
		kind = wire.KindSend
	case wire.KindPublish:
		kind = wire.KindPublish
	default:
		kind = wire.KindRequest
	}
	o, err := a.opener.Open(kind, c.body)
	if err != nil {
		if errors.Is(err, secure.ErrUnknownEpoch) {
			if e, perr := secure.ParseEnvelope(c.body); perr == nil && e.Epoch > k.epoch() {
				// The sender re-joined after a rotation before this
				// enclave heard of it.
				k.rejoinSoon()
			}
		}
		return err
	}
	c.body, c.headers, c.secured = o.Plaintext, o.Headers, &openedRef{ref: o.Ref(), epoch: o.Epoch, a: a}
	if !a.dirty.Load() {
		a.dirty.Store(true)
	}
	return nil
}

// openClient opens a client-session message with the channel key and the
// manifest's client credentials. The message is reserved, not admitted:
// the call commits it when its handler succeeded and releases it when it
// failed, so a retry of a failed message is not taken for a replay.
func (k *keys) openClient(c *Call) error {
	if !secure.IsSessionMessage(c.body) {
		return fmt.Errorf("%w: a one-shot client request (client channel v1) proves no client credential; open a client session", secure.ErrUnauthenticated)
	}
	k.mu.RLock()
	ch, info, clients := k.channel, k.info, k.clients
	k.mu.RUnlock()
	if ch == nil {
		return fmt.Errorf("%w: no client-channel key in the grant", secure.ErrAuth)
	}
	lookup := func(name string) (ed25519.PublicKey, bool) {
		pub, ok := clients[name]
		return pub, ok
	}
	m, err := k.sessions.Open(ch, info, lookup, c.body, time.Now())
	if err != nil {
		if errors.Is(err, secure.ErrSessionUnknown) {
			if h, perr := secure.ParseSessionMessage(c.body); perr == nil && h.Handshake && h.Key != ch.PublicKey().ID() {
				// Sealed to another channel key: perhaps the coordinator
				// issued a new one that this enclave has not fetched yet
				// (rate-limited: the key ID is not authenticated).
				k.rejoinSoon()
			}
		}
		return err
	}
	c.body, c.headers, c.client = m.Plaintext, nil, m
	return nil
}

func (k *keys) service() string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.grant == nil {
		return "this service"
	}
	return "service " + k.grant.Service
}

// outgoing checks the right for an operation and seals body when the
// address is secured. It returns what to put on the bus and, for a secured
// request, the Ref to open the reply with.
func (k *keys) outgoing(address string, kind wire.Kind, headers map[string]string, body []byte) (map[string]string, []byte, *granted, secure.Ref, error) {
	if strings.HasPrefix(address, coordinatorPrefix) {
		return headers, body, nil, secure.Ref{}, nil
	}
	a := k.address(address)
	allowed := a != nil && ((kind == wire.KindPublish && a.Publish) || (kind != wire.KindPublish && a.Send))
	if !allowed {
		op := "send to"
		if kind == wire.KindPublish {
			op = "publish on"
		}
		return nil, nil, nil, secure.Ref{}, fmt.Errorf("%w: %s may not %s %q", ErrNotAllowed, k.service(), op, address)
	}
	if !a.Secured {
		return headers, body, nil, secure.Ref{}, nil
	}
	s, err := k.sealer(a, 0)
	if err != nil {
		return nil, nil, nil, secure.Ref{}, err
	}
	env, ref, err := s.Seal(kind, headers, body)
	if err != nil {
		return nil, nil, nil, secure.Ref{}, fmt.Errorf("trusted: seal for %q: %w", address, err)
	}
	return nil, env, a, ref, nil
}

// coordinatorPrefix starts the coordinator's addresses, which the runtime
// (and images) may always use: they are how a service joins.
const coordinatorPrefix = "cloister.coordinator."

// openedRef is what a Call opened from an envelope needs to seal its reply.
type openedRef struct {
	ref   secure.Ref
	epoch uint32
	a     *granted
}

// sealReply seals a reply to a secured or client-channel request.
func (c *Call) sealReply(headers map[string]string, body []byte) (map[string]string, []byte, error) {
	switch {
	case c.secured != nil:
		s, err := c.s.keys.sealer(c.secured.a, c.secured.epoch)
		if err != nil {
			return nil, nil, err
		}
		env, _, err := s.SealReply(c.secured.ref, headers, body)
		if err != nil {
			return nil, nil, fmt.Errorf("trusted: seal reply on %q: %w", c.address, err)
		}
		return nil, env, nil
	case c.client != nil:
		out, err := c.client.SealReply(body)
		if err != nil {
			return nil, nil, fmt.Errorf("trusted: seal client reply on %q: %w", c.address, err)
		}
		return nil, out, nil
	}
	return headers, body, nil
}

// ---- joining ----

// JoinError is the coordinator's refusal to grant the service keys: its
// code (one of the 4xx provision.Code*) and reason. The enclave reports it
// as Fatal, so the host's start-up failure names it.
type JoinError struct {
	Service string
	Code    int
	Message string
}

// Error names the service and the coordinator's reason.
func (e *JoinError) Error() string {
	return fmt.Sprintf("trusted: the coordinator refused to let this enclave join as service %s (code %d): %s", e.Service, e.Code, e.Message)
}

// ErrGrant is wrapped when the coordinator's answer to a join is not a
// grant for this enclave (it does not open with the joining key, or names
// another service).
var ErrGrant = errors.New("trusted: bad grant")

// join runs the join protocol of package provision once (see the package
// doc) and installs the grant.
func (k *keys) join(ctx context.Context, service string) error {
	k.joinMu.Lock()
	defer k.joinMu.Unlock()
	rt := k.rt
	resp, err := rt.provisionRequest(ctx, service, provision.AddressChallenge, nil)
	if err != nil {
		return err
	}
	var ch provision.Challenge
	if err := provision.Decode(resp, &ch); err != nil {
		return fmt.Errorf("trusted: join: challenge: %w", err)
	}
	if err := provision.CheckNonce(ch.Nonce); err != nil {
		return fmt.Errorf("trusted: join: challenge: %w", err)
	}
	key, err := secure.NewServiceKey()
	if err != nil {
		return fmt.Errorf("trusted: join: key: %w", err)
	}
	pub := key.PublicKeyBytes()
	ev, err := rt.Evidence(ctx, provision.JoinReportData(pub, ch.Nonce))
	if err != nil {
		return fmt.Errorf("trusted: join: evidence: %w", err)
	}
	evb, err := provision.EncodeEvidence(ev.Type, ev.Quote)
	if err != nil {
		return fmt.Errorf("trusted: join: %w", err)
	}
	body, err := provision.Encode(provision.JoinRequest{Service: service, PublicKey: pub, Nonce: ch.Nonce, Evidence: evb})
	if err != nil {
		return fmt.Errorf("trusted: join: %w", err)
	}
	if resp, err = rt.provisionRequest(ctx, service, provision.AddressJoin, body); err != nil {
		return err
	}
	var jr provision.JoinResponse
	if err := provision.Decode(resp, &jr); err != nil {
		return fmt.Errorf("%w: %w", ErrGrant, err)
	}
	plain, err := key.OpenSealed(provision.GrantInfo(service, ch.Nonce), jr.Grant)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrGrant, err)
	}
	defer clear(plain)
	var g provision.Grant
	if err := provision.Decode(plain, &g); err != nil {
		return fmt.Errorf("%w: %w", ErrGrant, err)
	}
	if g.Service != service {
		return fmt.Errorf("%w: a grant for %q, not %q", ErrGrant, g.Service, service)
	}
	if err := k.apply(&g); err != nil {
		return err
	}
	k.lastJoin = time.Now()
	rt.log.Info("joined", "service", service, "epoch", g.Epoch, "manifest_version", g.ManifestVersion, "addresses", len(g.Addresses))
	return nil
}

// joinRetrying joins, retrying while the coordinator is unreachable or not
// ready (no handlers, timeouts, 5xx, no manifest yet) until ctx ends; a
// refusal ends it at once.
func (k *keys) joinRetrying(ctx context.Context, service string) error {
	delay := 50 * time.Millisecond
	for {
		err := k.join(ctx, service)
		var je *JoinError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &je) && je.Code != provision.CodeNoManifest && je.Code != provision.CodeTooMany:
			return err
		case errors.Is(err, ErrGrant), errors.Is(err, ErrNoEvidence):
			return err
		}
		k.rt.log.Warn("join failed; retrying", "service", service, "err", err.Error(), "in", delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("trusted: join as %s: %w (last failure: %w)", service, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// provisionRequest makes one request to the coordinator (bypassing the
// grant's rights) and turns a 4xx recipient failure into a *JoinError.
func (rt *Runtime) provisionRequest(ctx context.Context, service, address string, body []byte) ([]byte, error) {
	resp, err := rt.request(ctx, address, nil, body, 0)
	if err != nil {
		var re *RequestError
		if errors.As(err, &re) && re.Failure == wire.FailureRecipient && re.Code >= 400 && re.Code < 500 {
			return nil, &JoinError{Service: service, Code: re.Code, Message: re.Message}
		}
		return nil, fmt.Errorf("trusted: join: %s: %w", address, err)
	}
	return resp.Body, nil
}

// rejoinMinInterval bounds how often envelopes of an unknown, newer epoch
// make the runtime re-join: the epoch is not authenticated until the keys
// are there, so a host could forge such envelopes at will.
const rejoinMinInterval = time.Second

// rejoinSoon re-joins in the background, unless a join is running or one
// finished less than rejoinMinInterval ago.
func (k *keys) rejoinSoon() {
	if !k.joinMu.TryLock() {
		return
	}
	recent := time.Since(k.lastJoin) < rejoinMinInterval
	k.joinMu.Unlock()
	if recent || k.ctx == nil {
		return
	}
	service := k.rt.Service()
	go func() {
		ctx, cancel := context.WithTimeout(k.ctx, time.Minute)
		defer cancel()
		if err := k.joinRetrying(ctx, service); err != nil {
			k.rt.log.Error("re-join for a newer key epoch failed", "service", service, "err", err.Error())
		}
	}()
}

// onEpoch handles an EpochNotice: a newer epoch than held makes the
// runtime re-join for the new keys. Only a notice the coordinator signed
// (with the key the grant names) for the grant's manifest counts; others
// are logged and ignored.
func (k *keys) onEpoch(ctx context.Context, c *Call) {
	var n provision.EpochNotice
	if err := provision.Decode(c.Body(), &n); err != nil {
		k.rt.log.Warn("ignoring a malformed epoch notice", "err", err.Error())
		return
	}
	if n.Epoch <= k.epoch() {
		return
	}
	k.mu.RLock()
	service, hash, signer := k.grant.Service, k.grant.ManifestHash, k.grant.CoordinatorKey
	k.mu.RUnlock()
	if len(signer) != ed25519.PublicKeySize || !bytes.Equal(n.ManifestHash, hash) ||
		!ed25519.Verify(signer, provision.EpochNoticeMessage(hash, n.Epoch), n.Signature) {
		k.rt.log.Warn("ignoring an epoch notice the coordinator did not sign", "epoch", n.Epoch)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := k.joinRetrying(ctx, service); err != nil {
		k.rt.log.Error("re-join after a key rotation failed", "service", service, "epoch", n.Epoch, "err", err.Error())
	}
}
