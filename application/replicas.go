package application

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
)

// SlotStatus is one coordinator replica slot's answer to
// provision.ReplicaStatusOp, or why it gave none.
type SlotStatus struct {
	Slot int
	// Status is the replica's answer (nil: none, see Err). It is not
	// attested: it is what the host relayed, and the owner decides.
	Status *provision.ReplicaStatus
	Err    error
}

// ReplicaStatuses asks slots 0 to n-1 for their ReplicaStatus, all at once,
// each waiting at most timeout. With n ≤ 0 it asks every possible slot
// (manifest.MaxReplicas) and keeps those below the largest Replicas any
// answer reports (slot 0 at least).
func ReplicaStatuses(ctx context.Context, b *bus.Bus, n int, timeout time.Duration) []SlotStatus {
	ask := n
	if ask <= 0 {
		ask = manifest.MaxReplicas
	}
	out := make([]SlotStatus, ask)
	var wg sync.WaitGroup
	for slot := range ask {
		wg.Go(func() {
			out[slot] = SlotStatus{Slot: slot}
			out[slot].Status, out[slot].Err = replicaStatus(ctx, b, slot, timeout)
		})
	}
	wg.Wait()
	if n > 0 {
		return out
	}
	keep := 1
	for _, s := range out {
		if s.Status != nil {
			keep = max(keep, min(s.Status.Replicas, len(out)), s.Slot+1)
		}
	}
	return out[:keep]
}

func replicaStatus(ctx context.Context, b *bus.Bus, slot int, timeout time.Duration) (*provision.ReplicaStatus, error) {
	m, err := b.Request(ctx, provision.ReplicaAddress(slot, provision.ReplicaStatusOp), nil, bus.Timeout(timeout))
	if err != nil {
		return nil, err
	}
	var st provision.ReplicaStatus
	if err := provision.Decode(m.Body(), &st); err != nil {
		return nil, fmt.Errorf("replica %d status: %w", slot, err)
	}
	if st.Slot != slot {
		return nil, fmt.Errorf("replica %d status: the answer is slot %d's", slot, st.Slot)
	}
	return &st, nil
}

// ErrNoRecovery is wrapped by PlanRecovery when no recovery statement can
// or need be made: no replica needs one, or the replicas that do disagree.
var ErrNoRecovery = errors.New("application: no recovery statement")

// PlanRecovery builds the recovery statement (unsigned) that ends a lost
// quorum, from the replicas' statuses: the nonce of every replica that
// needs recovery and, per subject, the highest version any replica read
// from its own sealed state — for the coordinator's own state, the highest
// among the replicas that need recovery, which must hold it (a replica
// holding an older one refuses the statement, and is admitted by the
// others once they live, after a restart). The replicas that need recovery
// must agree on the manifest; manifestHash, when given, must be that
// manifest. Two replicas that read the same counter with different digests
// for a subject are a fork, and refused: the owner must remove one's
// state. Errors wrap ErrNoRecovery.
func PlanRecovery(statuses []SlotStatus, manifestHash []byte) (*provision.RecoveryStatement, error) {
	var need []*provision.ReplicaStatus
	for _, s := range statuses {
		if s.Status != nil && s.Status.State == provision.ReplicaNeedsRecovery {
			need = append(need, s.Status)
		}
	}
	if len(need) == 0 {
		return nil, fmt.Errorf("%w: no replica needs recovery", ErrNoRecovery)
	}
	hashes := map[string][]int{}
	for _, st := range need {
		hashes[st.ManifestHash] = append(hashes[st.ManifestHash], st.Slot)
	}
	if len(hashes) > 1 {
		var parts []string
		for _, h := range sortedKeys(hashes) {
			parts = append(parts, fmt.Sprintf("%s (slots %v)", orNone(h), hashes[h]))
		}
		return nil, fmt.Errorf("%w: the replicas that need recovery hold different manifests: %s", ErrNoRecovery, strings.Join(parts, ", "))
	}
	held := need[0].ManifestHash
	if held == "" {
		return nil, fmt.Errorf("%w: the replicas that need recovery hold no manifest", ErrNoRecovery)
	}
	hash, err := hex.DecodeString(held)
	if err != nil || len(hash) != provision.HashSize {
		return nil, fmt.Errorf("%w: the replicas report manifest %q, not a hash", ErrNoRecovery, held)
	}
	if manifestHash != nil && !bytes.Equal(manifestHash, hash) {
		return nil, fmt.Errorf("%w: the replicas hold manifest %s, not the one given (%x)", ErrNoRecovery, held, manifestHash)
	}
	st := &provision.RecoveryStatement{ManifestHash: hash}
	for _, r := range need {
		if len(r.RecoveryNonce) != provision.NonceSize {
			return nil, fmt.Errorf("%w: replica %d gives a recovery nonce of %d bytes, want %d", ErrNoRecovery, r.Slot, len(r.RecoveryNonce), provision.NonceSize)
		}
		st.Nonces = append(st.Nonces, r.RecoveryNonce)
	}
	type seen struct {
		reg  provision.Register
		slot int
	}
	latest := map[string]seen{}
	for _, s := range statuses {
		if s.Status == nil {
			continue
		}
		for _, r := range s.Status.Local {
			if r.Subject == provision.CoordinatorSubject && s.Status.State != provision.ReplicaNeedsRecovery {
				continue
			}
			cur, ok := latest[r.Subject]
			switch {
			case !ok || r.Counter > cur.reg.Counter:
				latest[r.Subject] = seen{reg: r, slot: s.Slot}
			case r.Counter == cur.reg.Counter && !bytes.Equal(r.Digest, cur.reg.Digest):
				return nil, fmt.Errorf("%w: %s: replicas %d and %d hold counter %d with different digests (a fork: remove one's state first)",
					ErrNoRecovery, r.Subject, cur.slot, s.Slot, r.Counter)
			}
		}
	}
	for _, subject := range sortedKeys(latest) {
		st.Registers = append(st.Registers, latest[subject].reg)
	}
	if err := provision.CheckRegisters(st.Registers); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoRecovery, err)
	}
	return st, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// SignAsOwner signs msg as the manifest owner does: Ed25519 over msg,
// ECDSA P-256 over SHA-256(msg) (ASN.1), which is what
// manifest.Owner.Verify checks. owner comes from manifest.ParseSigningKey.
func SignAsOwner(owner crypto.Signer, msg []byte) ([]byte, error) {
	switch k := owner.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(k, msg), nil
	case *ecdsa.PrivateKey:
		d := sha256.Sum256(msg)
		return ecdsa.SignASN1(rand.Reader, k, d[:])
	}
	switch owner.Public().(type) {
	case ed25519.PublicKey:
		return owner.Sign(rand.Reader, msg, crypto.Hash(0))
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		return owner.Sign(rand.Reader, d[:], crypto.SHA256)
	}
	return nil, fmt.Errorf("application: owner key: %T, want Ed25519 or ECDSA P-256", owner.Public())
}

// SignRecovery signs st with the owner's key (over
// provision.RecoveryMessage).
func SignRecovery(owner crypto.Signer, st *provision.RecoveryStatement) error {
	sig, err := SignAsOwner(owner, provision.RecoveryMessage(st.ManifestHash, st.Nonces, st.Registers))
	if err != nil {
		return fmt.Errorf("application: sign the recovery statement: %w", err)
	}
	st.Signature = sig
	return nil
}

// SendRecovery hands the signed statement to each of slots (at
// ReplicaAddress(slot, ReplicaRecoverOp)), all at once, and returns each
// answer (the replica's status after it, or its refusal).
func SendRecovery(ctx context.Context, b *bus.Bus, st *provision.RecoveryStatement, slots []int, timeout time.Duration) ([]SlotStatus, error) {
	body, err := provision.Encode(st)
	if err != nil {
		return nil, err
	}
	out := make([]SlotStatus, len(slots))
	var wg sync.WaitGroup
	for i, slot := range slots {
		wg.Go(func() {
			out[i] = SlotStatus{Slot: slot}
			m, err := b.Request(ctx, provision.ReplicaAddress(slot, provision.ReplicaRecoverOp), body, bus.Timeout(timeout))
			if err != nil {
				out[i].Err = err
				return
			}
			var rs provision.ReplicaStatus
			if err := provision.Decode(m.Body(), &rs); err != nil {
				out[i].Err = fmt.Errorf("replica %d: %w", slot, err)
				return
			}
			out[i].Status = &rs
		})
	}
	wg.Wait()
	return out, nil
}

// NeedsRecovery returns the slots among statuses that wait for a recovery
// statement, in order.
func NeedsRecovery(statuses []SlotStatus) []int {
	var out []int
	for _, s := range statuses {
		if s.Status != nil && s.Status.State == provision.ReplicaNeedsRecovery {
			out = append(out, s.Slot)
		}
	}
	sort.Ints(out)
	return out
}

// Recover ends a lost quorum with the owner's key: it asks the replicas
// (n of them; ≤ 0: as many as answer) for their status, plans the
// statement (PlanRecovery), lets confirm see it (nil: no question; an
// error from confirm stops before anything is signed), signs it and hands
// it to every replica that needs recovery. It returns the replicas'
// answers.
func Recover(ctx context.Context, b *bus.Bus, owner crypto.Signer, n int, manifestHash []byte, confirm func(*provision.RecoveryStatement, []SlotStatus) error) ([]SlotStatus, error) {
	statuses := ReplicaStatuses(ctx, b, n, replicaTimeout)
	st, err := PlanRecovery(statuses, manifestHash)
	if err != nil {
		return statuses, err
	}
	if confirm != nil {
		if err := confirm(st, statuses); err != nil {
			return statuses, err
		}
	}
	if err := SignRecovery(owner, st); err != nil {
		return statuses, err
	}
	return SendRecovery(ctx, b, st, NeedsRecovery(statuses), 30*time.Second)
}

// replicaTimeout bounds one replica's answer to a status request.
const replicaTimeout = 5 * time.Second

// RecoveryErrors returns the refusals among answers, joined; nil when every
// replica that answered is live again.
func RecoveryErrors(answers []SlotStatus) error {
	var errs []error
	for _, a := range answers {
		switch {
		case a.Err != nil:
			errs = append(errs, fmt.Errorf("replica %d: %w", a.Slot, a.Err))
		case a.Status != nil && a.Status.State == provision.ReplicaNeedsRecovery:
			errs = append(errs, fmt.Errorf("replica %d still needs recovery: %s", a.Slot, a.Status.Reason))
		}
	}
	return errors.Join(errs...)
}
