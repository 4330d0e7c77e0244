package fresh

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/trusted"
)

// A Registry is the coordinator group as the tracker sees it: where an
// instance registers the versions of its state and reads the one the group
// remembers. Package trusted/secured implements it with the grant's
// freshness key (provision's Checkpoint and FreshRead).
type Registry interface {
	// Registered returns the version the group remembers for the
	// instance: counter 0 and no digest when none.
	Registered(ctx context.Context) (counter uint64, digest []byte, err error)
	// Register registers version (counter, digest) once a quorum holds
	// it. Errors wrap ErrConflict when the group holds a newer version or
	// another digest for counter, ErrUnavailable when it cannot answer now.
	Register(ctx context.Context, counter uint64, digest []byte) error
}

// Errors of the tracker and of a Registry.
var (
	// ErrConflict: the group holds a newer version of the instance's
	// state, or another digest for the same counter: another instance, or
	// an older incarnation of this one, wrote from the same state. The
	// instance must stop serving.
	ErrConflict = errors.New("fresh: the coordinator group holds another version of this state")
	// ErrUnavailable: the group cannot answer now (a replica is being
	// admitted, or the quorum is lost); the tracker retries.
	ErrUnavailable = errors.New("fresh: the coordinator group is unavailable")
)

// Options configure Start.
type Options struct {
	// Subject is the instance's subject in the group
	// (provision.ServiceSubject).
	Subject string
	// Group identifies the coordinator group the grant came from (the
	// hash of its signing key); the index names it.
	Group []byte
	// Interval is the checkpoint interval: 0 registers every batch of
	// writes before a message that follows it leaves the enclave; t > 0
	// registers at most every t, when something was written.
	Interval time.Duration
	// BeforeCheckpoint, if set, runs before each checkpoint, so that what
	// it writes to protected storage is part of it (the secured layer
	// saves its replay windows).
	BeforeCheckpoint func(ctx context.Context) error
	// Load, if set, runs once the local state is accepted and the tracker
	// installed, before the start is registered: what it reads is checked
	// (the secured layer restores its replay windows), and an error stops
	// the start with nothing registered. It must not write.
	Load func(ctx context.Context) error
}

// Counters are what the tracker counted since the instance started.
type Counters struct {
	RolledBack         uint64 // blobs (or a whole index at start) refused as rolled back
	Checkpoints        uint64 // checkpoints registered
	CheckpointFailures uint64 // attempts that failed (and were retried, or ended the instance)
}

// Tracker is one instance's freshness state: it implements
// trusted.StoreTracker (see the package doc).
type Tracker struct {
	rt       *trusted.Runtime
	reg      Registry
	opts     Options
	log      *slog.Logger
	indexKey string

	mu         sync.Mutex
	gen        uint64                     // this incarnation: the counter it registered at start
	seq        uint64                     // writes of this incarnation
	counter    uint64                     // the last counter an index was written with
	entries    map[string]trusted.Version // the floor of every key known
	writes     uint64                     // Puts (of keys other than the index) so far
	touches    uint64                     // Touch calls so far
	regWrites  uint64                     // writes covered by the last registered checkpoint
	regTouches uint64                     // touches covered by it
	done       chan struct{}              // closed (and replaced) when a checkpoint is registered
	failed     error                      // the instance must stop
	kick       chan struct{}

	rolledBack, checkpoints, failures atomic.Uint64
	stopped                           atomic.Bool // failed is set
}

// ErrStaleState wraps the refusal to start from local state older than
// the version the group remembers (it wraps trusted.ErrRolledBack too).
var ErrStaleState = errors.New("fresh: local state is older than the registered version")

// ownRequest marks the context of the tracker's own requests, which Hold
// lets through.
type ownRequest struct{}

// Start checks the instance's local state against the version the group
// remembers, installs the tracker into rt's protected storage and starts
// checkpointing. Call it before protected storage is used (a Layer's
// Start). A refusal (local state older than registered, or another
// instance registered first) is an error wrapping ErrStaleState or
// ErrConflict; the caller must not serve.
func Start(ctx context.Context, rt *trusted.Runtime, reg Registry, opts Options) (*Tracker, error) {
	t := &Tracker{rt: rt, reg: reg, opts: opts, log: rt.Logger(), entries: map[string]trusted.Version{},
		indexKey: "cloister/trusted/fresh/index/v1/" + strconv.FormatUint(uint64(rt.Instance()), 10),
		done:     make(chan struct{}), kick: make(chan struct{}, 1)}
	local, err := t.loadIndex(ctx)
	if err != nil {
		return nil, err
	}
	counter, digest, err := t.registered(ctx)
	if err != nil {
		return nil, err
	}
	if err := t.accept(local, counter, digest); err != nil {
		t.rolledBack.Add(1)
		t.log.Error("refusing to start from rolled-back state", "subject", opts.Subject, "err", err.Error())
		if local != nil && counter > 0 {
			// The group refuses this stale version too, and counts and
			// logs it where the host sees it.
			reg.Register(context.WithValue(ctx, ownRequest{}, true), local.counter, local.digest())
		}
		return nil, err
	}
	if local != nil {
		t.entries, t.counter = local.entries, local.counter
	}
	t.gen = t.counter + 1
	rt.TrackStore(t)
	if opts.Load != nil {
		if err := opts.Load(ctx); err != nil {
			if errors.Is(err, trusted.ErrRolledBack) {
				t.log.Error("refusing to start from rolled-back state", "subject", opts.Subject, "err", err.Error())
			}
			return nil, err
		}
	}
	octx := context.WithValue(ctx, ownRequest{}, true)
	if err := t.checkpoint(octx); err != nil {
		return nil, fmt.Errorf("fresh: registering the state at start: %w", err)
	}
	t.log.Info("state version registered", "subject", opts.Subject, "counter", t.counter, "registered_before", counter)
	rt.Go(t.loop)
	return t, nil
}

// loadIndex reads the sealed index (nil if there is none).
func (t *Tracker) loadIndex(ctx context.Context) (*index, error) {
	b, found, err := t.rt.Get(ctx, t.indexKey)
	if err != nil || !found {
		return nil, err
	}
	x, err := decodeIndex(b)
	if err == nil && x.subject != t.opts.Subject {
		err = fmt.Errorf("%w: it is the index of %q, not %q", ErrBadIndex, x.subject, t.opts.Subject)
	}
	return x, err
}

// registered reads the group's version, retrying while it is unavailable.
func (t *Tracker) registered(ctx context.Context) (uint64, []byte, error) {
	for delay := 50 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		c, d, err := t.reg.Registered(ctx)
		if !errors.Is(err, ErrUnavailable) {
			return c, d, err
		}
		t.log.Warn("the coordinator group cannot tell the registered state version yet; retrying", "err", err.Error())
		if err := sleep(ctx, delay); err != nil {
			return 0, nil, fmt.Errorf("fresh: reading the registered version: %w (last: %w)", err, ErrUnavailable)
		}
	}
}

// accept decides whether local may serve, given the registered version.
func (t *Tracker) accept(local *index, counter uint64, digest []byte) error {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %w: "+format, append([]any{ErrStaleState, trusted.ErrRolledBack}, args...)...)
	}
	switch {
	case counter == 0 && local != nil && local.counter > 0 && !bytes.Equal(local.group, t.opts.Group):
		return refuse("the local state (counter %d) was registered with another coordinator group, which is gone: bring that group's replicas back, or remove this instance's state to start it afresh", local.counter)
	case counter == 0:
		return nil
	case local == nil:
		return refuse("no local state index, but counter %d is registered", counter)
	case local.counter < counter:
		return refuse("local state counter %d, registered counter %d", local.counter, counter)
	case local.counter == counter && !bytes.Equal(local.digest(), digest):
		return refuse("local state counter %d has another digest than the registered counter %d", local.counter, counter)
	}
	return nil
}

func (x *index) digest() []byte {
	d := sha256.Sum256(x.encode())
	return d[:]
}

// Next implements trusted.StoreTracker: the version of the next blob.
func (t *Tracker) Next(key string) trusted.Version {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	v := trusted.Version{Gen: t.gen, Seq: t.seq}
	if key != t.indexKey {
		t.entries[key] = v
		t.writes++
		t.soon()
	}
	return v
}

// soon starts a checkpoint in the background with interval 0, so that a
// write no message waits for (a one-way handler's) is registered too.
func (t *Tracker) soon() {
	if t.opts.Interval == 0 {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

// Expect implements trusted.StoreTracker: the returned function refuses a
// blob older than key's floor now (or a missing one when key has a floor),
// and raises the floor to a newer blob it accepts.
func (t *Tracker) Expect(key string) func(trusted.Version, bool) error {
	if key == t.indexKey {
		return nil
	}
	t.mu.Lock()
	floor, known := t.entries[key]
	t.mu.Unlock()
	return func(v trusted.Version, found bool) error {
		if (!found && known) || v.Less(floor) {
			t.rolledBack.Add(1)
			t.log.Error("refused a rolled-back blob of protected storage", "subject", t.opts.Subject,
				"found", found, "blob_gen", v.Gen, "blob_seq", v.Seq, "want_gen", floor.Gen, "want_seq", floor.Seq)
			if !found {
				return fmt.Errorf("%w: the blob is missing, version %d.%d expected", trusted.ErrRolledBack, floor.Gen, floor.Seq)
			}
			return fmt.Errorf("%w: blob version %d.%d, at least %d.%d expected", trusted.ErrRolledBack, v.Gen, v.Seq, floor.Gen, floor.Seq)
		}
		t.mu.Lock()
		if cur, ok := t.entries[key]; found && (!ok || cur.Less(v)) {
			t.entries[key] = v
		}
		t.mu.Unlock()
		return nil
	}
}

// Touch records a change that the next checkpoint must cover although it
// is not a Put yet (BeforeCheckpoint writes it): with interval 0, messages
// that follow wait for that checkpoint.
func (t *Tracker) Touch() {
	t.mu.Lock()
	t.touches++
	t.mu.Unlock()
	t.soon()
}

// Hold implements trusted.StoreTracker: with interval 0 it returns once a
// checkpoint covering every write and touch so far is registered.
func (t *Tracker) Hold(ctx context.Context) error {
	if t.opts.Interval > 0 || ctx.Value(ownRequest{}) != nil {
		if !t.stopped.Load() {
			return nil
		}
		return t.err()
	}
	return t.wait(ctx)
}

// Flush returns once a checkpoint covers every write and touch so far,
// whatever the interval (the secured layer calls it at shutdown).
func (t *Tracker) Flush(ctx context.Context) error { return t.wait(ctx) }

func (t *Tracker) err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

// wait is Hold without the interval: group commit, one checkpoint in
// flight covers every write before it; waiters for later writes wait for
// the next.
func (t *Tracker) wait(ctx context.Context) error {
	t.mu.Lock()
	writes, touches := t.writes, t.touches
	for t.failed == nil && (t.regWrites < writes || t.regTouches < touches) {
		done := t.done
		t.mu.Unlock()
		select {
		case t.kick <- struct{}{}:
		default:
		}
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("fresh: waiting for a checkpoint: %w", ctx.Err())
		}
		t.mu.Lock()
	}
	defer t.mu.Unlock()
	return t.failed
}

// loop checkpoints when a waiter asks (interval 0) or every interval when
// something changed, until the instance stops.
func (t *Tracker) loop(ctx context.Context) {
	ctx = context.WithValue(ctx, ownRequest{}, true)
	var tick <-chan time.Time
	if t.opts.Interval > 0 {
		tk := time.NewTicker(t.opts.Interval)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		case <-tick:
		}
		t.mu.Lock()
		idle := t.regWrites == t.writes && t.regTouches == t.touches
		t.mu.Unlock()
		if idle {
			continue
		}
		err := t.checkpoint(ctx)
		if errors.Is(err, ErrConflict) {
			t.mu.Lock()
			t.failed = err
			t.stopped.Store(true)
			close(t.done)
			t.done = make(chan struct{})
			t.mu.Unlock()
			t.rt.Fatal(fmt.Errorf("fresh: %s: stop serving: %w", t.opts.Subject, err))
			return
		}
	}
}

// checkpoint writes the index and registers it, retrying until it is
// registered, ctx ends or the group answers ErrConflict.
func (t *Tracker) checkpoint(ctx context.Context) error {
	t.mu.Lock()
	touches := t.touches
	t.mu.Unlock()
	if f := t.opts.BeforeCheckpoint; f != nil {
		if err := f(ctx); err != nil {
			t.log.Warn("before checkpoint", "err", err.Error())
		}
	}
	x := &index{subject: t.opts.Subject, group: t.opts.Group}
	rand.Read(x.salt[:])
	t.mu.Lock()
	x.counter, x.gen = t.counter+1, t.gen
	writes := t.writes
	x.entries = make(map[string]trusted.Version, len(t.entries))
	for k, v := range t.entries {
		x.entries[k] = v
	}
	t.counter = x.counter
	t.mu.Unlock()
	b := x.encode()
	// The host makes this write durable before it lets the request
	// below out.
	if err := t.rt.Put(ctx, t.indexKey, b); err != nil {
		t.failures.Add(1)
		return fmt.Errorf("fresh: writing the index: %w", err)
	}
	digest := sha256.Sum256(b)
	for delay := 50 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		err := t.reg.Register(ctx, x.counter, digest[:])
		if err == nil {
			break
		}
		t.failures.Add(1)
		if errors.Is(err, ErrConflict) {
			t.log.Error("the coordinator group refused a checkpoint: another instance or an older incarnation registered a newer version", "subject", t.opts.Subject, "counter", x.counter, "err", err.Error())
			return err
		}
		t.log.Warn("checkpoint not registered; retrying", "subject", t.opts.Subject, "counter", x.counter, "err", err.Error(), "in", delay)
		if err := sleep(ctx, delay); err != nil {
			return fmt.Errorf("fresh: checkpoint %d: %w", x.counter, err)
		}
	}
	t.checkpoints.Add(1)
	t.mu.Lock()
	t.regWrites, t.regTouches = writes, touches
	close(t.done)
	t.done = make(chan struct{})
	t.mu.Unlock()
	return nil
}

// Counters returns what the tracker counted.
func (t *Tracker) Counters() Counters {
	return Counters{RolledBack: t.rolledBack.Load(), Checkpoints: t.checkpoints.Load(), CheckpointFailures: t.failures.Load()}
}

func sleep(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
