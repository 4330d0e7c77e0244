package secured

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/wire"
)

// Options configure the secured-address layer. The zero value is usable.
type Options struct {
	// Service is the service name in the application's manifest. Empty:
	// the one the host names in Init (a node's enclave configuration sets
	// it); when neither names one, the instance runs without the layer.
	Service string
	// JoinTimeout bounds the join at start-up, retries included (default
	// DefaultJoinTimeout; keep it below the host's start timeout).
	JoinTimeout time.Duration
	// Sessions bound the client sessions the layer holds for the
	// addresses open to clients (secure's defaults when zero).
	Sessions secure.SessionOptions
}

// DefaultJoinTimeout is the default of Options.JoinTimeout.
const DefaultJoinTimeout = 20 * time.Second

// Layer returns the secured-address layer for trusted.Options.Layer:
//
//	app := trusted.New(trusted.Options{Layer: secured.Layer(secured.Options{})})
func Layer(opts Options) func(rt *trusted.Runtime) trusted.Layer {
	if opts.JoinTimeout <= 0 {
		opts.JoinTimeout = DefaultJoinTimeout
	}
	return func(rt *trusted.Runtime) trusted.Layer {
		service := opts.Service
		if service == "" {
			service = rt.ServiceToJoin()
		}
		if service == "" {
			return nil
		}
		return newKeys(rt, opts, service)
	}
}

// Start joins the coordinator (retrying until Options.JoinTimeout), then,
// when the grant carries freshness, checks the local state against the
// group's and restores the replay windows (see the package doc); without
// it, restores them and saves them every windowSaveInterval.
func (k *keys) Start(ctx context.Context) error {
	jctx, cancel := context.WithTimeout(ctx, k.opts.JoinTimeout)
	err := k.joinRetrying(jctx)
	cancel()
	if err != nil {
		return err
	}
	if k.rt.StorageErr() == nil {
		tracked, err := k.startFreshness(ctx) // restores the windows with freshness
		if err != nil {
			return err
		}
		if !tracked {
			k.restoreWindows(ctx)     // no rollback to refuse
			k.rt.Go(k.persistWindows) // with freshness, every checkpoint saves them
		}
	}
	return nil
}

// Handlers serves the coordinator's epoch notices.
func (k *keys) Handlers() map[string]trusted.Handler {
	return map[string]trusted.Handler{provision.AddressEpoch: epochHandler{k}}
}

// Serves announces the registered addresses the grant lets the service
// consume, and the epoch notices.
func (k *keys) Serves(registered []string) []string {
	var out []string
	for _, a := range registered {
		if g := k.address(a); g != nil && g.Consume {
			out = append(out, a)
		} else {
			k.log.Info("not serving an address: the grant gives no right to consume it", "address", a)
		}
	}
	if _, own := k.Handlers()[provision.AddressEpoch]; own && !slices.Contains(registered, provision.AddressEpoch) {
		out = append(out, provision.AddressEpoch)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Open opens a delivery (see the package doc), or counts, logs and refuses
// it; the handler then does not run. Only the address and the reason are
// logged.
func (k *keys) Open(d *trusted.Delivery) (trusted.Opened, error) {
	body := d.Body
	o, err := k.open(d)
	if err == nil {
		return o, nil
	}
	why := reason(err)
	k.count(d.Address, why)
	k.log.Warn("rejected a message", "address", d.Address, "kind", d.Kind.String(), "reason", why)
	code := codeFor(why)
	if why == ReasonReplay && body != nil && secure.IsSessionMessage(body) {
		// A copy of a client message handled before: nothing to redo.
		code = wire.CodeAlreadyHandled
	}
	r := &trusted.Refusal{Code: code, Message: fmt.Sprintf("rejected by the enclave (%s): %v", why, err)}
	if retryable(why) {
		r.Retry = true
		if !d.ExpectsReply {
			r.Code, r.Message = wire.CodeBusy, "refused for now ("+why+")"
		}
	}
	return nil, r
}

// Outgoing checks the grant's right and seals for a secured address; a
// secured request's reply is opened bound to it.
func (k *keys) Outgoing(address string, kind wire.Kind, headers map[string]string, body []byte) (map[string]string, []byte, trusted.OpenReply, error) {
	headers, body, a, ref, err := k.outgoing(address, kind, headers, body)
	if err != nil || a == nil || kind != wire.KindRequest {
		return headers, body, nil, err
	}
	return headers, body, func(reply []byte) (*trusted.Response, error) {
		o, err := a.opener.OpenReply(ref, reply)
		if err != nil {
			why := reason(err)
			k.count(address, why)
			k.log.Warn("rejected a reply", "address", address, "reason", why)
			return nil, fmt.Errorf("secured: request to %q: %w (%s): %w", address, ErrRejected, why, err)
		}
		return &trusted.Response{Headers: o.Headers, Body: o.Plaintext}, nil
	}, nil
}

// Health reports the rejection counters.
func (k *keys) Health() string { return k.healthDetail() }

// Stop saves the replay windows.
func (k *keys) Stop(ctx context.Context) error {
	if k.rt.StorageErr() != nil {
		return nil
	}
	if err := k.saveWindows(ctx); err != nil {
		return fmt.Errorf("replay windows not saved at shutdown: %w", err)
	}
	if t := k.fresh.Load(); t != nil {
		if err := t.Flush(ctx); err != nil {
			return fmt.Errorf("last checkpoint not registered at shutdown: %w", err)
		}
	}
	return nil
}

// of returns the layer of rt (nil when the instance runs without it).
func of(rt *trusted.Runtime) *keys {
	k, _ := rt.Layer().(*keys)
	return k
}

// Service returns the service the instance joined as ("" when it runs
// without the secured-address layer or has not joined).
func Service(rt *trusted.Runtime) string {
	k := of(rt)
	if k == nil {
		return ""
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.grant == nil {
		return ""
	}
	return k.grant.Service
}

// Epoch returns the current key epoch of the grant (0 when not joined).
func Epoch(rt *trusted.Runtime) uint32 {
	if k := of(rt); k != nil {
		return k.epoch()
	}
	return 0
}

// Secret returns the grant's secret name (a copy), and whether the grant
// holds it.
func Secret(rt *trusted.Runtime, name string) ([]byte, bool) {
	k := of(rt)
	if k == nil {
		return nil, false
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.grant == nil {
		return nil, false
	}
	v, ok := k.grant.Secrets[name]
	return bytes.Clone(v), ok
}

// Rejections returns how many messages the layer rejected, by address and
// reason (the Reason* constants): counts only. The host sees the same
// counts in the enclave's health.
func Rejections(rt *trusted.Runtime) map[string]map[string]uint64 {
	if k := of(rt); k != nil {
		return k.rejections()
	}
	return map[string]map[string]uint64{}
}

// Sealed reports whether c came sealed in an envelope of a secured address
// (and was opened: authenticated, not a replay).
func Sealed(c *trusted.Call) bool {
	_, ok := c.Opened().(*sealedCall)
	return ok
}

// Client returns the name of the authenticated client that sent c, a
// client-session message, as the application's manifest lists it, and
// whether c is one. Use it to check that a client speaks only for itself.
func Client(c *trusted.Call) (string, bool) {
	if o, ok := c.Opened().(*clientCall); ok {
		return o.m.Client, true
	}
	return "", false
}
