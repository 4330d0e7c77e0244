package secured

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/trusted"
	"github.com/cloister-dev/cloister/trusted/fresh"
	"github.com/cloister-dev/cloister/wire"
)

// FreshnessAddress is the pseudo-address under which the layer reports the
// freshness counters in Rejections (and so in the host's health detail):
// reasons ReasonRolledBack, CountCheckpoints and CountCheckpointFailures.
const FreshnessAddress = "(protected storage)"

// Freshness counters, as Rejections reports them under FreshnessAddress.
const (
	ReasonRolledBack        = "rolled-back"
	CountCheckpoints        = "checkpoints"
	CountCheckpointFailures = "checkpoint-failures"
)

// Registry is the coordinator group's freshness service as an instance
// reaches it: provision.Checkpoint and provision.FreshRead requests MAC'd
// with the grant's freshness key, answers checked against the grant's
// coordinator key and the request's nonce. It implements fresh.Registry.
type Registry struct {
	Requester Requester
	Service   string
	Instance  uint32
	// Key is the grant's FreshnessGrant.Key; CoordinatorKey the grant's
	// Ed25519 key that signs the answers.
	Key, CoordinatorKey []byte
}

// ErrBadRegistered wraps an answer that is not the group's signed answer to
// this request (a host forging or replaying answers).
var ErrBadRegistered = errors.New("secured: bad answer from the coordinator group")

// Registered implements fresh.Registry with a provision.FreshRead.
func (r *Registry) Registered(ctx context.Context) (uint64, []byte, error) {
	nonce := make([]byte, provision.NonceSize)
	rand.Read(nonce)
	req := provision.NewFreshRead(r.Key, r.Service, r.Instance, nonce)
	reg, err := r.ask(ctx, provision.AddressFreshRead, nonce, req)
	if err != nil {
		return 0, nil, err
	}
	return reg.Counter, reg.Digest, nil
}

// Register implements fresh.Registry with a provision.Checkpoint.
func (r *Registry) Register(ctx context.Context, counter uint64, digest []byte) error {
	nonce := make([]byte, provision.NonceSize)
	rand.Read(nonce)
	req := provision.NewCheckpoint(r.Key, r.Service, r.Instance, counter, digest, nonce)
	reg, err := r.ask(ctx, provision.AddressCheckpoint, nonce, req)
	if err != nil {
		return err
	}
	if reg.Counter != counter || !bytes.Equal(reg.Digest, digest) {
		return fmt.Errorf("%w: registered counter %d, not the checkpoint's %d", ErrBadRegistered, reg.Counter, counter)
	}
	return nil
}

// ask sends req to address and checks the signed answer.
func (r *Registry) ask(ctx context.Context, address string, nonce []byte, req any) (*provision.Registered, error) {
	body, err := provision.Encode(req)
	if err != nil {
		return nil, fmt.Errorf("secured: %s: %w", address, err)
	}
	resp, err := r.Requester.Request(ctx, address, nil, body, 10*time.Second)
	if err != nil {
		var re *trusted.RequestError
		if errors.As(err, &re) && re.Failure == wire.FailureRecipient {
			switch re.Code {
			case provision.CodeUnavailable:
				return nil, fmt.Errorf("%w: %s", fresh.ErrUnavailable, re.Message)
			case provision.CodeConflict:
				return nil, fmt.Errorf("%w: %s", fresh.ErrConflict, re.Message)
			}
		}
		return nil, fmt.Errorf("secured: %s: %w", address, err)
	}
	var reg provision.Registered
	if err := provision.Decode(resp.Body, &reg); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRegistered, err)
	}
	if err := reg.Check(r.CoordinatorKey, provision.ServiceSubject(r.Service, r.Instance), nonce); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRegistered, err)
	}
	return &reg, nil
}

// startFreshness starts the tracker when the grant carries freshness: the
// local state must be at least the version the group remembers, and the
// replay windows are restored, checked, before the start is registered.
// It reports whether it restored them.
func (k *keys) startFreshness(ctx context.Context) (bool, error) {
	k.mu.RLock()
	g := k.grant
	k.mu.RUnlock()
	if g.Freshness == nil {
		k.log.Warn("the manifest declares no freshness: the host can roll protected storage back, replay windows included")
		return false, nil
	}
	interval, err := time.ParseDuration(g.Freshness.Checkpoint)
	if err != nil || interval < 0 {
		return false, fmt.Errorf("secured: grant: checkpoint interval %q: want a duration ≥ 0", g.Freshness.Checkpoint)
	}
	ctx, cancel := context.WithTimeout(ctx, k.opts.JoinTimeout) // the group may still be admitting replicas
	defer cancel()
	t, err := fresh.Start(ctx, k.rt, grantRegistry{k}, fresh.Options{Subject: provision.ServiceSubject(g.Service, k.rt.Instance()),
		Group: g.Freshness.Group, Interval: interval, BeforeCheckpoint: k.saveWindows, Load: k.restoreWindows})
	if err != nil {
		return false, fmt.Errorf("secured: freshness of %s: %w", g.Service, err)
	}
	k.fresh.Store(t)
	return true, nil
}

// grantRegistry is the Registry of the current grant (a re-join may bring
// new keys).
type grantRegistry struct{ k *keys }

func (r grantRegistry) current() *Registry {
	r.k.mu.RLock()
	defer r.k.mu.RUnlock()
	g := r.k.grant
	reg := &Registry{Requester: r.k.rt, Service: g.Service, Instance: r.k.rt.Instance(), CoordinatorKey: g.CoordinatorKey}
	if g.Freshness != nil {
		reg.Key = g.Freshness.Key
	}
	return reg
}

// Registered implements fresh.Registry.
func (r grantRegistry) Registered(ctx context.Context) (uint64, []byte, error) {
	return r.current().Registered(ctx)
}

// Register implements fresh.Registry.
func (r grantRegistry) Register(ctx context.Context, counter uint64, digest []byte) error {
	return r.current().Register(ctx, counter, digest)
}

// freshCounts adds the tracker's counters to r (under FreshnessAddress).
func (k *keys) freshCounts(r map[string]map[string]uint64) {
	t := k.fresh.Load()
	if t == nil {
		return
	}
	c := t.Counters()
	r[FreshnessAddress] = map[string]uint64{ReasonRolledBack: c.RolledBack, CountCheckpoints: c.Checkpoints, CountCheckpointFailures: c.CheckpointFailures}
}
