package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cloister-dev/cloister/freshness"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/trusted"
)

// This file joins the instance (the coordinator's state and handlers) to
// its group (replica.go): versioned commits, catching up, the freshness
// handlers services use, and the owner's recovery statement.

// root returns the root secret (nil before this replica has one).
func (in *instance) root() []byte {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.rooted {
		return nil
	}
	return in.st.Root
}

// declaresFreshness reports whether the manifest held declares freshness.
func (in *instance) declaresFreshness() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.m != nil && in.m.Freshness != nil
}

// sealedShared seals the current shared state for a reader (nil when this
// replica has no state yet).
func (in *instance) sealedShared() ([]byte, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.rooted {
		return nil, nil
	}
	_, plain, err := in.st.shared.digest()
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	return sealShared(in.st.Root, in.st.Version, plain)
}

// adopt makes sh, of version, this replica's shared state if it is newer
// than the one it holds, and stores it.
func (in *instance) adopt(ctx context.Context, sh *shared, version uint64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if version <= in.st.Version && in.rooted {
		return
	}
	if err := in.setSharedLocked(sh, version); err != nil {
		in.rt.Logger().Error("coordinator: the group's state does not load", "version", version, "err", err)
		return
	}
	if err := in.save(ctx); err != nil {
		in.rt.Logger().Warn("coordinator: storing the group's state failed", "version", version, "err", err)
	}
}

// setSharedLocked installs sh and what derives from it; the caller holds
// in.mu.
func (in *instance) setSharedLocked(sh *shared, version uint64) error {
	var m *manifest.Manifest
	if sh.Manifest != nil {
		var err error
		if m, err = manifest.ParseCanonical(sh.Manifest); err != nil {
			return err
		}
	}
	in.st.shared = *sh
	in.st.Version = version
	in.rooted = true
	in.sign = ed25519.NewKeyFromSeed(sh.SigningSeed)
	in.m = m
	in.hash, in.hashes = [32]byte{}, nil
	if m != nil {
		in.hash = m.Hash()
		in.hashes = historyHashes(in.st.chain())
		if in.g() != nil {
			in.g().setReplicas(m.Replicas())
		}
	}
	clear(in.signed)
	clear(in.channels)
	in.ch.setKey(challengeKey(sh.Root))
	return nil
}

// challengeKey derives the challenge MAC key the replicas share, so that a
// challenge one replica issued is valid at any other.
func challengeKey(root []byte) []byte {
	k, err := derive(root, 32, labelChallenges)
	if err != nil {
		panic("coordinator: challenge key: " + err.Error()) // HKDF of 32 bytes cannot fail
	}
	return k
}

// serviceFreshnessKey derives the key that authenticates a service's
// checkpoints.
func serviceFreshnessKey(root []byte, service string) ([]byte, error) {
	k, err := derive(root, 32, labelFreshKey, service)
	if err != nil {
		return nil, fmt.Errorf("coordinator: freshness key of %s: %w", service, err)
	}
	return k, nil
}

// commitLocked stores a change of the shared state as its next version and,
// in a group, writes it to a quorum of replicas; the caller holds in.mu
// and has changed in.st. undo reverts the change; it runs if the change
// could not be stored here. A change stored here that no quorum
// acknowledged stays (a retry resends it) and is refused with
// provision.CodeUnavailable.
func (in *instance) commitLocked(ctx context.Context, undo func()) error {
	in.st.Version++
	if err := in.save(ctx); err != nil {
		in.st.Version--
		undo()
		return err
	}
	return in.replicateLocked(ctx)
}

// replicateLocked writes the current version to a quorum; the caller holds
// in.mu.
func (in *instance) replicateLocked(ctx context.Context) error {
	g := in.g()
	if g == nil {
		return nil
	}
	d, plain, err := in.st.shared.digest()
	if err != nil {
		return err
	}
	blob, err := sealShared(in.st.Root, in.st.Version, plain)
	clear(plain)
	if err != nil {
		return err
	}
	r := provision.Register{Subject: provision.CoordinatorSubject, Counter: in.st.Version, Digest: d[:]}
	// The peers' answers do not need in.mu; the handlers of this replica
	// that do wait for at most peerTimeout.
	return g.quorumWrite(ctx, r, blob, false)
}

// registerState makes the first version of a new group's state: the state
// drawn now (slot 0's genesis) or read from storage.
func (in *instance) registerState(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.rooted {
		st, err := newState()
		if err != nil {
			return err
		}
		in.st = st
		if err := in.setSharedLocked(&st.shared, 0); err != nil {
			return err
		}
	}
	return in.commitLocked(ctx, func() {})
}

// catchUp brings a replica being admitted to the group's latest state:
// the root from an admitted peer if it has none, then the shared state of
// the latest coordinator version. A local state older than that is
// refused (counted and logged): it was rolled back, or the replica missed
// changes while it was down.
func (in *instance) catchUp(ctx context.Context, latest map[string]freshness.Version, results []peerResult, local *provision.Register) error {
	g := in.g()
	if in.root() == nil {
		if err := in.fetchSecrets(ctx, results); err != nil {
			return err
		}
	}
	want := register(provision.CoordinatorSubject, latest[provision.CoordinatorSubject])
	in.mu.Lock()
	held := in.st.Version
	d, _, err := in.st.shared.digest()
	in.mu.Unlock()
	if err != nil {
		return err
	}
	if held == want.Counter && slices.Equal(d[:], want.Digest) {
		return nil
	}
	if local != nil && local.Counter < want.Counter {
		g.mu.Lock()
		g.rollbacks++
		g.mu.Unlock()
		in.rt.Logger().Warn("coordinator: refused the stale state in this replica's storage (rolled back, or behind after a stop): taking the group's",
			"stored_version", local.Counter, "group_version", want.Counter)
	} else if local != nil && local.Counter > want.Counter {
		in.rt.Logger().Warn("coordinator: this replica's stored state holds a change no quorum acknowledged: dropping it for the group's",
			"stored_version", local.Counter, "group_version", want.Counter)
	}
	return in.adoptFrom(ctx, want, results)
}

// adoptFrom adopts the shared state of version want from the first answer
// in results that holds it.
func (in *instance) adoptFrom(ctx context.Context, want provision.Register, results []peerResult) error {
	root := in.root()
	for _, r := range results {
		a := r.answer
		if a == nil || a.State == nil {
			continue
		}
		for _, h := range a.Holds {
			if h.Subject != provision.CoordinatorSubject || h.Counter != want.Counter {
				continue
			}
			sh, err := openShared(root, want, a.State)
			if err != nil {
				continue
			}
			in.mu.Lock()
			err = in.setSharedLocked(sh, want.Counter)
			if err == nil {
				err = in.save(ctx)
			}
			in.mu.Unlock()
			return err
		}
	}
	return fmt.Errorf("no replica of the quorum sent the state of version %d", want.Counter)
}

// refreshInterval is how often a live replica reads a quorum to learn
// what it missed: a change another replica stored without a quorum's
// acknowledgement (answered 503; it takes effect once seen), versions
// registered while it was being admitted.
const refreshInterval = 2 * time.Second

// refresh runs until ctx ends: every refreshInterval, a live replica of a
// group of more than one reads a quorum, learns the registers, and takes
// the shared state of a higher coordinator version than its own.
func (g *group) refresh(ctx context.Context) {
	t := time.NewTicker(refreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !g.live() || g.groupSize() < 2 {
			continue
		}
		if err := g.refreshOnce(ctx); err != nil && ctx.Err() == nil {
			g.in.rt.Logger().Debug("coordinator: refresh from the group failed", "err", err)
		}
	}
}

func (g *group) refreshOnce(ctx context.Context) error {
	latest, _, err := g.quorumRead(ctx, false, false)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.mem.Learn(latest)
	g.mu.Unlock()
	want := register(provision.CoordinatorSubject, latest[provision.CoordinatorSubject])
	g.in.mu.Lock()
	held := g.in.st.Version
	g.in.mu.Unlock()
	if want.Counter <= held {
		return nil
	}
	_, results, err := g.quorumRead(ctx, false, true)
	if err != nil {
		return err
	}
	if err := g.in.adoptFrom(ctx, want, results); err != nil {
		return err
	}
	g.in.rt.Logger().Info("coordinator: took a newer state from the group", "version", want.Counter, "held", held)
	// The replica that made the change may not have told the enclaves.
	g.in.mu.Lock()
	g.in.publishNotice(ctx)
	g.in.mu.Unlock()
	return nil
}

// fetchSecrets asks an admitted peer for the root and the state.
func (in *instance) fetchSecrets(ctx context.Context, results []peerResult) error {
	g := in.g()
	for _, r := range results {
		if r.answer == nil {
			continue
		}
		res, nonce, err := g.askSlot(ctx, r.slot, opSecrets)
		if err != nil || res.answer == nil {
			continue
		}
		plain, err := g.box.OpenSealed([]byte(frame(labelSecrets, string(nonce))), res.answer.State)
		if err != nil {
			continue
		}
		var got struct {
			Version uint64 `json:"version"`
			shared
		}
		err = json.Unmarshal(plain, &got)
		clear(plain)
		if err != nil || len(got.Root) != rootSize || len(got.SigningSeed) != ed25519.SeedSize || got.Epoch == 0 {
			continue
		}
		in.mu.Lock()
		err = in.setSharedLocked(&got.shared, got.Version)
		if err == nil {
			err = in.save(ctx)
		}
		in.mu.Unlock()
		if err != nil {
			return err
		}
		in.rt.Logger().Info("coordinator: root secret received from an admitted replica", "from_slot", r.slot)
		return nil
	}
	return errors.New("no admitted replica handed over the root secret")
}

// askSlot sends one request of op to one slot.
func (g *group) askSlot(ctx context.Context, slot int, op string) (peerResult, []byte, error) {
	res, nonce, err := g.askSlots(ctx, []int{slot}, peerRequest{Op: op}, nil)
	if err != nil || len(res) == 0 {
		return peerResult{}, nonce, errors.Join(err, errors.New("no answer"))
	}
	return res[0], nonce, nil
}

// ---- services' freshness ----------------------------------------------

// freshnessGrant is what a service's grant carries when the manifest
// declares freshness.
func (in *instance) freshnessGrant(m *manifest.Manifest, root []byte, service string) (*provision.FreshnessGrant, error) {
	if m.Freshness == nil {
		return nil, nil
	}
	k, err := serviceFreshnessKey(root, service)
	if err != nil {
		return nil, err
	}
	group := sha256.Sum256(in.sign.Public().(ed25519.PublicKey))
	return &provision.FreshnessGrant{Key: k, Checkpoint: m.Freshness.Checkpoint.String(), Group: group[:]}, nil
}

// serviceRequest checks the common part of a Checkpoint or FreshRead: a
// trusted service of a manifest with freshness, and its MAC.
func (in *instance) serviceRequest(service string, message, mac []byte) error {
	m, _, err := in.current()
	if err != nil {
		return err
	}
	if m.Freshness == nil {
		return refuse(provision.CodeNotFound, "the manifest declares no freshness")
	}
	if _, err := trustedService(m, service); err != nil {
		return err
	}
	k, err := serviceFreshnessKey(in.root(), service)
	if err != nil {
		return err
	}
	if !provision.CheckFreshnessMAC(k, message, mac) {
		return refuse(provision.CodeUnauthorized, "the request is not authenticated by service %s's freshness key", service)
	}
	return nil
}

// registered signs the group's answer.
func (in *instance) registered(subject string, v freshness.Version, nonce []byte) ([]byte, error) {
	r := register(subject, v)
	in.mu.Lock()
	sig := ed25519.Sign(in.sign, provision.RegisteredMessage(subject, r.Counter, r.Digest, nonce))
	in.mu.Unlock()
	return provision.Encode(provision.Registered{Subject: subject, Counter: r.Counter, Digest: r.Digest, Nonce: nonce, Signature: sig})
}

// checkpoint registers a service instance's state version with a quorum.
func (in *instance) checkpoint(ctx context.Context, call *trusted.Call) ([]byte, error) {
	var req provision.Checkpoint
	if err := provision.Decode(call.Body(), &req); err != nil {
		return nil, badRequest(err)
	}
	if err := provision.CheckNonce(req.Nonce); err != nil {
		return nil, badRequest(err)
	}
	if len(req.Digest) != provision.DigestSize || req.Counter == 0 {
		return nil, refuse(provision.CodeBadRequest, "checkpoint of counter %d with a digest of %d bytes: want a counter ≥ 1 and %d bytes", req.Counter, len(req.Digest), provision.DigestSize)
	}
	subject := provision.ServiceSubject(req.Service, req.Instance)
	if err := in.serviceRequest(req.Service, provision.CheckpointMessage(subject, req.Counter, req.Digest, req.Nonce), req.MAC); err != nil {
		return nil, err
	}
	g := in.g()
	if g == nil {
		return nil, refuse(provision.CodeUnavailable, "this coordinator runs no replica group")
	}
	r := provision.Register{Subject: subject, Counter: req.Counter, Digest: req.Digest}
	if err := g.quorumWrite(ctx, r, nil, false); err != nil {
		var e *Error
		if errors.As(err, &e) && e.Code == provision.CodeConflict {
			call.Logger().Warn("coordinator: checkpoint refused: a rolled-back or forked service state", "subject", subject, "counter", req.Counter, "reason", e.Message)
		}
		return nil, err
	}
	in.saveSoon()
	return in.registered(subject, version(r), req.Nonce)
}

// freshRead answers the version a quorum remembers for a service instance.
func (in *instance) freshRead(ctx context.Context, call *trusted.Call) ([]byte, error) {
	var req provision.FreshRead
	if err := provision.Decode(call.Body(), &req); err != nil {
		return nil, badRequest(err)
	}
	if err := provision.CheckNonce(req.Nonce); err != nil {
		return nil, badRequest(err)
	}
	subject := provision.ServiceSubject(req.Service, req.Instance)
	if err := in.serviceRequest(req.Service, provision.FreshReadMessage(subject, req.Nonce), req.MAC); err != nil {
		return nil, err
	}
	g := in.g()
	if g == nil {
		return nil, refuse(provision.CodeUnavailable, "this coordinator runs no replica group")
	}
	latest, _, err := g.quorumRead(ctx, false, false)
	if err != nil {
		return nil, refuse(provision.CodeUnavailable, "%v: retry", err)
	}
	g.mu.Lock()
	g.mem.Learn(latest)
	g.mu.Unlock()
	return in.registered(subject, latest[subject], req.Nonce)
}

// ---- replica status and recovery ---------------------------------------

// replicaStatus answers ReplicaAddress(slot, status).
func (in *instance) replicaStatus(_ context.Context, call *trusted.Call) ([]byte, error) {
	s, err := in.replicaView(call.Address())
	if err != nil {
		return nil, err
	}
	return provision.Encode(s)
}

// replicaView is this replica's status, with the versions its own storage
// holds; address must name its slot.
func (in *instance) replicaView(address string) (*provision.ReplicaStatus, error) {
	g := in.g()
	slot, _, _ := provision.ParseReplicaAddress(address)
	if g == nil {
		if slot != in.cfg.slot {
			return nil, refuse(provision.CodeNotFound, "this coordinator is not replica %d", slot)
		}
		return &provision.ReplicaStatus{Slot: in.cfg.slot, Replicas: 1, State: provision.ReplicaLive}, nil
	}
	if slot != g.slot {
		return nil, refuse(provision.CodeNotFound, "this coordinator replica is not slot %d", slot)
	}
	s := g.status()
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.m != nil {
		s.ManifestHash = hex.EncodeToString(in.hash[:])
	}
	if in.rooted {
		d, _, err := in.st.shared.digest()
		if err != nil {
			return nil, err
		}
		local := map[string]provision.Register{}
		for _, r := range in.st.Registers {
			local[r.Subject] = r
		}
		local[provision.CoordinatorSubject] = provision.Register{Subject: provision.CoordinatorSubject, Counter: in.st.Version, Digest: d[:]}
		for _, k := range slices.Sorted(maps.Keys(local)) {
			s.Local = append(s.Local, local[k])
		}
	}
	return s, nil
}

// recover takes the owner's recovery statement.
func (in *instance) recover(ctx context.Context, call *trusted.Call) ([]byte, error) {
	g := in.g()
	slot, _, _ := provision.ParseReplicaAddress(call.Address())
	if g == nil || slot != g.slot {
		return nil, refuse(provision.CodeNotFound, "this coordinator is not replica %d of a group", slot)
	}
	var st provision.RecoveryStatement
	if err := provision.Decode(call.Body(), &st); err != nil {
		return nil, badRequest(err)
	}
	if err := provision.CheckRegisters(st.Registers); err != nil {
		return nil, badRequest(err)
	}
	g.mu.Lock()
	phase, nonce := g.phase, slices.Clone(g.recoveryNonce)
	g.mu.Unlock()
	if phase != phaseNeedsRecovery {
		return nil, refuse(provision.CodeConflict, "replica %d is %s: it needs no recovery", g.slot, phase)
	}
	in.mu.Lock()
	m, hash := in.m, in.hash
	held := in.st.Version
	d, _, err := in.st.shared.digest()
	in.mu.Unlock()
	switch {
	case err != nil:
		return nil, err
	case m == nil || m.Owner == nil:
		return nil, refuse(provision.CodeUnauthorized, "the manifest this replica holds names no owner: nobody can sign its recovery")
	case !slices.Equal(st.ManifestHash, hash[:]):
		return nil, refuse(provision.CodeConflict, "the statement is for manifest %x, this replica holds %x", st.ManifestHash, hash)
	case !slices.ContainsFunc(st.Nonces, func(n []byte) bool { return slices.Equal(n, nonce) }):
		return nil, refuse(provision.CodeConflict, "the statement does not name this replica's recovery nonce (ask its status again)")
	case !m.Owner.Verify(provision.RecoveryMessage(st.ManifestHash, st.Nonces, st.Registers), st.Signature):
		return nil, refuse(provision.CodeUnauthorized, "the statement is not signed by the manifest owner")
	}
	regs := map[string]freshness.Version{}
	for _, r := range st.Registers {
		regs[r.Subject] = version(r)
	}
	if want, ok := regs[provision.CoordinatorSubject]; ok && (want.Counter != held || want.Digest != d) {
		return nil, refuse(provision.CodeConflict, "the statement continues from coordinator version %d, this replica holds version %d (%s): recover the replica that holds it first; this one then catches up",
			want.Counter, held, hexDigest(d[:]))
	}
	regs[provision.CoordinatorSubject] = freshness.Version{Counter: held, Digest: d}
	g.mu.Lock()
	// Above any number an admission attempt of this life registered.
	number := max(regs[freshness.MemberSubject(freshness.Slot(g.slot))].Counter, g.me.Number) + 1
	for k, v := range g.mem.Holds() { // what this life already learned stays
		if v.Counter > regs[k].Counter {
			regs[k] = v
		}
	}
	g.mem.Learn(regs)
	g.me.Number = number
	g.mem.Admit(number)
	g.phase, g.reason, g.recoveryNonce = phaseLive, "", nil
	g.mu.Unlock()
	in.rt.Logger().Warn("coordinator: recovered by the owner's statement: continuing from the versions it names",
		"slot", g.slot, "incarnation", number, "coordinator_version", held, "registers", len(st.Registers))
	// Tell the other replicas of this incarnation (those live learn it).
	me := register(freshness.MemberSubject(freshness.Slot(g.slot)), freshness.Version{Counter: number, Digest: sha256.Sum256(g.me.Key)})
	if err := g.quorumWrite(ctx, me, nil, false); err != nil {
		in.rt.Logger().Info("coordinator: the other replicas did not all learn the recovered incarnation yet", "err", err)
	}
	in.saveSoon()
	s, err := in.replicaView(call.Address())
	if err != nil {
		return nil, err
	}
	return provision.Encode(s)
}

// saveRegisters copies the group's memory into the state saved next (a
// hint for a recovery statement).
func (in *instance) snapshotRegisters() {
	g := in.g()
	if g == nil {
		return
	}
	g.mu.Lock()
	holds := g.mem.Holds()
	g.mu.Unlock()
	delete(holds, provision.CoordinatorSubject)
	in.st.Registers = registers(holds)
}
