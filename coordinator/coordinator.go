package coordinator

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/seal"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
)

// Defaults of Options.
const (
	// DefaultMaxChallenges bounds the spent challenges remembered at once.
	DefaultMaxChallenges = 4096
	// DefaultGrace is the grace period of a rotation that names none.
	DefaultGrace = 10 * time.Minute
	// MaxGrace bounds the grace period of a rotation.
	MaxGrace = 30 * 24 * time.Hour
)

// Options configure a Coordinator. The zero value is usable.
type Options struct {
	// NonceLifetime is how long a challenge may be answered (default
	// provision.DefaultNonceLifetime).
	NonceLifetime time.Duration
	// MaxChallenges bounds the spent challenges remembered (those of joins
	// whose evidence verified, until they expire; default
	// DefaultMaxChallenges); beyond it joins are refused with
	// provision.CodeTooMany until some expire. Issuing a challenge keeps no
	// state, so requests for challenges never count.
	MaxChallenges int
	// SimPlatformKeys are simulation platform keys to trust beside those
	// of Config.SimPlatformKeys (which the host hands in, usually its own
	// attest.SimulationRoot's). When the manifest allows simulation,
	// simulated evidence signed by one of them is verified; with none,
	// simulated evidence is refused. The coordinator never looks for keys
	// on the machine itself.
	SimPlatformKeys []*ecdsa.PublicKey
	// Collateral, when set, is used to verify SGX DCAP evidence down to its
	// TCB status (Config.Collateral from the host takes precedence);
	// without either, DCAP evidence has no TCB status and is refused by
	// every manifest (whose accepted TCB statuses are never empty).
	Collateral *attest.Collateral
	// Now is the clock (default time.Now). Inside an enclave the clock is
	// the host's.
	Now func() time.Time
}

// Coordinator is the provisioning service: register it on a trusted.App
// (see NewApp) and serve. One Coordinator may serve several enclave
// instances of one App (trusted.App.Serve); each has its own state, read
// from its own protected storage.
type Coordinator struct {
	opts Options

	mu        sync.Mutex
	instances map[*trusted.Runtime]*instance
}

// New returns a Coordinator with opts.
func New(opts Options) *Coordinator {
	if opts.NonceLifetime <= 0 {
		opts.NonceLifetime = provision.DefaultNonceLifetime
	}
	if opts.MaxChallenges <= 0 {
		opts.MaxChallenges = DefaultMaxChallenges
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Coordinator{opts: opts, instances: map[*trusted.Runtime]*instance{}}
}

// NewApp returns a trusted.App that serves the coordinator: topts with the
// coordinator's OnInit hook (which runs topts.OnInit first, if set) and a
// seal policy of MRENCLAVE unless topts sets one, and the coordinator's
// handlers registered. Call its Main (an image) or Serve.
func NewApp(opts Options, topts trusted.Options) *trusted.App {
	c := New(opts)
	next := topts.OnInit
	topts.OnInit = func(ctx context.Context, rt *trusted.Runtime) error {
		if next != nil {
			if err := next(ctx, rt); err != nil {
				return err
			}
		}
		return c.Init(ctx, rt)
	}
	if topts.SealPolicy == 0 {
		topts.SealPolicy = seal.PolicyMRENCLAVE
	}
	app := trusted.New(topts)
	c.Register(app)
	return app
}

// Register registers the coordinator's handlers (every provision.Address*
// it serves) on app. Init must run for each instance before it serves
// (trusted.Options.OnInit); NewApp arranges both.
func (c *Coordinator) Register(app *trusted.App) {
	for addr, h := range map[string]handlerFunc{
		provision.AddressAttest:          (*instance).attest,
		provision.AddressServiceKey:      (*instance).serviceKey,
		provision.AddressChallenge:       (*instance).challenge,
		provision.AddressJoin:            (*instance).join,
		provision.AddressManifestSet:     (*instance).manifestSet,
		provision.AddressManifestUpdate:  (*instance).manifestUpdate,
		provision.AddressManifestHistory: (*instance).manifestHistory,
		provision.AddressRotate:          (*instance).rotate,
		provision.AddressStatus:          (*instance).status,
		provision.AddressCheckpoint:      (*instance).checkpoint,
		provision.AddressFreshRead:       (*instance).freshRead,
	} {
		app.HandleFunc(addr, func(ctx context.Context, call *trusted.Call) {
			c.serve(ctx, call, h)
		})
	}
	for slot := range manifest.MaxReplicas {
		for op, h := range map[string]handlerFunc{
			provision.ReplicaStatusOp:  (*instance).replicaStatus,
			provision.ReplicaRecoverOp: (*instance).recover,
			provision.ReplicaPeerOp:    (*instance).peer,
		} {
			app.HandleFunc(provision.ReplicaAddress(slot, op), func(ctx context.Context, call *trusted.Call) {
				c.serve(ctx, call, h)
			})
		}
	}
}

// gated reports whether a replica must be live to answer on address:
// everything but the status and the per-replica addresses (which decide
// for themselves).
func gated(address string) bool {
	if _, _, ok := provision.ParseReplicaAddress(address); ok {
		return false
	}
	return address != provision.AddressStatus
}

// Init loads (or, on first start, creates) the instance's sealed state.
func (c *Coordinator) Init(ctx context.Context, rt *trusted.Runtime) error {
	cfg, err := parseConfig(rt.Config())
	if err != nil {
		return err
	}
	st, m, found, err := readState(ctx, rt)
	if err != nil {
		return err
	}
	if m != nil && m.Freshness == nil && cfg.slot > 0 {
		return fmt.Errorf("coordinator: configured as replica slot %d, but the stored manifest declares no freshness (no replicas): only slot 0 runs", cfg.slot)
	}
	// A replica group: the stored manifest declares freshness, or the
	// host runs replicas and this one has no state or no manifest yet.
	replicated := (m != nil && m.Freshness != nil) || (m == nil && (cfg.slot > 0 || cfg.replicas > 1))
	created := false
	if !found {
		// A replica that joins a group takes the group's state; this one
		// is a placeholder until then, never stored.
		if st, err = newState(); err != nil {
			return err
		}
		if !replicated {
			if err := saveState(ctx, rt, st); err != nil {
				return err
			}
			created = true
		}
	}
	ch, err := newChallenges(c.opts.NonceLifetime, c.opts.MaxChallenges)
	if err != nil {
		return err
	}
	in := &instance{
		opts: &c.opts, rt: rt, cfg: cfg, st: st, m: m, rooted: found || created,
		sign:     ed25519.NewKeyFromSeed(st.SigningSeed),
		ch:       ch,
		channels: map[string]*secure.ServiceKey{},
		signed:   map[string][]byte{},
		dirty:    make(chan struct{}, 1),
	}
	if m != nil {
		in.hash = m.Hash()
		in.hashes = historyHashes(st.chain())
	}
	if replicated {
		g, err := newGroup(ctx, in, cfg.slot)
		if err != nil {
			return err
		}
		in.grp.Store(g)
		// The stored manifest says N; without one, the host's count.
		if m != nil {
			g.setReplicas(m.Replicas())
		} else {
			g.setReplicas(cfg.replicas)
		}
		var local *provision.Register
		if found {
			in.ch.setKey(challengeKey(st.Root))
			d, _, err := st.shared.digest()
			if err != nil {
				return err
			}
			local = &provision.Register{Subject: provision.CoordinatorSubject, Counter: st.Version, Digest: d[:]}
		}
		rt.Go(func(ctx context.Context) { g.admit(ctx, local) })
		rt.Go(g.refresh)
	} else if ev, err := rt.Evidence(ctx, [64]byte{}); err != nil {
		// Learn the evidence type now, so that the status says it at once.
		rt.Logger().Warn("coordinator: no evidence available", "err", err)
	} else {
		in.evType = ev.Type
	}
	go in.saver(ctx)
	c.mu.Lock()
	c.instances[rt] = in
	c.mu.Unlock()
	context.AfterFunc(ctx, func() {
		c.mu.Lock()
		delete(c.instances, rt)
		c.mu.Unlock()
	})
	log := rt.Logger()
	switch {
	case replicated && !found:
		log.Info("coordinator: replica without state: joining the group", "slot", cfg.slot)
	case created:
		log.Info("coordinator: new state (root secret and signing key drawn)", "epoch", st.Epoch)
	case m != nil:
		log.Info("coordinator: state restored", "manifest", hex.EncodeToString(in.hash[:]), "version", m.Version, "epoch", st.Epoch)
	default:
		log.Info("coordinator: state restored, no manifest yet", "epoch", st.Epoch)
	}
	return nil
}

// Error is a refusal: it is answered as a bus recipient failure with Code
// (one of provision.Code*) and Message.
type Error struct {
	Code    int
	Message string
}

// Error returns the message.
func (e *Error) Error() string { return fmt.Sprintf("coordinator: %s (code %d)", e.Message, e.Code) }

func refuse(code int, format string, a ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

// handlerFunc is one of the instance's handlers as a method expression.
type handlerFunc func(*instance, context.Context, *trusted.Call) ([]byte, error)

// serve runs h for one call and answers it.
func (c *Coordinator) serve(ctx context.Context, call *trusted.Call, h handlerFunc) {
	c.mu.Lock()
	in := c.instances[call.Runtime]
	c.mu.Unlock()
	var body []byte
	err := error(refuse(provision.CodeInternal, "coordinator not initialised"))
	if in != nil {
		err = nil
		if g := in.g(); g != nil && gated(call.Address()) {
			err = g.unavailable()
		}
		if err == nil {
			body, err = h(in, ctx, call)
		}
	}
	if !call.ExpectsReply() {
		return
	}
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			call.Logger().Error("coordinator: internal error", "address", call.Address(), "err", err)
			e = refuse(provision.CodeInternal, "%v", err)
		}
		_ = call.Fail(e.Code, e.Message)
		return
	}
	_ = call.Reply(nil, body)
}

// instance is the coordinator of one enclave instance.
type instance struct {
	opts *Options
	rt   *trusted.Runtime
	cfg  *parsedConfig

	mu   sync.Mutex
	st   *state
	m    *manifest.Manifest
	hash [32]byte
	// hashes are the manifest hashes of in.st.chain().
	hashes   [][32]byte
	sign     ed25519.PrivateKey
	ch       *challenges
	channels map[string]*secure.ServiceKey
	// signed caches ServiceKeyResponse bodies of the current manifest.
	signed  map[string][]byte
	simKeys []*ecdsa.PublicKey
	evType  string

	w     writer
	dirty chan struct{}

	// rooted: st holds this replica's state (false while a replica
	// without stored state waits for the group's).
	rooted bool
	// grp is the replica group, when the manifest declares freshness or
	// the host runs replicas (nil: a lone coordinator, as before).
	grp atomic.Pointer[group]
}

// g returns the replica group (nil for a lone coordinator).
func (in *instance) g() *group { return in.grp.Load() }

// current returns the manifest and its hash, or a refusal if none is set.
func (in *instance) current() (*manifest.Manifest, [32]byte, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.m == nil {
		return nil, [32]byte{}, refuse(provision.CodeNoManifest, "no manifest set yet (send one to %s)", provision.AddressManifestSet)
	}
	return in.m, in.hash, nil
}

// save stores the state now; the caller holds in.mu (so that no other
// change slips in between the snapshot and the write).
func (in *instance) save(ctx context.Context) error {
	if !in.rooted {
		return nil
	}
	in.snapshotRegisters()
	b, gen, err := in.w.snapshot(in.st)
	if err != nil {
		return err
	}
	return in.w.write(ctx, in.rt, b, gen)
}

// saveSoon asks the background writer to store the state (for counters,
// whose last few increments a crash may lose).
func (in *instance) saveSoon() {
	select {
	case in.dirty <- struct{}{}:
	default:
	}
}

// saver writes the state whenever saveSoon asked, until ctx ends.
func (in *instance) saver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-in.dirty:
		}
		in.mu.Lock()
		if !in.rooted {
			in.mu.Unlock()
			continue
		}
		in.snapshotRegisters()
		b, gen, err := in.w.snapshot(in.st)
		in.mu.Unlock()
		if err == nil {
			err = in.w.write(ctx, in.rt, b, gen)
		}
		if err != nil && ctx.Err() == nil {
			in.rt.Logger().Warn("coordinator: storing the counters failed", "err", err)
		}
		// At most one background write per saveInterval: a service
		// checkpointing every write would otherwise keep the host's disk
		// busy with copies of the registers.
		select {
		case <-ctx.Done():
			return
		case <-time.After(saveInterval):
		}
	}
}

// saveInterval spaces the background writes of counters and registers.
const saveInterval = 100 * time.Millisecond

func (in *instance) attest(ctx context.Context, call *trusted.Call) ([]byte, error) {
	req, err := decodeAttest(call.Body())
	if err != nil {
		return nil, err
	}
	m, hash, err := in.current()
	if err != nil {
		return nil, err
	}
	pub := in.sign.Public().(ed25519.PublicKey)
	ev, err := in.rt.Evidence(ctx, provision.AttestReportData(pub, hash[:], req.Nonce))
	if err != nil {
		return nil, fmt.Errorf("coordinator: own evidence: %w", err)
	}
	in.mu.Lock()
	in.evType = ev.Type
	in.mu.Unlock()
	evb, err := provision.EncodeEvidence(ev.Type, ev.Quote)
	if err != nil {
		return nil, err
	}
	return provision.Encode(provision.AttestResponse{Evidence: evb, SigningKey: pub, ManifestHash: hash[:], ManifestVersion: m.Version})
}

// channelKey returns the channel key of service (derived once, then cached).
func (in *instance) channelKey(service string) (*secure.ServiceKey, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if k := in.channels[service]; k != nil {
		return k, nil
	}
	k, err := channelKey(in.st.Root, service)
	if err != nil {
		return nil, err
	}
	in.channels[service] = k
	return k, nil
}

// trustedService returns the manifest's service if enclaves may join as it.
func trustedService(m *manifest.Manifest, name string) (*manifest.Service, error) {
	s, err := m.Service(name)
	if err != nil {
		return nil, refuse(provision.CodeNotFound, "service %q is not in the manifest", name)
	}
	if !s.Trusted() {
		return nil, refuse(provision.CodeRefused, "service %s is a regular service (no enclave identities in the manifest): it has no keys", name)
	}
	return s, nil
}

func (in *instance) serviceKey(_ context.Context, call *trusted.Call) ([]byte, error) {
	req, err := decodeServiceKey(call.Body())
	if err != nil {
		return nil, err
	}
	m, hash, err := in.current()
	if err != nil {
		return nil, err
	}
	if _, err := trustedService(m, req.Service); err != nil {
		return nil, err
	}
	in.mu.Lock()
	body, ok := in.signed[req.Service]
	in.mu.Unlock()
	if ok {
		return body, nil
	}
	k, err := in.channelKey(req.Service)
	if err != nil {
		return nil, err
	}
	pub := k.PublicKeyBytes()
	sig := ed25519.Sign(in.sign, provision.ServiceKeyMessage(hash[:], req.Service, pub))
	if body, err = provision.Encode(provision.ServiceKeyResponse{Service: req.Service, PublicKey: pub, ManifestHash: hash[:], Signature: sig}); err != nil {
		return nil, err
	}
	in.mu.Lock()
	if in.hash == hash {
		in.signed[req.Service] = body
	}
	in.mu.Unlock()
	return body, nil
}

// challenge answers a fresh challenge; it keeps no state (challenges).
func (in *instance) challenge(_ context.Context, _ *trusted.Call) ([]byte, error) {
	n, err := in.ch.mint(in.opts.Now())
	if err != nil {
		return nil, err
	}
	return provision.Encode(provision.Challenge{Nonce: n})
}

func (in *instance) manifestSet(ctx context.Context, call *trusted.Call) ([]byte, error) {
	next, err := decodeManifestSet(call.Body())
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.m != nil {
		same := ""
		if next.Hash() == in.hash {
			same = "the same manifest; "
		}
		return nil, refuse(provision.CodeConflict, "manifest already set (version %d, hash %x): %sonly updates signed by the owner are accepted, on %s",
			in.m.Version, in.hash, same, provision.AddressManifestUpdate)
	}
	if next.Freshness != nil && in.g() == nil {
		// The first manifest declares freshness: this coordinator
		// becomes slot 0 of a new group.
		g, err := newGroup(ctx, in, in.cfg.slot)
		if err != nil {
			return nil, refuse(provision.CodeInternal, "freshness needs the coordinator's attestation: %v", err)
		}
		g.mu.Lock()
		g.me.Number = 1
		g.mem.Admit(1)
		g.phase = phaseLive
		g.mu.Unlock()
		in.grp.Store(g)
		in.ch.setKey(challengeKey(in.st.Root))
		in.rt.Go(g.refresh)
	}
	if err := in.install(ctx, next, nil); err != nil {
		return nil, err
	}
	return provision.Encode(in.statusLocked())
}

func (in *instance) manifestUpdate(ctx context.Context, call *trusted.Call) ([]byte, error) {
	next, sig, err := decodeManifestUpdate(call.Body())
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.m == nil {
		return nil, refuse(provision.CodeNoManifest, "no manifest set yet: set the first one on %s", provision.AddressManifestSet)
	}
	if next.Hash() == in.hash && in.g() != nil && slices.Equal(sig, in.st.ManifestSignature) {
		// A retry of an update stored here that no quorum acknowledged
		// yet: send it again.
		if err := in.replicateLocked(ctx); err != nil {
			return nil, err
		}
		return provision.Encode(in.statusLocked())
	}
	if in.m.Replicas() != next.Replicas() || (in.m.Freshness == nil) != (next.Freshness == nil) {
		return nil, refuse(provision.CodeConflict, "update refused: it changes the freshness section's replicas (%d to %d) or turns freshness on or off, which a running group cannot do", in.m.Replicas(), next.Replicas())
	}
	if err := in.m.VerifyUpdate(next, sig); err != nil {
		switch {
		case errors.Is(err, manifest.ErrNotNewer):
			return nil, refuse(provision.CodeConflict, "update refused: version %d is not higher than the current %d", next.Version, in.m.Version)
		case errors.Is(err, manifest.ErrNoOwner):
			return nil, refuse(provision.CodeUnauthorized, "update refused: the current manifest names no owner key, so it cannot be updated")
		default:
			return nil, refuse(provision.CodeUnauthorized, "update refused: the signature is not the current owner's over this update")
		}
	}
	if err := in.install(ctx, next, sig); err != nil {
		return nil, err
	}
	// Joined enclaves hold grants of the old manifest: the notice makes
	// them join again, so that clients that follow the update reach them.
	in.publishNotice(ctx)
	return provision.Encode(in.statusLocked())
}

// install makes next the current manifest, made current by the owner
// signature sig (nil for the first manifest), moves the previous one into
// the history and stores the state; the caller holds in.mu. On failure
// nothing changes.
func (in *instance) install(ctx context.Context, next *manifest.Manifest, sig []byte) error {
	prev, prevSig, prevHistory := in.st.Manifest, in.st.ManifestSignature, in.st.History
	cur := provision.ManifestUpdate{Manifest: next.Canonical(), Signature: sig}
	if prev != nil {
		in.st.History = trimHistory(append(slices.Clip(prevHistory), provision.ManifestUpdate{Manifest: prev, Signature: prevSig}), cur)
	}
	in.st.Manifest, in.st.ManifestSignature = cur.Manifest, cur.Signature
	err := in.commitLocked(ctx, func() {
		in.st.Manifest, in.st.ManifestSignature, in.st.History = prev, prevSig, prevHistory
	})
	if err != nil && !stored(err) {
		return err
	}
	in.m, in.hash = next, next.Hash()
	in.hashes = historyHashes(in.st.chain())
	clear(in.signed)
	if g := in.g(); g != nil {
		g.setReplicas(next.Replicas())
	}
	in.rt.Logger().Info("coordinator: manifest set", "hash", hex.EncodeToString(in.hash[:]), "version", next.Version, "history", len(in.st.History))
	return err
}

// stored reports whether err left a change stored here, only not yet
// acknowledged by a quorum of replicas.
func stored(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Code == provision.CodeUnavailable || e.Code == provision.CodeConflict)
}

// historyHashes returns the manifest hash of every entry of chain.
func historyHashes(chain []provision.ManifestUpdate) [][32]byte {
	out := make([][32]byte, 0, len(chain))
	for _, e := range chain {
		out = append(out, manifest.HashCanonical(e.Manifest))
	}
	return out
}

// manifestHistory answers the chain of manifests from the pinned one to
// the current one (see provision's package documentation).
func (in *instance) manifestHistory(_ context.Context, call *trusted.Call) ([]byte, error) {
	pinned, err := decodeManifestHistory(call.Body())
	if err != nil {
		return nil, err
	}
	if _, _, err := in.current(); err != nil {
		return nil, err
	}
	in.mu.Lock() // (a manifest, once set, stays set)
	i := slices.Index(in.hashes, pinned)
	if i < 0 {
		defer in.mu.Unlock()
		return nil, refuse(provision.CodeNotFound, "manifest %x is not in the history this coordinator keeps (the current manifest is %x, version %d, after %d earlier ones; at most %d manifests and %d bytes are kept, the oldest go first): pin the current manifest again",
			pinned, in.hash, in.m.Version, len(in.st.History), provision.MaxHistoryEntries, provision.MaxHistoryBytes)
	}
	// A new slice of byte slices that are never written to: encoded
	// without holding the lock.
	entries := in.st.chain()[i:]
	in.mu.Unlock()
	return provision.Encode(provision.ManifestHistory{Entries: entries})
}

func (in *instance) rotate(ctx context.Context, call *trusted.Call) ([]byte, error) {
	req, grace, err := decodeRotate(call.Body())
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.m == nil {
		return nil, refuse(provision.CodeNoManifest, "no manifest set yet")
	}
	if in.m.Owner == nil {
		return nil, refuse(provision.CodeUnauthorized, "rotation refused: the manifest names no owner key")
	}
	if !in.m.Owner.Verify(provision.RotateMessage(in.hash[:], req.NextEpoch, req.Grace), req.Signature) {
		return nil, refuse(provision.CodeUnauthorized, "rotation refused: the signature is not the owner's over epoch %d, grace %q and manifest %x", req.NextEpoch, req.Grace, in.hash)
	}
	if req.NextEpoch != in.st.Epoch+1 {
		return nil, refuse(provision.CodeConflict, "rotation refused: the current epoch is %d, so the next is %d, not %d", in.st.Epoch, in.st.Epoch+1, req.NextEpoch)
	}
	prevEpoch, prevGrace := in.st.Epoch, in.st.GraceUntil
	in.st.Epoch = req.NextEpoch
	in.st.GraceUntil = in.opts.Now().Add(grace)
	if err := in.commitLocked(ctx, func() { in.st.Epoch, in.st.GraceUntil = prevEpoch, prevGrace }); err != nil {
		return nil, err
	}
	in.rt.Logger().Info("coordinator: new key epoch", "epoch", in.st.Epoch, "previous_valid_until", in.st.GraceUntil)
	in.publishNotice(ctx)
	return provision.Encode(in.statusLocked())
}

// publishNotice publishes the current epoch and manifest hash on
// AddressEpoch, signed with the coordinator's key; the caller holds in.mu.
// Joined enclaves that hear it join again if it names a newer epoch or
// another manifest. A notice that does not go out is logged: an enclave
// that missed it re-joins when a message of the new epoch reaches it, or
// at its next start.
func (in *instance) publishNotice(ctx context.Context) {
	notice, err := provision.Encode(provision.EpochNotice{Epoch: in.st.Epoch, ManifestHash: in.hash[:],
		Signature: ed25519.Sign(in.sign, provision.EpochNoticeMessage(in.hash[:], in.st.Epoch))})
	if err == nil {
		err = in.rt.Publish(ctx, provision.AddressEpoch, nil, notice)
	}
	if err != nil {
		in.rt.Logger().Warn("coordinator: publishing the epoch notice failed", "epoch", in.st.Epoch, "err", err)
	}
}

func (in *instance) status(_ context.Context, _ *trusted.Call) ([]byte, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return provision.Encode(in.statusLocked())
}

// statusLocked returns the public state; the caller holds in.mu.
func (in *instance) statusLocked() provision.Status {
	id := in.rt.Identity()
	s := provision.Status{
		ManifestSet: in.m != nil,
		Epoch:       in.st.Epoch,
		Joins:       in.st.Joins,
		Refusals:    in.st.Refusals,
		// Until the coordinator produced evidence it does not know its type.
		EvidenceType: in.evType,
		Measurement:  hex.EncodeToString(id.MREnclave[:]),
	}
	if in.m != nil {
		s.ManifestHash = hex.EncodeToString(in.hash[:])
		s.ManifestVersion = in.m.Version
	}
	if in.st.Epoch > 1 && in.opts.Now().Before(in.st.GraceUntil) {
		s.GraceUntil = in.st.GraceUntil
	}
	if g := in.g(); g != nil {
		s.Replica = g.status()
	}
	return s
}
