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
//  2. "manifest hash": the manifest hash the coordinator serves is the one
//     the client pinned ([Options.ManifestHash]); a mismatch is also a
//     [*ManifestMismatchError];
//  3. "evidence": the evidence verifies (attest.Verify; simulated evidence
//     only with [Options.AllowSimulation]);
//  4. "report data": the evidence binds provision.AttestReportData(signing
//     key, manifest hash, nonce) — the key, the manifest and this very
//     request;
//  5. "policy": the claims satisfy [Options.CoordinatorPolicy] (the
//     coordinator image's identity).
//
// From then on the client trusts the coordinator's signing key.
//
// # Service keys
//
// [Client.ServiceKey] fetches a service's client-channel key
// (provision.AddressServiceKey) and accepts it only if the coordinator's
// signature over provision.ServiceKeyMessage(pinned hash, service, key)
// verifies ([ErrBadSignature] otherwise) and the response names the pinned
// manifest hash and the service asked for. Keys are cached per service.
//
// # Requests
//
// [Client.Request] seals the plaintext with secure.SealRequest to the
// service's key under secure.ChannelInfo(service, pinned hash), sends it as
// a bus request to the address, and opens the reply with the request's
// channel; [Client.Send] sends a sealed one-way message. The payload is
// confidential and its reply authenticated end to end; the host, the broker
// and the bus see only ciphertext.
package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
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
	// SimPlatformKeys are the simulation platform keys trusted; empty
	// means this machine's (attest.DefaultSimPlatformKeyPath, or
	// SimPlatformKeyPath).
	SimPlatformKeys    []*ecdsa.PublicKey
	SimPlatformKeyPath string
	// Collateral verifies SGX DCAP evidence down to its TCB status.
	Collateral *attest.Collateral
	// Timeout bounds each request to the coordinator (default
	// DefaultTimeout); requests to services take the bus's default unless
	// given a bus.Timeout option.
	Timeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
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
)

// UntrustedError says which check of the coordinator failed.
type UntrustedError struct {
	// Check is "response", "manifest hash", "evidence", "report data" or
	// "policy".
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
// than the pinned one.
type ManifestMismatchError struct {
	Pinned, Served []byte
}

// Error names both hashes.
func (e *ManifestMismatchError) Error() string {
	return fmt.Sprintf("client: the coordinator serves manifest %x, not the pinned %x", e.Served, e.Pinned)
}

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

	mu   sync.Mutex
	keys map[string]*secure.PublicKey
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
	m, err := b.Request(ctx, provision.AddressAttest, body, bus.Timeout(opts.Timeout))
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
	if string(resp.ManifestHash) != string(opts.ManifestHash[:]) {
		return nil, &UntrustedError{Check: "manifest hash", Err: &ManifestMismatchError{Pinned: opts.ManifestHash[:], Served: resp.ManifestHash}}
	}
	claims, err := verifyCoordinator(ctx, &resp, nonce, opts)
	if err != nil {
		return nil, err
	}
	if claims.Simulated() {
		opts.Logger.Warn("client: the coordinator's evidence is SIMULATED: it promises nothing against a malicious host")
	}
	return &Client{b: b, opts: opts, sign: ed25519.PublicKey(resp.SigningKey), att: &resp, claims: claims,
		keys: map[string]*secure.PublicKey{}}, nil
}

// verifyCoordinator checks the evidence, its report data and the policy.
func verifyCoordinator(ctx context.Context, resp *provision.AttestResponse, nonce []byte, opts Options) (*attest.Claims, error) {
	var ev attest.Evidence
	if err := ev.UnmarshalBinary(resp.Evidence); err != nil {
		return nil, &UntrustedError{Check: "evidence", Err: err}
	}
	vo := attest.VerifyOptions{Collateral: opts.Collateral, AllowSimulation: opts.AllowSimulation,
		SimPlatformKeys: opts.SimPlatformKeys, SimPlatformKeyPath: opts.SimPlatformKeyPath}
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

// ManifestHash returns the pinned manifest hash.
func (c *Client) ManifestHash() [32]byte { return c.opts.ManifestHash }

// ManifestVersion returns the version of the manifest the coordinator
// served when it was verified. Only the manifest hash is bound by the
// evidence (and pinned); the version is as the coordinator reported it.
func (c *Client) ManifestVersion() uint64 { return c.att.ManifestVersion }

// Claims returns the verified claims of the coordinator's evidence.
func (c *Client) Claims() *attest.Claims { return c.claims }

// SigningKey returns the coordinator's signing key.
func (c *Client) SigningKey() ed25519.PublicKey { return c.sign }

// ServiceKey returns the client-channel key of service, vouched for by the
// coordinator (fetched once, then cached).
func (c *Client) ServiceKey(ctx context.Context, service string) (*secure.PublicKey, error) {
	c.mu.Lock()
	k := c.keys[service]
	c.mu.Unlock()
	if k != nil {
		return k, nil
	}
	body, err := provision.Encode(provision.ServiceKeyRequest{Service: service})
	if err != nil {
		return nil, err
	}
	m, err := c.b.Request(ctx, provision.AddressServiceKey, body, bus.Timeout(c.opts.Timeout))
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
	c.mu.Lock()
	c.keys[service] = k
	c.mu.Unlock()
	return k, nil
}

// seal seals plaintext to service.
func (c *Client) seal(ctx context.Context, service string, plaintext []byte) (*secure.ClientChannel, []byte, error) {
	k, err := c.ServiceKey(ctx, service)
	if err != nil {
		return nil, nil, err
	}
	ch, msg, err := secure.SealRequest(k, secure.ChannelInfo(service, c.opts.ManifestHash), plaintext)
	if err != nil {
		return nil, nil, fmt.Errorf("client: seal request to %s: %w", service, err)
	}
	return ch, msg, nil
}

// Request sends plaintext, sealed to service, as a bus request to address
// and returns the opened reply. Bus failures are returned as the bus gives
// them (*bus.ReplyError); a reply that does not open is an error wrapping
// the secure package's reason.
func (c *Client) Request(ctx context.Context, address, service string, plaintext []byte, opts ...bus.DeliveryOption) ([]byte, error) {
	ch, msg, err := c.seal(ctx, service, plaintext)
	if err != nil {
		return nil, err
	}
	m, err := c.b.Request(ctx, address, msg, opts...)
	if err != nil {
		return nil, err
	}
	out, err := ch.OpenReply(m.Body())
	if err != nil {
		return nil, fmt.Errorf("client: reply from %s on %s: %w", service, address, err)
	}
	return out, nil
}

// Send sends plaintext, sealed to service, as a one-way message to one
// consumer of address.
func (c *Client) Send(ctx context.Context, address, service string, plaintext []byte, opts ...bus.DeliveryOption) error {
	_, msg, err := c.seal(ctx, service, plaintext)
	if err != nil {
		return err
	}
	return c.b.Send(ctx, address, msg, opts...)
}
