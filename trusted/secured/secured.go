package secured

import (
	"bytes"

	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/fresh"
	"github.com/cloister-dev/cloister/wire"
)

// Errors of the secured-address layer.
var (
	// ErrNotAllowed: the grant gives the service no such right on the
	// address (Send, Publish or Request refused inside the enclave).
	ErrNotAllowed = errors.New("secured: not allowed by the grant")
	// ErrRejected: a reply on a secured or client-channel address did not
	// open; the reason is wrapped too (a secure.Err*).
	ErrRejected = errors.New("secured: message rejected")
)

// Rejection reasons, as counted by Rejections.
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
		return wire.CodeNotAllowed
	case ReasonSessionUnknown:
		return wire.CodeSessionUnknown
	case ReasonInProgress, ReasonTooManyHandshakes:
		return wire.CodeBusy
	}
	return wire.CodeRejected
}

// retryable reports whether a delivery refused for why may succeed if the
// same bytes are delivered again later.
func retryable(why string) bool {
	return why == ReasonInProgress || why == ReasonTooManyHandshakes
}

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

var errPlaintext = errors.New("secured: not a client-channel message")

// granted is one address of the grant with the state to use it.
type granted struct {
	provision.AddressGrant
	opener  *secure.Opener                  // secured addresses
	keys    map[uint32][secure.KeySize]byte // the grant's keys by epoch
	sealers map[uint32]*secure.Sealer       // by epoch, made on first use
	dirty   *atomic.Bool                    // windows changed since saved
}

// keys is the secured-address layer of one instance: what it holds after
// joining (the grant's rights, keys and secrets) and its counters.
type keys struct {
	rt      *trusted.Runtime
	log     *slog.Logger
	opts    Options
	service string

	mu        sync.RWMutex
	grant     *provision.Grant // Keys cleared; kept in the openers
	addresses map[string]*granted
	channel   *secure.ServiceKey
	info      []byte                       // secure.ChannelInfo(service, manifest hash)
	clients   map[string]ed25519.PublicKey // the manifest's clients
	sessions  *secure.SessionTable
	hs        handshakes // the sessions whose handshake was handled (see handshakes.go)

	joinMu   sync.Mutex // one join at a time
	lastJoin time.Time  // guarded by joinMu

	countMu  sync.Mutex
	rejected map[string]map[string]uint64

	fresh atomic.Pointer[fresh.Tracker] // nil without freshness
}

func newKeys(rt *trusted.Runtime, opts Options, service string) *keys {
	return &keys{rt: rt, log: rt.Logger(), opts: opts, service: service, addresses: map[string]*granted{},
		rejected: map[string]map[string]uint64{}, sessions: secure.NewSessionTable(opts.Sessions)}
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
					return fmt.Errorf("secured: grant: %w", err)
				}
				n.opener = o
			}
			held := map[uint32]bool{}
			for _, ek := range ag.Keys {
				held[ek.Epoch] = true
				if len(ek.Key) != secure.KeySize {
					return fmt.Errorf("secured: grant: key of %q epoch %d: %d bytes", ag.Address, ek.Epoch, len(ek.Key))
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
					return fmt.Errorf("secured: grant: %w", err)
				}
			}
			if !held[g.Epoch] {
				return fmt.Errorf("secured: grant: no key of the current epoch %d for %q", g.Epoch, ag.Address)
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
			return fmt.Errorf("secured: grant: channel key: %w", err)
		}
	}
	clients := make(map[string]ed25519.PublicKey, len(g.Clients))
	for name, pub := range g.Clients {
		if len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("secured: grant: client %q: key of %d bytes", name, len(pub))
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
		return nil, fmt.Errorf("secured: no key of epoch %d for %q", epoch, a.Address)
	}
	key := secure.AddressKey{Address: a.Address, Epoch: epoch, Key: raw}
	s, err := secure.NewSealer(key)
	clear(key.Key[:])
	if err != nil {
		return nil, fmt.Errorf("secured: sealer for %q: %w", a.Address, err)
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
	k.freshCounts(out)
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
	return wire.HealthRejectionsPrefix + string(b)
}

// open turns a delivery on a granted address into plaintext for the
// handler, or returns why it is rejected.
func (k *keys) open(d *trusted.Delivery) (trusted.Opened, error) {
	a := k.address(d.Address)
	if a == nil || !a.Consume {
		return nil, fmt.Errorf("%w: the grant of %s gives no right to consume %q", ErrNotAllowed, k.serviceName(), d.Address)
	}
	if a.Clients && (secure.IsSessionMessage(d.Body) || bytes.HasPrefix(d.Body, []byte("CSQ"))) {
		return k.openClient(d)
	}
	if !a.Secured {
		if a.Clients {
			return nil, fmt.Errorf("%w: %q accepts client-channel messages only", errPlaintext, d.Address)
		}
		return nil, nil // a plain address
	}
	o, err := a.opener.Open(d.Kind, d.Body)
	if err != nil {
		if errors.Is(err, secure.ErrUnknownEpoch) {
			if e, perr := secure.ParseEnvelope(d.Body); perr == nil && e.Epoch > k.epoch() {
				// The sender re-joined after a rotation before this
				// enclave heard of it.
				k.rejoinSoon()
			}
		}
		return nil, err
	}
	d.Body, d.Headers = o.Plaintext, o.Headers
	if !a.dirty.Load() {
		a.dirty.Store(true)
	}
	if t := k.fresh.Load(); t != nil && a.persisted() {
		t.Touch() // the next checkpoint saves the window first
	}
	return &sealedCall{k: k, address: d.Address, ref: o.Ref(), epoch: o.Epoch, a: a}, nil
}

// openClient opens a client-session message with the channel key and the
// manifest's client credentials. The message is reserved, not admitted:
// the call commits it when its handler succeeded and releases it when it
// failed, so a retry of a failed message is not taken for a replay.
func (k *keys) openClient(d *trusted.Delivery) (trusted.Opened, error) {
	if !secure.IsSessionMessage(d.Body) {
		return nil, fmt.Errorf("%w: a one-shot client request (client channel v1) proves no client credential; open a client session", secure.ErrUnauthenticated)
	}
	k.mu.RLock()
	ch, info, clients := k.channel, k.info, k.clients
	k.mu.RUnlock()
	if ch == nil {
		return nil, fmt.Errorf("%w: no client-channel key in the grant", secure.ErrAuth)
	}
	lookup := func(name string) (ed25519.PublicKey, bool) {
		pub, ok := clients[name]
		return pub, ok
	}
	now := time.Now()
	if h, err := secure.ParseSessionMessage(d.Body); err == nil && h.Handshake && k.hs.handledBefore(h.Session, now) {
		return nil, fmt.Errorf("%w: session %s was opened before this instance restarted: seal the message again in a new session", secure.ErrSessionUnknown, h.Session)
	}
	m, err := k.sessions.Open(ch, info, lookup, d.Body, now)
	if err != nil {
		if errors.Is(err, secure.ErrSessionUnknown) {
			if h, perr := secure.ParseSessionMessage(d.Body); perr == nil && h.Handshake && h.Key != ch.PublicKey().ID() {
				// Sealed to another channel key: perhaps the coordinator
				// issued a new one that this enclave has not fetched yet
				// (rate-limited: the key ID is not authenticated).
				k.rejoinSoon()
			}
		}
		return nil, err
	}
	d.Body, d.Headers = m.Plaintext, nil
	return &clientCall{k: k, address: d.Address, m: m}, nil
}

func (k *keys) serviceName() string {
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
		return nil, nil, nil, secure.Ref{}, fmt.Errorf("%w: %s may not %s %q", ErrNotAllowed, k.serviceName(), op, address)
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
		return nil, nil, nil, secure.Ref{}, fmt.Errorf("secured: seal for %q: %w", address, err)
	}
	return nil, env, a, ref, nil
}

// coordinatorPrefix starts the coordinator's addresses, which the runtime
// (and images) may always use: they are how a service joins.
const coordinatorPrefix = "cloister.coordinator."

// sealedCall is what a delivery opened from an envelope needs to seal its
// reply.
type sealedCall struct {
	k       *keys
	address string
	ref     secure.Ref
	epoch   uint32
	a       *granted
}

// SealReply seals the reply bound to the request, in the request's epoch
// while it is held (headers authenticated, not encrypted).
func (o *sealedCall) SealReply(headers map[string]string, body []byte) (map[string]string, []byte, error) {
	s, err := o.k.sealer(o.a, o.epoch)
	if err != nil {
		return nil, nil, err
	}
	env, _, err := s.SealReply(o.ref, headers, body)
	if err != nil {
		return nil, nil, fmt.Errorf("secured: seal reply on %q: %w", o.address, err)
	}
	return nil, env, nil
}

// Settle does nothing: envelopes are admitted when opened.
func (o *sealedCall) Settle(bool) {}

// clientCall is a client-session message being handled.
type clientCall struct {
	k       *keys
	address string
	m       *secure.SessionMessage
}

// SealReply seals the reply to the client; its headers are not sent.
func (o *clientCall) SealReply(_ map[string]string, body []byte) (map[string]string, []byte, error) {
	out, err := o.m.SealReply(body)
	if err != nil {
		return nil, nil, fmt.Errorf("secured: seal client reply on %q: %w", o.address, err)
	}
	return nil, out, nil
}

// Settle commits the message as seen when it succeeded and gives it back
// (a retry is then handled, not refused as a replay) when it failed.
func (o *clientCall) Settle(ok bool) {
	if ok {
		o.m.Commit()
		if o.m.NewSession {
			o.k.hs.remember(o.m.Session, time.Now(), o.k.opts.Sessions)
			if t := o.k.fresh.Load(); t != nil {
				t.Touch() // the next checkpoint saves the record first
			}
		}
	} else {
		o.m.Release()
	}
}
