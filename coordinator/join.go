package coordinator

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
)

func (in *instance) join(ctx context.Context, call *trusted.Call) ([]byte, error) {
	body, service, err := in.admit(ctx, call.Body())
	in.mu.Lock()
	if err != nil {
		in.st.Refusals++
	} else {
		in.st.Joins++
	}
	in.mu.Unlock()
	// The counters are not worth a synchronous write per join.
	in.saveSoon()
	log := call.Logger()
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			log.Warn("coordinator: join refused", "service", service, "code", e.Code, "reason", e.Message)
		}
		return nil, err
	}
	log.Info("coordinator: join granted", "service", service)
	return body, nil
}

// admit checks a join request and returns the sealed grant.
func (in *instance) admit(ctx context.Context, body []byte) ([]byte, string, error) {
	req, err := decodeJoin(body)
	if err != nil {
		return nil, "", err
	}
	m, hash, err := in.current()
	if err != nil {
		return nil, req.Service, err
	}
	svc, err := trustedService(m, req.Service)
	if err != nil {
		return nil, req.Service, err
	}
	// The challenge is checked without state (its MAC and expiry), and
	// spent only once evidence verified and bound it: a join with a forged
	// or unbound nonce costs the coordinator no memory.
	expiry, err := in.ch.check(req.Nonce, in.opts.Now())
	if err != nil {
		return nil, req.Service, err
	}
	claims, err := in.verify(ctx, m, req.evidence)
	if err != nil {
		return nil, req.Service, err
	}
	if claims.ReportData != provision.JoinReportData(req.PublicKey, req.Nonce) {
		return nil, req.Service, refuse(provision.CodeRefused, "the evidence does not bind the joining key and nonce (report data mismatch)")
	}
	if err := in.ch.spend(req.Nonce, expiry, in.opts.Now()); err != nil {
		return nil, req.Service, err
	}
	if err := checkIdentity(m, svc, claims); err != nil {
		return nil, req.Service, err
	}
	g, err := in.grant(m, hash, svc)
	if err != nil {
		return nil, req.Service, err
	}
	plain, err := provision.Encode(g)
	if err != nil {
		return nil, req.Service, err
	}
	sealed, err := secure.SealTo(req.key, provision.GrantInfo(req.Service, req.Nonce), plain)
	clear(plain)
	if err != nil {
		return nil, req.Service, fmt.Errorf("coordinator: seal grant: %w", err)
	}
	out, err := provision.Encode(provision.JoinResponse{Grant: sealed})
	return out, req.Service, err
}

// verify checks the evidence itself (signatures, chain, collateral), under
// the manifest's simulation policy.
func (in *instance) verify(ctx context.Context, m *manifest.Manifest, ev *attest.Evidence) (*attest.Claims, error) {
	opts := attest.VerifyOptions{At: in.opts.Now(), Collateral: in.opts.Collateral}
	if in.cfg.collateral != nil {
		opts.Collateral = in.cfg.collateral
	}
	if ev.Type == attest.EvidenceSimulated {
		if !m.Policy.AllowSimulation {
			return nil, refuse(provision.CodeRefused, "simulated evidence refused: the manifest forbids simulation")
		}
		keys := in.simPlatformKeys()
		if len(keys) == 0 {
			return nil, refuse(provision.CodeRefused, "simulated evidence refused: the host configured no simulation platform key (Config.SimPlatformKeys)")
		}
		opts.AllowSimulation = true
		opts.SimPlatformKeys = keys
	}
	claims, err := attest.Verifier{}.Verify(ctx, ev, opts)
	if err != nil {
		return nil, refuse(provision.CodeRefused, "evidence does not verify: %v", err)
	}
	return claims, nil
}

// simPlatformKeys returns the simulation platform keys trusted:
// Options.SimPlatformKeys and Config.SimPlatformKeys.
func (in *instance) simPlatformKeys() []*ecdsa.PublicKey {
	return append(slices.Clip(in.opts.SimPlatformKeys), in.cfg.simKeys...)
}

// checkIdentity checks verified claims against the service's identities
// and the manifest's policy, and words a refusal by its first reason.
func checkIdentity(m *manifest.Manifest, svc *manifest.Service, c *attest.Claims) error {
	err := m.Check(svc.Name, c)
	if err == nil {
		return nil
	}
	known := false
	for _, id := range svc.Identities {
		if (id.MREnclave != nil && *id.MREnclave == c.MREnclave) ||
			(id.MRSigner != nil && *id.MRSigner == c.MRSigner && id.ProductID == c.ProductID) {
			known = true
		}
	}
	switch {
	case !known:
		return refuse(provision.CodeRefused, "measurement %x (signer %x, product %d) is not among the identities of service %s",
			c.MREnclave, c.MRSigner, c.ProductID, svc.Name)
	case c.Debug && !svc.Debug:
		return refuse(provision.CodeRefused, "debug enclave refused: service %s does not allow debug enclaves (the host can read their memory)", svc.Name)
	case !c.Simulated() && !slices.Contains(m.Policy.AcceptedTCB, c.TCBStatus):
		names := make([]string, len(m.Policy.AcceptedTCB))
		for i, s := range m.Policy.AcceptedTCB {
			names[i] = s.String()
		}
		return refuse(provision.CodeRefused, "TCB status %s is not accepted by the manifest (accepted: %s)", c.TCBStatus, strings.Join(names, ", "))
	}
	return refuse(provision.CodeRefused, "evidence does not satisfy the identities of service %s: %v", svc.Name, err)
}

// grant assembles what the service may know.
func (in *instance) grant(m *manifest.Manifest, hash [32]byte, svc *manifest.Service) (*provision.Grant, error) {
	in.mu.Lock()
	epoch, graceUntil, root := in.st.Epoch, in.st.GraceUntil, in.st.Root
	in.mu.Unlock()
	now := in.opts.Now()
	inGrace := epoch > 1 && now.Before(graceUntil)
	g := &provision.Grant{Service: svc.Name, ManifestHash: hash[:], ManifestVersion: m.Version, Epoch: epoch,
		CoordinatorKey: in.sign.Public().(ed25519.PublicKey)}
	if inGrace {
		g.GraceUntil = graceUntil
	}
	for _, r := range m.AddressesFor(svc.Name) {
		ag := provision.AddressGrant{Address: r.Address, Secured: r.Secured, Durable: r.Durable, Clients: r.Clients,
			Consume: r.Consume, Send: r.Send, Publish: r.Publish}
		if r.Secured {
			epochs := []uint32{epoch}
			if inGrace {
				epochs = append(epochs, epoch-1)
			}
			for _, e := range epochs {
				k, err := secure.DeriveAddressKey(root, r.Address, e)
				if err != nil {
					return nil, fmt.Errorf("coordinator: address key of %s: %w", r.Address, err)
				}
				ag.Keys = append(ag.Keys, provision.EpochKey{Epoch: e, Key: k.Key[:]})
			}
		}
		g.Addresses = append(g.Addresses, ag)
		if r.Clients && r.Consume && g.Clients == nil {
			// The service opens client sessions: it checks their
			// credentials against the manifest's clients.
			g.Clients = make(map[string][]byte, len(m.Clients))
			for name, k := range m.Clients {
				g.Clients[name] = k
			}
		}
	}
	for name, s := range svc.Secrets {
		if g.Secrets == nil {
			g.Secrets = map[string][]byte{}
		}
		if s.Value != nil {
			g.Secrets[name] = s.Value
			continue
		}
		v, err := deriveSecret(root, svc.Name, name, s.Generate)
		if err != nil {
			return nil, err
		}
		g.Secrets[name] = v
	}
	fg, err := in.freshnessGrant(m, root, svc.Name)
	if err != nil {
		return nil, err
	}
	g.Freshness = fg
	ck, err := in.channelKey(svc.Name)
	if err != nil {
		return nil, err
	}
	if g.ChannelKey, err = ck.Bytes(); err != nil {
		return nil, fmt.Errorf("coordinator: channel key of %s: %w", svc.Name, err)
	}
	return g, nil
}
