package coordinator_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
)

// update moves the coordinator from manifest cur to the manifest of
// version v, signed by the owner, and returns it.
func (s *system) update(cur *manifest.Manifest, v int) *manifest.Manifest {
	s.t.Helper()
	y := s.manifestJSON(v, true, joinImage.Measurement)
	next := parseManifest(s.t, y)
	sig, err := manifest.SignUpdate(s.owner, cur, next)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mustCall(provision.AddressManifestUpdate, provision.ManifestUpdate{Manifest: y, Signature: sig})
	return next
}

// history asks for the manifest history since pinned.
func (s *system) history(pinned [32]byte) (*provision.ManifestHistory, error) {
	b, err := s.call(provision.AddressManifestHistory, provision.ManifestHistoryRequest{Pinned: pinned[:]})
	if err != nil {
		return nil, err
	}
	var h provision.ManifestHistory
	if err := provision.Decode(b, &h); err != nil {
		s.t.Fatal(err)
	}
	return &h, nil
}

// connectMin verifies the coordinator pinning hash with a minimum
// manifest version.
func connectMin(s *system, hash [32]byte, min uint64) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return client.Connect(ctx, s.b, client.Options{
		CoordinatorPolicy: attest.Policy{MREnclaves: [][32]byte{coordImage.Measurement}},
		ManifestHash:      hash, AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{testRoot.PlatformPublicKey()}, Logger: testLogger(),
		Credential: secure.Credential{Name: "meter-7", Key: testClient}, MinManifestVersion: min,
	})
}

// restartCoordinator SIGKILLs the coordinator's process and waits for its
// supervisor to restart it.
func (s *system) restartCoordinator() {
	s.t.Helper()
	pid := s.coordinatorPID()
	if pid == 0 {
		s.t.Fatal("no coordinator process")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		s.t.Fatal(err)
	}
	testenv.WaitFor(s.t.Context(), s.t, "coordinator restarted", func() error {
		if p := s.coordinatorPID(); p == 0 || p == pid {
			return errors.New("not yet")
		}
		_, err := s.call(provision.AddressStatus, nil)
		return err
	})
}

// rollback shuts the node down, replaces the coordinator's state
// directory with snapshot and hosts the coordinator on a new node, as a
// malicious host may.
func (s *system) rollback(snapshot string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.n.Shutdown(ctx); err != nil {
		s.t.Fatal(err)
	}
	if err := os.RemoveAll(s.state); err != nil {
		s.t.Fatal(err)
	}
	copyDir(s.t, snapshot, s.state)
	s.b, s.n = newNode(s.t)
	s.deployCoordinator()
}

// copyDir copies the files under from (the coordinator's sealed state)
// into to.
func copyDir(t testing.TB, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			copyDir(t, filepath.Join(from, e.Name()), filepath.Join(to, e.Name()))
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClientFollowsUpdatesAndRefusesRollback runs the real coordinator (a
// child process): a client pinned to version 1 follows the owner's signed
// updates to version 3, also after a restart; a client with a minimum
// version refuses the coordinator at version 1, before the updates and
// after its host rolled its sealed state back; a client without one does
// not notice the rollback (the gap the replica quorum will close).
func TestClientFollowsUpdatesAndRefusesRollback(t *testing.T) {
	s := newSystem(t)
	y := s.manifestJSON(1, true, joinImage.Measurement)
	v1 := parseManifest(t, y)
	s.setManifest(y)
	snapshot := filepath.Join(s.base, "v1-state")
	copyDir(t, s.state, snapshot)

	_, err := connectMin(s, v1.Hash(), 3)
	var ve *client.ManifestVersionError
	if !errors.Is(err, client.ErrManifestTooOld) || !errors.As(err, &ve) || ve.Version != 1 {
		t.Fatalf("minimum 3, coordinator at 1: %v", err)
	}
	if c, err := connectMin(s, v1.Hash(), 1); err != nil || c.ManifestVersion() != 1 || c.FollowedUpdates() != 0 {
		t.Fatalf("minimum 1, coordinator at 1: %v", err)
	}

	v2 := s.update(v1, 2)
	v3 := s.update(v2, 3)
	h, err := s.history(v1.Hash())
	if err != nil || len(h.Entries) != 3 || h.Entries[0].Signature != nil || manifest.HashCanonical(h.Entries[2].Manifest) != v3.Hash() {
		t.Fatalf("history since v1: %+v, %v", h, err)
	}
	if h, err := s.history(v3.Hash()); err != nil || len(h.Entries) != 1 {
		t.Fatalf("history since the current manifest: %+v, %v", h, err)
	}
	unknown := v1.Hash()
	unknown[0] ^= 1
	_, err = s.history(unknown)
	refused(t, err, provision.CodeNotFound, "pin the current manifest again")
	_, err = s.call(provision.AddressManifestHistory, provision.ManifestHistoryRequest{Pinned: []byte{1, 2}})
	refused(t, err, provision.CodeBadRequest, "manifest hash of 2 bytes")

	check := func(c *client.Client, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if c.ManifestHash() != v3.Hash() || c.ManifestVersion() != 3 || c.FollowedUpdates() != 2 {
			t.Fatalf("pinned v1, coordinator at v3: now %x, version %d, %d updates", c.ManifestHash(), c.ManifestVersion(), c.FollowedUpdates())
		}
		// The coordinator's signed service key names the new hash.
		if _, err := c.ServiceKey(context.Background(), "analytics"); err != nil {
			t.Fatalf("service key after following updates: %v", err)
		}
	}
	check(connect(s, v1.Hash()))
	check(connectMin(s, v1.Hash(), 3))

	// The history is in the sealed state: a restarted coordinator serves it.
	s.restartCoordinator()
	check(connectMin(s, v1.Hash(), 3))

	// The host rolls the sealed state back to version 1: it stops, puts
	// the old files back and starts again.
	s.rollback(snapshot)
	if st := s.status(); st.ManifestVersion != 1 {
		t.Fatalf("after the rollback the coordinator is at %+v", st)
	}
	_, err = connectMin(s, v1.Hash(), 3)
	if !errors.Is(err, client.ErrManifestTooOld) {
		t.Fatalf("rolled-back coordinator, minimum 3: %v", err)
	}
	// Without a minimum, and pinned to the old manifest, it is not noticed.
	if c, err := connect(s, v1.Hash()); err != nil || c.ManifestVersion() != 1 {
		t.Fatalf("rolled-back coordinator, no minimum: %v", err)
	}
	// A client that pinned v3 refuses it: nothing leads back to v1.
	_, err = connect(s, v3.Hash())
	if !errors.Is(err, client.ErrManifestMismatch) {
		t.Fatalf("rolled-back coordinator, pinned v3: %v", err)
	}
}

// TestManifestHistoryIsBounded: after more updates than the history keeps,
// a client pinned to a manifest that went must pin again; one pinned to
// the oldest kept follows all the way.
func TestManifestHistoryIsBounded(t *testing.T) {
	s := newSystem(t)
	y := s.manifestJSON(1, true, joinImage.Measurement)
	ms := []*manifest.Manifest{parseManifest(t, y)}
	s.setManifest(y)
	last := provision.MaxHistoryEntries + 2
	for v := 2; v <= last; v++ {
		ms = append(ms, s.update(ms[len(ms)-1], v))
	}
	oldest := last - provision.MaxHistoryEntries + 1
	for v := 1; v < oldest; v++ {
		_, err := s.history(ms[v-1].Hash())
		refused(t, err, provision.CodeNotFound, "pin the current manifest again")
	}
	h, err := s.history(ms[oldest-1].Hash())
	if err != nil || len(h.Entries) != provision.MaxHistoryEntries {
		t.Fatalf("history since the oldest kept (v%d): %v", oldest, err)
	}
	_, err = connectMin(s, ms[0].Hash(), 0)
	var mm *client.ManifestMismatchError
	if !errors.As(err, &mm) || mm.Reason == nil {
		t.Fatalf("pinned to a manifest the history no longer holds: %v", err)
	}
	c, err := connectMin(s, ms[oldest-1].Hash(), uint64(last))
	if err != nil || c.ManifestVersion() != uint64(last) || c.FollowedUpdates() != provision.MaxHistoryEntries-1 {
		t.Fatalf("pinned to the oldest kept: %v", err)
	}
}
