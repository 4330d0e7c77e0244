package secured

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/wire"
)

// JoinError is the coordinator's refusal to grant the service keys: its
// code (one of the 4xx provision.Code*) and reason. The layer reports it
// as Fatal, so the host's start-up failure names it.
type JoinError struct {
	Service string
	Code    int
	Message string
}

// Error names the service and the coordinator's reason.
func (e *JoinError) Error() string {
	return fmt.Sprintf("secured: the coordinator refused to let this enclave join as service %s (code %d): %s", e.Service, e.Code, e.Message)
}

// ErrGrant is wrapped when the coordinator's answer to a join is not a
// grant for this enclave (it does not open with the joining key, or names
// another service).
var ErrGrant = errors.New("secured: bad grant")

// Requester is what Join needs of the enclave: *trusted.Runtime (and so
// every *trusted.Call) has it.
type Requester interface {
	Request(ctx context.Context, address string, headers map[string]string, body []byte, timeout time.Duration) (*trusted.Response, error)
	Evidence(ctx context.Context, reportData [64]byte) (*trusted.Evidence, error)
}

// Join runs the join protocol of package provision once, as service, and
// returns the grant the coordinator sealed to a key that never left the
// enclave:
//
//	→ provision.AddressChallenge            ← Challenge{Nonce}
//	  key := fresh secure.ServiceKey, made and kept inside the enclave
//	  evidence := rt.Evidence(provision.JoinReportData(key's public key, Nonce))
//	→ provision.AddressJoin JoinRequest{Service, public key, Nonce, evidence}
//	← JoinResponse{Grant sealed to key under provision.GrantInfo(Service, Nonce)}
//
// A refusal is a *JoinError; an answer that is not a grant for service
// wraps ErrGrant; other failures (no coordinator, timeouts) come from the
// runtime's Request, wrapped. The layer joins with it; an image that
// handles its grant itself may call it too.
func Join(ctx context.Context, rt Requester, service string) (*provision.Grant, error) {
	resp, err := joinRequest(ctx, rt, service, provision.AddressChallenge, nil)
	if err != nil {
		return nil, err
	}
	var ch provision.Challenge
	if err := provision.Decode(resp, &ch); err != nil {
		return nil, fmt.Errorf("secured: join: challenge: %w", err)
	}
	if err := provision.CheckNonce(ch.Nonce); err != nil {
		return nil, fmt.Errorf("secured: join: challenge: %w", err)
	}
	key, err := secure.NewServiceKey()
	if err != nil {
		return nil, fmt.Errorf("secured: join: key: %w", err)
	}
	pub := key.PublicKeyBytes()
	ev, err := rt.Evidence(ctx, provision.JoinReportData(pub, ch.Nonce))
	if err != nil {
		return nil, fmt.Errorf("secured: join: evidence: %w", err)
	}
	evb, err := provision.EncodeEvidence(ev.Type, ev.Quote)
	if err != nil {
		return nil, fmt.Errorf("secured: join: %w", err)
	}
	body, err := provision.Encode(provision.JoinRequest{Service: service, PublicKey: pub, Nonce: ch.Nonce, Evidence: evb})
	if err != nil {
		return nil, fmt.Errorf("secured: join: %w", err)
	}
	if resp, err = joinRequest(ctx, rt, service, provision.AddressJoin, body); err != nil {
		return nil, err
	}
	return OpenGrant(key, service, ch.Nonce, resp)
}

// OpenGrant opens the body of a JoinResponse with the joining key and
// checks that it is a grant for service (errors wrap ErrGrant).
func OpenGrant(key *secure.ServiceKey, service string, nonce, response []byte) (*provision.Grant, error) {
	var jr provision.JoinResponse
	if err := provision.Decode(response, &jr); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGrant, err)
	}
	plain, err := key.OpenSealed(provision.GrantInfo(service, nonce), jr.Grant)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGrant, err)
	}
	defer clear(plain)
	var g provision.Grant
	if err := provision.Decode(plain, &g); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGrant, err)
	}
	if g.Service != service {
		return nil, fmt.Errorf("%w: a grant for %q, not %q", ErrGrant, g.Service, service)
	}
	return &g, nil
}

// joinRequest makes one request to the coordinator and turns a 4xx
// recipient failure into a *JoinError.
func joinRequest(ctx context.Context, rt Requester, service, address string, body []byte) ([]byte, error) {
	resp, err := rt.Request(ctx, address, nil, body, 0)
	if err != nil {
		var re *trusted.RequestError
		if errors.As(err, &re) && re.Failure == wire.FailureRecipient && re.Code >= 400 && re.Code < 500 {
			return nil, &JoinError{Service: service, Code: re.Code, Message: re.Message}
		}
		return nil, fmt.Errorf("secured: join: %s: %w", address, err)
	}
	return resp.Body, nil
}

// join joins once and installs the grant.
func (k *keys) join(ctx context.Context) error {
	k.joinMu.Lock()
	defer k.joinMu.Unlock()
	g, err := Join(ctx, k.rt, k.service)
	if err != nil {
		return err
	}
	if err := k.apply(g); err != nil {
		return err
	}
	k.lastJoin = time.Now()
	k.log.Info("joined", "service", k.service, "epoch", g.Epoch, "manifest_version", g.ManifestVersion, "addresses", len(g.Addresses))
	return nil
}

// joinRetrying joins, retrying while the coordinator is unreachable or not
// ready (no handlers, timeouts, 5xx, no manifest yet) until ctx ends; a
// refusal ends it at once.
func (k *keys) joinRetrying(ctx context.Context) error {
	delay := 50 * time.Millisecond
	for {
		err := k.join(ctx)
		var je *JoinError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &je) && je.Code != provision.CodeNoManifest && je.Code != provision.CodeTooMany:
			return err
		case errors.Is(err, ErrGrant), errors.Is(err, trusted.ErrNoEvidence):
			return err
		}
		k.log.Warn("join failed; retrying", "service", k.service, "err", err.Error(), "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("secured: join as %s: %w (last failure: %w)", k.service, ctx.Err(), err)
		case <-t.C:
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// rejoinMinInterval bounds how often envelopes of an unknown, newer epoch
// make the layer re-join: the epoch is not authenticated until the keys
// are there, so a host could forge such envelopes at will.
const rejoinMinInterval = time.Second

// rejoinSoon re-joins in the background (a goroutine Serve waits for),
// unless a join is running or one finished less than rejoinMinInterval ago.
func (k *keys) rejoinSoon() {
	if !k.joinMu.TryLock() {
		return
	}
	recent := time.Since(k.lastJoin) < rejoinMinInterval
	k.joinMu.Unlock()
	if recent {
		return
	}
	k.rt.Go(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := k.joinRetrying(ctx); err != nil {
			k.log.Error("re-join for a newer key epoch failed", "service", k.service, "err", err.Error())
		}
	})
}

// epochHandler receives the coordinator's epoch notices for the layer.
type epochHandler struct{ k *keys }

// ServeCall re-joins when the notice names a newer epoch, or the same
// epoch under another manifest (an owner-signed update). Only a notice the
// coordinator signed (with the key the grant names) counts; others are
// logged and ignored. A notice of an older epoch is stale and ignored.
func (h epochHandler) ServeCall(ctx context.Context, c *trusted.Call) {
	k := h.k
	var n provision.EpochNotice
	if err := provision.Decode(c.Body(), &n); err != nil {
		k.log.Warn("ignoring a malformed epoch notice", "err", err.Error())
		return
	}
	k.mu.RLock()
	hash, signer := k.grant.ManifestHash, k.grant.CoordinatorKey
	k.mu.RUnlock()
	epoch := k.epoch()
	if n.Epoch < epoch || (n.Epoch == epoch && bytes.Equal(n.ManifestHash, hash)) {
		return
	}
	if len(signer) != ed25519.PublicKeySize || !ed25519.Verify(signer, provision.EpochNoticeMessage(n.ManifestHash, n.Epoch), n.Signature) {
		k.log.Warn("ignoring an epoch notice the coordinator did not sign", "epoch", n.Epoch)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := k.joinRetrying(ctx); err != nil {
		k.log.Error("re-join after a key rotation or manifest update failed", "service", k.service, "epoch", n.Epoch, "err", err.Error())
	}
}
