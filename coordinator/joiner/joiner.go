// Package joiner is the enclave's side of joining: it runs the join
// protocol of package provision from inside an enclave image, through the
// trusted runtime's OCALLs, and returns the grant the coordinator sealed to
// a key that never left the enclave.
//
//	enclave → provision.AddressChallenge            ← Challenge{Nonce}
//	          key := fresh secure.ServiceKey (inside the enclave)
//	          evidence := Runtime.Evidence(provision.JoinReportData(key's public key, Nonce))
//	enclave → provision.AddressJoin JoinRequest{Service, public key, Nonce, evidence}
//	          ← JoinResponse{Grant}; key.OpenSealed(provision.GrantInfo(Service, Nonce), Grant)
//
// It imports trusted, provision and secure only (no attest, which pulls in
// crypto/x509), so it fits the trusted runtime: the transparent join of the
// trusted runtime is meant to call [Join] (or take it over).
package joiner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/wire"
)

// Runtime is what Join needs of the enclave: *trusted.Runtime (and so every
// *trusted.Call) has it.
type Runtime interface {
	Request(ctx context.Context, address string, headers map[string]string, body []byte, timeout time.Duration) (*trusted.Response, error)
	Evidence(ctx context.Context, reportData [64]byte) (*trusted.Evidence, error)
}

// RefusedError is the coordinator's refusal of a join: its code (one of the
// 4xx provision.Code*) and the reason it gave. Other failures (the
// coordinator down, 5xx) are not refusals.
type RefusedError struct {
	Service string
	Code    int
	Message string
}

// Error names the service and the reason.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("joiner: the coordinator refused %s (code %d): %s", e.Service, e.Code, e.Message)
}

// ErrGrant is wrapped when the coordinator's answer does not open with the
// joining key or is not a grant for the service asked for.
var ErrGrant = errors.New("joiner: bad grant")

// Join joins the coordinator as service and returns the grant and, when the
// grant carries one, the service's client-channel key. A refusal is a
// *RefusedError; other failures (no coordinator, timeouts) come from the
// runtime's Request, wrapped.
func Join(ctx context.Context, rt Runtime, service string) (*provision.Grant, *secure.ServiceKey, error) {
	resp, err := request(ctx, rt, service, provision.AddressChallenge, nil)
	if err != nil {
		return nil, nil, err
	}
	var ch provision.Challenge
	if err := provision.Decode(resp, &ch); err != nil {
		return nil, nil, fmt.Errorf("joiner: challenge: %w", err)
	}
	if err := provision.CheckNonce(ch.Nonce); err != nil {
		return nil, nil, fmt.Errorf("joiner: challenge: %w", err)
	}
	key, err := secure.NewServiceKey()
	if err != nil {
		return nil, nil, fmt.Errorf("joiner: key: %w", err)
	}
	pub := key.PublicKeyBytes()
	ev, err := rt.Evidence(ctx, provision.JoinReportData(pub, ch.Nonce))
	if err != nil {
		return nil, nil, fmt.Errorf("joiner: evidence: %w", err)
	}
	evb, err := provision.EncodeEvidence(ev.Type, ev.Quote)
	if err != nil {
		return nil, nil, fmt.Errorf("joiner: %w", err)
	}
	body, err := provision.Encode(provision.JoinRequest{Service: service, PublicKey: pub, Nonce: ch.Nonce, Evidence: evb})
	if err != nil {
		return nil, nil, err
	}
	if resp, err = request(ctx, rt, service, provision.AddressJoin, body); err != nil {
		return nil, nil, err
	}
	g, err := OpenGrant(key, service, ch.Nonce, resp)
	if err != nil {
		return nil, nil, err
	}
	var ck *secure.ServiceKey
	if g.ChannelKey != nil {
		if ck, err = secure.ParseServiceKey(g.ChannelKey); err != nil {
			return nil, nil, fmt.Errorf("%w: channel key: %v", ErrGrant, err)
		}
	}
	return g, ck, nil
}

// OpenGrant opens a JoinResponse body with the joining key and checks that
// it is a grant for service.
func OpenGrant(key *secure.ServiceKey, service string, nonce, response []byte) (*provision.Grant, error) {
	var jr provision.JoinResponse
	if err := provision.Decode(response, &jr); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrGrant, err)
	}
	plain, err := key.OpenSealed(provision.GrantInfo(service, nonce), jr.Grant)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrGrant, err)
	}
	defer clear(plain)
	var g provision.Grant
	if err := provision.Decode(plain, &g); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrGrant, err)
	}
	if g.Service != service {
		return nil, fmt.Errorf("%w: a grant for %q, not %q", ErrGrant, g.Service, service)
	}
	return &g, nil
}

// request makes one provisioning request and turns a recipient failure into
// a *RefusedError.
func request(ctx context.Context, rt Runtime, service, address string, body []byte) ([]byte, error) {
	resp, err := rt.Request(ctx, address, nil, body, 0)
	if err != nil {
		var re *trusted.RequestError
		if errors.As(err, &re) && re.Failure == wire.FailureRecipient && re.Code >= 400 && re.Code < 500 {
			return nil, &RefusedError{Service: service, Code: re.Code, Message: re.Message}
		}
		return nil, fmt.Errorf("joiner: %s: %w", address, err)
	}
	return resp.Body, nil
}
