package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/trusted"
)

// stateKey is the protected-storage key of the coordinator's state.
const stateKey = "cloister/coordinator/state/v1"

// rootSize is the size of the root secret every key derives from.
const rootSize = 32

// state is what the coordinator keeps in protected storage (sealed inside
// the enclave by trusted.Runtime.Put). Everything a grant holds derives
// from Root, so a restarted coordinator hands out the same keys.
type state struct {
	Format int `json:"format"`
	shared
	// Version counts the changes of the shared part: the coordinator
	// subject's counter in the replicas' quorum memory (0 in states written
	// before it existed).
	Version uint64 `json:"version,omitempty"`
	// Joins and Refusals count answered joins (this replica's own).
	Joins    uint64 `json:"joins"`
	Refusals uint64 `json:"refusals"`
	// Registers is this replica's last saved copy of the group's memory:
	// only a hint for the owner after a lost quorum (the host may have
	// rolled it back), never trusted on its own.
	Registers []provision.Register `json:"registers,omitempty"`
}

// shared is the part of the state every replica holds the same: what the
// quorum's coordinator subject versions.
type shared struct {
	// Root is the root secret: address keys, generated secrets and the
	// services' channel keys derive from it.
	Root []byte `json:"root"`
	// SigningSeed is the Ed25519 seed of the coordinator's signing key.
	SigningSeed []byte `json:"signing_seed"`
	// Manifest is the canonical JSON of the current manifest (nil: none yet).
	Manifest []byte `json:"manifest,omitempty"`
	// ManifestSignature is the owner signature that made Manifest current
	// (nil for the first manifest).
	ManifestSignature []byte `json:"manifest_signature,omitempty"`
	// History holds the manifests current before Manifest, oldest first,
	// each with the signature that made it current: the chain clients
	// follow (AddressManifestHistory), bounded by trimHistory.
	History []provision.ManifestUpdate `json:"history,omitempty"`
	// Epoch is the current key epoch (≥ 1).
	Epoch uint32 `json:"epoch"`
	// GraceUntil ends the validity of epoch Epoch-1.
	GraceUntil time.Time `json:"grace_until,omitzero"`
}

// digest is the SHA-256 of the shared part's encoding: the digest of the
// coordinator subject's version.
func (sh *shared) digest() ([32]byte, []byte, error) {
	b, err := json.Marshal(sh)
	if err != nil {
		return [32]byte{}, nil, fmt.Errorf("coordinator: encode shared state: %w", err)
	}
	return sha256.Sum256(b), b, nil
}

// newState draws a fresh root secret and signing key.
func newState() (*state, error) {
	st := &state{Format: 1, shared: shared{Root: make([]byte, rootSize), SigningSeed: make([]byte, ed25519.SeedSize), Epoch: 1}}
	if _, err := rand.Read(st.Root); err != nil {
		return nil, fmt.Errorf("coordinator: root secret: %w", err)
	}
	if _, err := rand.Read(st.SigningSeed); err != nil {
		return nil, fmt.Errorf("coordinator: signing key: %w", err)
	}
	return st, nil
}

// chain returns the manifest history and the current manifest, oldest
// first.
func (st *state) chain() []provision.ManifestUpdate {
	if st.Manifest == nil {
		return nil
	}
	return append(slices.Clip(st.History), provision.ManifestUpdate{Manifest: st.Manifest, Signature: st.ManifestSignature})
}

// trimHistory returns the end of history that fits, with current, in
// provision.MaxHistoryEntries entries and provision.MaxHistoryBytes: the
// oldest entries go first.
func trimHistory(history []provision.ManifestUpdate, current provision.ManifestUpdate) []provision.ManifestUpdate {
	size, keep := historySize(current), 0
	for i := len(history) - 1; i >= 0 && keep+1 < provision.MaxHistoryEntries; i-- {
		if size += historySize(history[i]); size > provision.MaxHistoryBytes {
			break
		}
		keep++
	}
	return history[len(history)-keep:]
}

// historySize is what an entry counts against provision.MaxHistoryBytes.
func historySize(e provision.ManifestUpdate) int { return len(e.Manifest) + len(e.Signature) }

// decodeState checks a stored state strictly.
func decodeState(b []byte) (*state, *manifest.Manifest, error) {
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, nil, fmt.Errorf("coordinator: stored state: %w", err)
	}
	if st.Format != 1 || len(st.Root) != rootSize || len(st.SigningSeed) != ed25519.SeedSize || st.Epoch == 0 {
		return nil, nil, fmt.Errorf("coordinator: stored state: format %d, root %d bytes, seed %d bytes, epoch %d: not a valid state",
			st.Format, len(st.Root), len(st.SigningSeed), st.Epoch)
	}
	var m *manifest.Manifest
	if st.Manifest != nil {
		var err error
		if m, err = manifest.ParseCanonical(st.Manifest); err != nil {
			return nil, nil, fmt.Errorf("coordinator: stored manifest: %w", err)
		}
	} else if len(st.History) > 0 || st.ManifestSignature != nil {
		return nil, nil, errors.New("coordinator: stored state: a manifest history without a manifest")
	}
	return &st, m, nil
}

// readState reads the state from protected storage; found is false when
// there is none.
func readState(ctx context.Context, rt *trusted.Runtime) (*state, *manifest.Manifest, bool, error) {
	b, found, err := rt.Get(ctx, stateKey)
	if err != nil {
		return nil, nil, false, fmt.Errorf("coordinator: load state: %w", err)
	}
	if !found {
		return nil, nil, false, nil
	}
	st, m, err := decodeState(b)
	return st, m, err == nil, err
}

// saveState seals st into protected storage.
func saveState(ctx context.Context, rt *trusted.Runtime, st *state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("coordinator: encode state: %w", err)
	}
	return putState(ctx, rt, b)
}

func putState(ctx context.Context, rt *trusted.Runtime, b []byte) error {
	defer clear(b)
	if err := rt.Put(ctx, stateKey, b); err != nil {
		return fmt.Errorf("coordinator: save state: %w", err)
	}
	return nil
}

// writer orders the writes of one instance's state: every snapshot gets a
// generation number under the instance's lock, and a snapshot older than
// the one last written is dropped, so a slow write can never roll back a
// newer one.
type writer struct {
	mu      sync.Mutex
	gen     uint64 // of the last snapshot taken (guarded by the instance's lock)
	written uint64 // of the last snapshot written (guarded by mu)
}

// snapshot encodes st; the caller holds the instance's lock.
func (w *writer) snapshot(st *state) ([]byte, uint64, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, 0, fmt.Errorf("coordinator: encode state: %w", err)
	}
	w.gen++
	return b, w.gen, nil
}

// write stores snapshot gen unless a newer one was written already.
func (w *writer) write(ctx context.Context, rt *trusted.Runtime, b []byte, gen uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen <= w.written {
		clear(b)
		return nil
	}
	if err := putState(ctx, rt, b); err != nil {
		return err
	}
	w.written = gen
	return nil
}
