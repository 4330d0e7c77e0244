// Package client is the client SDK of Cloister's secured services: code
// outside the enclaves (a sensor, a CLI, a regular service) uses it to talk
// to a trusted service so that only that service can read the request and
// only the client can read the reply.
//
// # Trusting the coordinator, once
//
// [Connect] asks the coordinator (provision.AddressAttest) for evidence
// binding a fresh 32-byte nonce and checks, in this order, each check
// naming itself in a [*UntrustedError] when it fails:
//
//  1. "response": the answer decodes (provision.AttestResponse) and holds an
//     Ed25519 signing key;
//  2. "evidence": the evidence verifies (attest.Verify; simulated evidence
//     only with [Options.AllowSimulation], signed by one of
//     [Options.SimPlatformKeys]);
//  3. "report data": the evidence binds provision.AttestReportData(signing
//     key, manifest hash, nonce) — the key, the manifest and this very
//     request;
//  4. "policy": the claims satisfy [Options.CoordinatorPolicy] (the
//     coordinator image's identity);
//  5. "manifest hash": the manifest hash the coordinator serves is the one
//     the client pinned ([Options.ManifestHash]), or a later manifest the
//     client reaches from the pinned one by owner-signed updates (below);
//     otherwise it is a [*ManifestMismatchError];
//  6. "manifest version": with [Options.MinManifestVersion], the current
//     manifest's version is at least that (a [*ManifestVersionError]).
//
// (With [Options.RefuseUpdates], check 5 comes first and accepts the pinned
// hash only.) From then on the client trusts the coordinator's signing key
// and pins the current manifest's hash ([Client.ManifestHash]).
//
// # Following manifest updates
//
// A manifest with an owner key may be replaced by its owner: the
// coordinator accepts a higher version signed by the current owner key
// (manifest.VerifyUpdate). Pinning such a manifest means trusting its
// owner's updates, so when the attested hash is not the pinned one the
// client asks the coordinator for the chain of updates since the pinned
// manifest (provision.AddressManifestHistory) and accepts the coordinator
// only if the chain starts with the pinned manifest itself (its hash),
// each later entry is an update of the one before, signed by that one's
// owner key with a higher version, and it reaches the manifest the
// evidence binds (updates after that one, accepted while the client
// connected, are ignored). A step that fails is a [*HistoryError] naming the entry
// (wrapping [ErrHistoryStart], [ErrHistoryEnd], or manifest.ErrBadSignature,
// manifest.ErrNotNewer, manifest.ErrNoOwner); the client then refuses the
// coordinator (a [*ManifestMismatchError] whose reason it is). A manifest
// without owner key can never be updated. The coordinator keeps at most
// provision.MaxHistoryEntries manifests: a client pinned further back is
// refused and must pin again.
//
// Nothing in the evidence binds a manifest's version, and a coordinator's
// sealed state can be rolled back by its host to an older manifest, which
// it then attests genuinely. [Options.MinManifestVersion] protects a
// client from that: the client reads the current manifest itself (the
// history from the pinned hash, whose last entry has the attested hash)
// and refuses a version below the minimum with a [*ManifestVersionError]
// ([ErrManifestTooOld]).
//
// # Service keys
//
// [Client.ServiceKey] fetches a service's client-channel key
// (provision.AddressServiceKey) and accepts it only if the coordinator's
// signature over provision.ServiceKeyMessage(pinned hash, service, key)
// verifies ([ErrBadSignature] otherwise) and the response names the pinned
// manifest hash and the service asked for. Keys are cached per service.
//
// # Sessions and requests
//
// A client proves a credential the application's manifest names
// ([Options.Credential], or [Client.As] for another): a name and its
// Ed25519 key. Requests and sends to a service travel in a session
// (secure.NewClientSession to the service's key, under
// secure.ChannelInfo(service, pinned hash)): the first message of a session
// carries the one HPKE encapsulation and the client's signature, later ones
// only a session ID, a sequence number and AES-256-GCM. [Client.Request]
// opens the reply of each request with its sequence number. The payload is
// confidential, the client authenticated and the reply authenticated end to
// end; the host, the broker and the bus see only ciphertext.
//
// A service that no longer holds a session (it restarted, forgot the
// session to make room for others, or got a new channel key) refuses its
// messages with code 410 before any handler runs; Request then opens a new
// session (fetching the service key again) and sends once more, so nothing
// is lost or handled twice. A message that travels another way
// ([Client.Seal], e.g. through a durable queue and a forwarder) is sealed
// again with [Client.Reseal].
package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/wire"
)

// DefaultTimeout bounds each request to the coordinator.
const DefaultTimeout = 10 * time.Second

// Options configure Connect.
type Options struct {
	// CoordinatorPolicy is the identity the coordinator's evidence must
	// show (its image's measurement, or signer and product). Required: a
	// policy naming no identity accepts nothing.
	CoordinatorPolicy attest.Policy
	// ManifestHash is the manifest hash the client pins (manifest.Hash).
	ManifestHash [32]byte
	// AllowSimulation accepts a coordinator whose evidence is simulated:
	// that promises nothing against a malicious host. It is applied to the
	// policy too.
	AllowSimulation bool
	// SimPlatformKeys are the simulation platform keys trusted (such as
	// attest.SimulationRoot.PlatformPublicKey of the coordinator's host);
	// with none, simulated evidence is refused.
	SimPlatformKeys []*ecdsa.PublicKey
	// Collateral verifies SGX DCAP evidence down to its TCB status.
	Collateral *attest.Collateral
	// Timeout bounds each request to the coordinator (default
	// DefaultTimeout); requests to services take the bus's default unless
	// given a bus.Timeout option.
	Timeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// MinManifestVersion, when not zero, refuses a coordinator whose current
	// manifest has a lower version, as one whose state was rolled back
	// would have. The version is read from the manifest itself (fetched
	// from the coordinator and checked against the attested hash), never
	// from what the coordinator reports.
	MinManifestVersion uint64
	// RefuseUpdates pins ManifestHash exactly: a coordinator serving a
	// later, owner-signed manifest is refused. By default the client
	// follows the owner's signed updates from the pinned manifest.
	RefuseUpdates bool
	// Credential is the client's identity on its sessions with services:
	// a name the manifest's clients list, with its Ed25519 private key.
	// Requests and sends to services need one; [Client.As] gives a client
	// another.
	Credential secure.Credential
}

// Errors callers decide on.
var (
	// ErrUntrusted is matched by every *UntrustedError.
	ErrUntrusted = errors.New("client: coordinator not trusted")
	// ErrManifestMismatch is matched by every *ManifestMismatchError.
	ErrManifestMismatch = errors.New("client: manifest hash mismatch")
	// ErrBadSignature: a service key is not signed by the coordinator the
	// client verified.
	ErrBadSignature = errors.New("client: bad coordinator signature")
	// ErrHistory is matched by every *HistoryError.
	ErrHistory = errors.New("client: manifest history refused")
	// ErrHistoryStart: the history's first entry is not the pinned manifest.
	ErrHistoryStart = errors.New("the first entry is not the pinned manifest")
	// ErrHistoryEnd: the history's last entry is not the manifest the
	// coordinator's evidence binds.
	ErrHistoryEnd = errors.New("the last entry is not the manifest the coordinator's evidence binds")
	// ErrManifestTooOld is matched by every *ManifestVersionError.
	ErrManifestTooOld = errors.New("client: manifest version below the minimum")
)

// HistoryError says which entry of the manifest history failed: entry 0
// is the pinned manifest, entry i > 0 the i-th update after it.
type HistoryError struct {
	Entry int
	Err   error
}

// Error names the entry and the reason.
func (e *HistoryError) Error() string {
	return fmt.Sprintf("client: manifest history refused at entry %d: %v", e.Entry, e.Err)
}

// Unwrap returns the reason.
func (e *HistoryError) Unwrap() error { return e.Err }

// Is makes every HistoryError match ErrHistory.
func (e *HistoryError) Is(target error) bool { return target == ErrHistory }

// ManifestVersionError reports a coordinator whose current manifest is
// older than Options.MinManifestVersion: a rolled-back coordinator.
type ManifestVersionError struct {
	Min, Version uint64
	Hash         []byte
}

// Error names both versions.
func (e *ManifestVersionError) Error() string {
	return fmt.Sprintf("client: the coordinator serves manifest %x of version %d, below the minimum %d (was its state rolled back?)", e.Hash, e.Version, e.Min)
}

// Is makes every ManifestVersionError match ErrManifestTooOld.
func (e *ManifestVersionError) Is(target error) bool { return target == ErrManifestTooOld }

// UntrustedError says which check of the coordinator failed.
type UntrustedError struct {
	// Check is "response", "evidence", "report data", "policy",
	// "manifest hash" or "manifest version".
	Check string
	Err   error
}

// Error names the check and the reason.
func (e *UntrustedError) Error() string {
	return fmt.Sprintf("client: coordinator not trusted: %s: %v", e.Check, e.Err)
}

// Unwrap returns the reason.
func (e *UntrustedError) Unwrap() error { return e.Err }

// Is makes every UntrustedError match ErrUntrusted.
func (e *UntrustedError) Is(target error) bool { return target == ErrUntrusted }

// ManifestMismatchError reports that the coordinator serves another manifest
// than the pinned one, and none the client could reach from it by
// owner-signed updates.
type ManifestMismatchError struct {
	Pinned, Served []byte
	// Reason says why the client did not follow updates to Served (nil
	// with Options.RefuseUpdates): a *HistoryError, or the coordinator's
	// refusal to serve the history.
	Reason error
}

// Error names both hashes.
func (e *ManifestMismatchError) Error() string {
	if e.Reason != nil {
		return fmt.Sprintf("client: the coordinator serves manifest %x, not the pinned %x, and no signed update leads there: %v", e.Served, e.Pinned, e.Reason)
	}
	return fmt.Sprintf("client: the coordinator serves manifest %x, not the pinned %x", e.Served, e.Pinned)
}

// Unwrap returns the reason.
func (e *ManifestMismatchError) Unwrap() error { return e.Reason }

// Is makes every ManifestMismatchError match ErrManifestMismatch.
func (e *ManifestMismatchError) Is(target error) bool { return target == ErrManifestMismatch }

// Client talks to trusted services through a verified coordinator. It is
// safe for concurrent use.
type Client struct {
	b      *bus.Bus
	opts   Options
	sign   ed25519.PublicKey
	att    *provision.AttestResponse
	claims *attest.Claims
	shared *serviceKeys
	// followed is how many signed manifest updates Connect followed.
	followed int

	cred     secure.Credential
	sessions *sessions
}

// serviceKeys are the service keys the coordinator vouched for, shared by
// a client and those made from it with As.
type serviceKeys struct {
	opened  atomic.Uint64 // sessions opened (one KEM each)
	mu      sync.Mutex
	keys    map[string]*secure.PublicKey
	fetched map[string]time.Time
}

// Connect verifies the coordinator reachable on b (see the package
// documentation) and returns a client that trusts it.
func Connect(ctx context.Context, b *bus.Bus, opts Options) (*Client, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	nonce := make([]byte, provision.NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("client: nonce: %w", err)
	}
	body, err := provision.Encode(provision.AttestRequest{Nonce: nonce})
	if err != nil {
		return nil, err
	}
	m, err := askCoordinator(ctx, b, provision.AddressAttest, body, opts.Timeout)
	if err != nil {
		return nil, fmt.Errorf("client: attesting the coordinator: %w", err)
	}
	var resp provision.AttestResponse
	if err := provision.Decode(m.Body(), &resp); err != nil {
		return nil, &UntrustedError{Check: "response", Err: err}
	}
	if len(resp.SigningKey) != ed25519.PublicKeySize {
		return nil, &UntrustedError{Check: "response", Err: fmt.Errorf("signing key of %d bytes, want %d", len(resp.SigningKey), ed25519.PublicKeySize)}
	}
	moved := string(resp.ManifestHash) != string(opts.ManifestHash[:])
	if moved && opts.RefuseUpdates {
		return nil, &UntrustedError{Check: "manifest hash", Err: &ManifestMismatchError{Pinned: opts.ManifestHash[:], Served: resp.ManifestHash}}
	}
	claims, err := verifyCoordinator(ctx, &resp, nonce, opts)
	if err != nil {
		return nil, err
	}
	if claims.Simulated() {
		opts.Logger.Warn("client: the coordinator's evidence is SIMULATED: it promises nothing against a malicious host")
	}
	followed := 0
	if moved || opts.MinManifestVersion > 0 {
		// The evidence binds resp.ManifestHash (checked above): the
		// history must lead from the pinned manifest there.
		current, n, err := fetchHistory(ctx, b, opts, [32]byte(resp.ManifestHash))
		switch {
		case err != nil && moved:
			return nil, &UntrustedError{Check: "manifest hash", Err: &ManifestMismatchError{Pinned: opts.ManifestHash[:], Served: resp.ManifestHash, Reason: err}}
		case err != nil:
			return nil, &UntrustedError{Check: "manifest version", Err: err}
		case current.Version < opts.MinManifestVersion:
			return nil, &UntrustedError{Check: "manifest version", Err: &ManifestVersionError{Min: opts.MinManifestVersion, Version: current.Version, Hash: resp.ManifestHash}}
		}
		if n > 0 {
			opts.Logger.Info(fmt.Sprintf("client: followed %d signed manifest update(s) from the pinned manifest", n),
				"pinned", hex.EncodeToString(opts.ManifestHash[:]), "now", hex.EncodeToString(resp.ManifestHash), "version", current.Version)
		}
		resp.ManifestVersion = current.Version
		opts.ManifestHash = [32]byte(resp.ManifestHash)
		followed = n
	}
	c := &Client{b: b, opts: opts, sign: ed25519.PublicKey(resp.SigningKey), att: &resp, claims: claims, followed: followed,
		shared: &serviceKeys{keys: map[string]*secure.PublicKey{}, fetched: map[string]time.Time{}}}
	return c.As(opts.Credential), nil
}

// fetchHistory asks the coordinator for the manifests since the pinned one
// and checks that they lead to attested (verifyHistory).
func fetchHistory(ctx context.Context, b *bus.Bus, opts Options, attested [32]byte) (*manifest.Manifest, int, error) {
	body, err := provision.Encode(provision.ManifestHistoryRequest{Pinned: opts.ManifestHash[:]})
	if err != nil {
		return nil, 0, err
	}
	m, err := askCoordinator(ctx, b, provision.AddressManifestHistory, body, opts.Timeout)
	if err != nil {
		return nil, 0, fmt.Errorf("client: manifest history since %x: %w", opts.ManifestHash[:8], err)
	}
	return verifyHistory(opts.ManifestHash, attested, m.Body())
}

// verifyHistory checks a provision.ManifestHistory answer: it starts with
// the manifest whose hash is pinned, every later entry is an owner-signed
// update of the one before (manifest.VerifyUpdate: signed by that one's
// owner, a higher version), and one of them has hash attested; entries
// after that one (updates the coordinator accepted after it made its
// evidence) are ignored. It returns the attested manifest and the number
// of updates that lead to it.
func verifyHistory(pinned, attested [32]byte, body []byte) (*manifest.Manifest, int, error) {
	var h provision.ManifestHistory
	if err := provision.Decode(body, &h); err != nil {
		return nil, 0, fmt.Errorf("client: manifest history: %w", err)
	}
	if err := h.Check(); err != nil {
		return nil, 0, fmt.Errorf("client: manifest history: %w", err)
	}
	var prev *manifest.Manifest
	for i, e := range h.Entries {
		m, err := manifest.ParseCanonical(e.Manifest)
		if err != nil {
			return nil, 0, &HistoryError{Entry: i, Err: err}
		}
		hash := m.Hash()
		if i == 0 {
			if hash != pinned {
				return nil, 0, &HistoryError{Entry: 0, Err: fmt.Errorf("%w: manifest %x, pinned %x", ErrHistoryStart, hash[:8], pinned[:8])}
			}
		} else if err := prev.VerifyUpdate(m, e.Signature); err != nil {
			return nil, 0, &HistoryError{Entry: i, Err: err}
		}
		if hash == attested {
			// Later entries are updates accepted after the evidence was
			// made: not needed.
			return m, i, nil
		}
		prev = m
	}
	last := prev.Hash()
	return nil, 0, &HistoryError{Entry: len(h.Entries) - 1, Err: fmt.Errorf("%w: manifest %x (version %d), attested %x", ErrHistoryEnd, last[:8], prev.Version, attested[:8])}
}

// verifyCoordinator checks the evidence, its report data and the policy.
func verifyCoordinator(ctx context.Context, resp *provision.AttestResponse, nonce []byte, opts Options) (*attest.Claims, error) {
	var ev attest.Evidence
	if err := ev.UnmarshalBinary(resp.Evidence); err != nil {
		return nil, &UntrustedError{Check: "evidence", Err: err}
	}
	vo := attest.VerifyOptions{Collateral: opts.Collateral, AllowSimulation: opts.AllowSimulation,
		SimPlatformKeys: opts.SimPlatformKeys}
	claims, err := attest.Verifier{}.Verify(ctx, &ev, vo)
	if err != nil {
		return nil, &UntrustedError{Check: "evidence", Err: err}
	}
	if claims.ReportData != provision.AttestReportData(resp.SigningKey, resp.ManifestHash, nonce) {
		return nil, &UntrustedError{Check: "report data", Err: errors.New("the evidence does not bind the signing key, the manifest hash and this request's nonce")}
	}
	p := opts.CoordinatorPolicy
	p.AllowSimulation = p.AllowSimulation || opts.AllowSimulation
	if len(p.MREnclaves) == 0 && p.MRSigner == nil {
		return nil, &UntrustedError{Check: "policy", Err: errors.New("the coordinator policy names no identity (MREnclaves or MRSigner)")}
	}
	if err := p.Check(claims); err != nil {
		return nil, &UntrustedError{Check: "policy", Err: err}
	}
	return claims, nil
}

// ManifestHash returns the manifest hash the client pins: Options.ManifestHash,
// or the hash of the manifest Connect reached from it by signed updates.
func (c *Client) ManifestHash() [32]byte { return c.opts.ManifestHash }

// ManifestVersion returns the version of the manifest the client pins.
// When Connect read the manifest (it followed updates, or
// Options.MinManifestVersion is set) the version is the manifest's own;
// otherwise it is as the coordinator reported it, which the evidence does
// not bind.
func (c *Client) ManifestVersion() uint64 { return c.att.ManifestVersion }

// FollowedUpdates returns how many owner-signed manifest updates Connect
// followed from Options.ManifestHash to [Client.ManifestHash] (0: the
// coordinator served the pinned manifest).
func (c *Client) FollowedUpdates() int { return c.followed }

// Claims returns the verified claims of the coordinator's evidence.
func (c *Client) Claims() *attest.Claims { return c.claims }

// SigningKey returns the coordinator's signing key.
func (c *Client) SigningKey() ed25519.PublicKey { return c.sign }

// ServiceKey returns the client-channel key of service, vouched for by the
// coordinator (fetched once, then cached; fetched again when the service
// no longer knows a session, in case the key changed).
func (c *Client) ServiceKey(ctx context.Context, service string) (*secure.PublicKey, error) {
	c.shared.mu.Lock()
	k := c.shared.keys[service]
	c.shared.mu.Unlock()
	if k != nil {
		return k, nil
	}
	body, err := provision.Encode(provision.ServiceKeyRequest{Service: service})
	if err != nil {
		return nil, err
	}
	m, err := askCoordinator(ctx, c.b, provision.AddressServiceKey, body, c.opts.Timeout)
	if err != nil {
		return nil, fmt.Errorf("client: key of service %s: %w", service, err)
	}
	var resp provision.ServiceKeyResponse
	if err := provision.Decode(m.Body(), &resp); err != nil {
		return nil, fmt.Errorf("client: key of service %s: %w", service, err)
	}
	if resp.Service != service {
		return nil, fmt.Errorf("%w: a key for service %q, not %q", ErrBadSignature, resp.Service, service)
	}
	if string(resp.ManifestHash) != string(c.opts.ManifestHash[:]) {
		return nil, &ManifestMismatchError{Pinned: c.opts.ManifestHash[:], Served: resp.ManifestHash}
	}
	if !ed25519.Verify(c.sign, provision.ServiceKeyMessage(c.opts.ManifestHash[:], service, resp.PublicKey), resp.Signature) {
		return nil, fmt.Errorf("%w: the key of service %s", ErrBadSignature, service)
	}
	if k, err = secure.ParsePublicKey(resp.PublicKey); err != nil {
		return nil, fmt.Errorf("client: key of service %s: %w", service, err)
	}
	c.shared.mu.Lock()
	c.shared.keys[service], c.shared.fetched[service] = k, time.Now()
	c.shared.mu.Unlock()
	return k, nil
}

// Session limits of the client: it opens a new session before the
// service's defaults (secure.DefaultSessionLifetime and
// secure.DefaultSessionMessages) would end the current one.
const (
	sessionMaxAge      = secure.DefaultSessionLifetime * 9 / 10
	sessionMaxMessages = secure.DefaultSessionMessages - 1<<16
	// keptSessions is how many past sessions a client keeps the keys of,
	// to seal again the messages a service could no longer open.
	keptSessions = 8
	// resealAttempts bounds how often Request seals a message again in a
	// new session before it gives up.
	resealAttempts = 3
	// keyRefreshInterval is the least time between two fetches of a
	// service's key when a service no longer knows a session.
	keyRefreshInterval = time.Second
)

// ErrNoCredential: a request or send to a service was made by a client
// with no credential (see [Client.As]).
var ErrNoCredential = errors.New("client: no client credential (see Client.As)")

// ErrNotMine: [Client.Reseal] was given a message none of this client's
// recent sessions sealed.
var ErrNotMine = errors.New("client: not a message of this client's recent sessions")

// As returns a client that shares c's verified coordinator and service
// keys and proves cred on its sessions: a device holding many credentials
// (or a gateway for many sensors) verifies the coordinator once.
func (c *Client) As(cred secure.Credential) *Client {
	return &Client{b: c.b, opts: c.opts, sign: c.sign, att: c.att, claims: c.claims, shared: c.shared, followed: c.followed,
		cred: cred, sessions: &sessions{current: map[string]*secure.ClientSession{}}}
}

// SessionsOpened returns how many sessions this client and those made from
// it with As opened: one HPKE encapsulation (KEM) each.
func (c *Client) SessionsOpened() uint64 { return c.shared.opened.Load() }

// Credential returns the name of the client's credential ("" if none).
func (c *Client) Credential() string { return c.cred.Name }

// sessions are a client's sessions with each service.
type sessions struct {
	mu      sync.Mutex
	current map[string]*secure.ClientSession // by service
	recent  []recentSession                  // oldest first, at most keptSessions
}

type recentSession struct {
	service string
	s       *secure.ClientSession
}

// session returns the current session with service, opening one (the KEM)
// if there is none, or if the current one is old, used up, or under
// another key than the service's current one.
func (c *Client) session(ctx context.Context, service string) (*secure.ClientSession, error) {
	if c.cred.Key == nil {
		return nil, ErrNoCredential
	}
	k, err := c.ServiceKey(ctx, service)
	if err != nil {
		return nil, err
	}
	ss := c.sessions
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.current[service]
	if s != nil && s.KeyID() == k.ID() && time.Since(s.Created()) < sessionMaxAge && s.Sent() < sessionMaxMessages {
		return s, nil
	}
	s, err = secure.NewClientSession(k, secure.ChannelInfo(service, c.opts.ManifestHash), c.cred,
		secure.ClientSessionOptions{RepeatHandshake: true})
	if err != nil {
		return nil, fmt.Errorf("client: session with %s: %w", service, err)
	}
	c.shared.opened.Add(1)
	ss.current[service] = s
	ss.recent = append(ss.recent, recentSession{service, s})
	if len(ss.recent) > keptSessions {
		ss.recent = ss.recent[len(ss.recent)-keptSessions:]
	}
	return s, nil
}

// forget ends s as the current session with service (the service no
// longer holds it) and makes the next session fetch the service's key
// again, in case it changed.
func (c *Client) forget(service string, s *secure.ClientSession) {
	c.sessions.mu.Lock()
	if c.sessions.current[service] == s {
		delete(c.sessions.current, service)
	}
	c.sessions.mu.Unlock()
	c.shared.mu.Lock()
	if time.Since(c.shared.fetched[service]) >= keyRefreshInterval {
		delete(c.shared.keys, service)
	}
	c.shared.mu.Unlock()
}

// Seal seals plaintext to service in the client's current session with it
// and returns the bytes to send. Use it when the message travels by other
// means than [Client.Request] and [Client.Send] (a durable queue, a
// forwarder); see [Client.Reseal] for when the service refuses it with
// wire.CodeSessionUnknown.
func (c *Client) Seal(ctx context.Context, service string, plaintext []byte) ([]byte, error) {
	s, err := c.session(ctx, service)
	if err != nil {
		return nil, err
	}
	_, msg, err := s.Seal(plaintext)
	if err != nil {
		return nil, fmt.Errorf("client: seal to %s: %w", service, err)
	}
	return msg, nil
}

// savedSession is one session in MarshalSessions' JSON.
type savedSession struct {
	Service string `json:"service"`
	Session []byte `json:"session"` // secure.ClientSession.MarshalBinary
}

// MarshalSessions saves the client's recent sessions, keys included, so
// that after a restart it can still seal again ([Client.Reseal]) the
// messages it sealed before and that wait in a queue. Keep the bytes as
// secret as the client's credential. Restored sessions only open: new
// messages always go into new sessions.
func (c *Client) MarshalSessions() ([]byte, error) {
	c.sessions.mu.Lock()
	defer c.sessions.mu.Unlock()
	out := make([]savedSession, 0, len(c.sessions.recent))
	for _, r := range c.sessions.recent {
		b, err := r.s.MarshalBinary()
		if err != nil {
			return nil, err
		}
		out = append(out, savedSession{Service: r.service, Session: b})
	}
	return json.Marshal(out)
}

// RestoreSessions adds sessions saved by MarshalSessions to the client's
// recent sessions, for Reseal only.
func (c *Client) RestoreSessions(b []byte) error {
	var saved []savedSession
	if err := json.Unmarshal(b, &saved); err != nil {
		return fmt.Errorf("client: saved sessions: %w", err)
	}
	restored := make([]recentSession, 0, len(saved))
	for i, s := range saved {
		cs, err := secure.UnmarshalClientSession(s.Session)
		if err != nil {
			return fmt.Errorf("client: saved session %d: %w", i, err)
		}
		restored = append(restored, recentSession{s.Service, cs})
	}
	c.sessions.mu.Lock()
	defer c.sessions.mu.Unlock()
	c.sessions.recent = append(restored, c.sessions.recent...)
	if len(c.sessions.recent) > keptSessions {
		c.sessions.recent = c.sessions.recent[len(c.sessions.recent)-keptSessions:]
	}
	return nil
}

// Reseal seals again, in a new session, a message one of the client's
// recent sessions with service sealed and the service could no longer
// open (it answered wire.CodeSessionUnknown: it restarted, forgot the
// session, or holds a new channel key, which Reseal fetches). The
// plaintext is the same, so the service's own deduplication (sequence
// numbers in the payload) still applies.
func (c *Client) Reseal(ctx context.Context, service string, msg []byte) ([]byte, error) {
	h, err := secure.ParseSessionMessage(msg)
	if err != nil {
		return nil, fmt.Errorf("client: reseal: %w", err)
	}
	var old *secure.ClientSession
	c.sessions.mu.Lock()
	for _, r := range c.sessions.recent {
		if r.service == service && r.s.ID() == h.Session {
			old = r.s
		}
	}
	c.sessions.mu.Unlock()
	if old == nil {
		return nil, fmt.Errorf("%w: session %s with %s", ErrNotMine, h.Session, service)
	}
	_, pt, err := old.Open(msg)
	if err != nil {
		return nil, fmt.Errorf("client: reseal: %w", err)
	}
	c.forget(service, old)
	return c.Seal(ctx, service, pt)
}

// Request sends plaintext, sealed to service in the client's session with
// it, as a bus request to address and returns the opened reply. When the
// service no longer holds the session (wire.CodeSessionUnknown) the
// message never reached its handler: Request opens a new session and sends
// it again, at most a few times. Other bus failures are returned as the
// bus gives them (*bus.ReplyError); a reply that does not open is an error
// wrapping the secure package's reason.
func (c *Client) Request(ctx context.Context, address, service string, plaintext []byte, opts ...bus.DeliveryOption) ([]byte, error) {
	for attempt := 1; ; attempt++ {
		s, err := c.session(ctx, service)
		if err != nil {
			return nil, err
		}
		seq, msg, err := s.Seal(plaintext)
		if err != nil {
			return nil, fmt.Errorf("client: seal request to %s: %w", service, err)
		}
		m, err := c.b.Request(ctx, address, msg, opts...)
		var re *bus.ReplyError
		if errors.As(err, &re) && re.Code == wire.CodeSessionUnknown && attempt < resealAttempts {
			c.opts.Logger.Debug("client: the service no longer holds the session; opening a new one", "service", service, "session", s.ID())
			c.forget(service, s)
			continue
		}
		if err != nil {
			return nil, err
		}
		out, err := s.OpenReply(seq, m.Body())
		if err != nil {
			return nil, fmt.Errorf("client: reply from %s on %s: %w", service, address, err)
		}
		return out, nil
	}
}

// Send sends plaintext, sealed to service in the client's session with it,
// as a one-way message to one consumer of address. A one-way message
// learns nothing back: if the service may have lost the session, prefer
// Request, or handle wire.CodeSessionUnknown with [Client.Reseal].
func (c *Client) Send(ctx context.Context, address, service string, plaintext []byte, opts ...bus.DeliveryOption) error {
	msg, err := c.Seal(ctx, service, plaintext)
	if err != nil {
		return err
	}
	return c.b.Send(ctx, address, msg, opts...)
}
