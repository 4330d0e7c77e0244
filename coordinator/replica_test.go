package coordinator_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/coordinator"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted/secured"
)

// replicaSet is a three-node NATS cluster with one coordinator replica
// (a real child process) per node, slots 0, 1 and 2.
type replicaSet struct {
	*system
	nodes  []*node.Node
	buses  []*bus.Bus
	deploy []string // deployment IDs by slot
	states []string // state directories by slot
}

func newReplicaSet(t testing.TB) *replicaSet { return newReplicaSetN(t, 3) }

// newReplicaSetN is n nodes with a replica each.
func newReplicaSetN(t testing.TB, n int) *replicaSet {
	t.Helper()
	dir := stateDir(t)
	_, owner, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rs := &replicaSet{system: &system{t: t, base: dir, owner: owner}, deploy: make([]string, n)}
	var routes []string
	for i := range n {
		cn, b, nd := clusterNode(t, fmt.Sprintf("r%d", i), routes...)
		if i == 0 {
			routes = []string{cn.ClusterURL()}
			rs.b, rs.n = b, nd
		}
		rs.nodes, rs.buses = append(rs.nodes, nd), append(rs.buses, b)
	}
	for slot := range n {
		rs.states = append(rs.states, filepath.Join(dir, fmt.Sprintf("coordinator-%d", slot)))
		rs.start(slot)
	}
	return rs
}

// initConfig is slot's Init configuration.
func (rs *replicaSet) initConfig(slot int) []byte {
	var c coordinator.Config
	if err := json.Unmarshal(trustTestRoot(rs.t), &c); err != nil {
		rs.t.Fatal(err)
	}
	c.Slot, c.Replicas = slot, len(rs.nodes)
	b, err := json.Marshal(c)
	if err != nil {
		rs.t.Fatal(err)
	}
	return b
}

// start hosts slot's replica on its node.
func (rs *replicaSet) start(slot int) {
	rs.t.Helper()
	id, err := rs.nodes[slot].DeployEnclave(context.Background(), node.EnclaveConfig{
		Name: "coordinator", Image: coordImage.Path, StateDir: rs.states[slot], InitConfig: rs.initConfig(slot),
		Addresses:      coordinator.ReplicaAddresses(slot),
		RestartBackoff: 20 * time.Millisecond, MaxRestartBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		rs.t.Fatal(err)
	}
	rs.deploy[slot] = id
}

// stop removes slot's replica from its node.
func (rs *replicaSet) stop(slot int) {
	rs.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rs.nodes[slot].Undeploy(ctx, rs.deploy[slot]); err != nil {
		rs.t.Fatal(err)
	}
}

// replica asks slot for its status.
func (rs *replicaSet) replica(slot int) (*provision.ReplicaStatus, error) {
	b, err := rs.call(provision.ReplicaAddress(slot, provision.ReplicaStatusOp), nil)
	if err != nil {
		return nil, err
	}
	var s provision.ReplicaStatus
	return &s, json.Unmarshal(b, &s)
}

// waitState waits until every slot given is in state.
func (rs *replicaSet) waitState(state string, slots ...int) {
	rs.t.Helper()
	testenv.WaitFor(rs.t.Context(), rs.t, fmt.Sprintf("replicas %v %s", slots, state), func() error {
		for _, s := range slots {
			st, err := rs.replica(s)
			if err != nil {
				return err
			}
			if st.State != state {
				return fmt.Errorf("replica %d is %s (%s)", s, st.State, st.Reason)
			}
		}
		return nil
	})
}

// pid is the process of slot's replica.
func (rs *replicaSet) pid(slot int) int {
	for _, e := range rs.nodes[slot].Enclaves() {
		if e.Name == "coordinator" {
			return e.PID
		}
	}
	return 0
}

// kill SIGKILLs slot's replica; its supervisor restarts it.
func (rs *replicaSet) kill(slot int) {
	rs.t.Helper()
	pid := rs.pid(slot)
	if pid == 0 {
		rs.t.Fatalf("no process for replica %d", slot)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		rs.t.Fatal(err)
	}
	testenv.WaitFor(rs.t.Context(), rs.t, fmt.Sprintf("replica %d restarted", slot), func() error {
		if p := rs.pid(slot); p == 0 || p == pid {
			return errors.New("not yet")
		}
		return nil
	})
}

// freshManifest is the test manifest with a freshness section.
func (rs *replicaSet) freshManifest(version int) []byte {
	src := rs.manifestSource(version, true, joinImage.Measurement)
	src = append(fmt.Appendf(nil, "freshness: {replicas: %d, checkpoint: 1s}\n", len(rs.nodes)), src...)
	return parseManifest(rs.t, src).Canonical()
}

// update sends an owner-signed update of cur to version v.
func (rs *replicaSet) update(cur *manifest.Manifest, v int) *manifest.Manifest {
	rs.t.Helper()
	next := parseManifest(rs.t, rs.freshManifest(v))
	sig, err := manifest.SignUpdate(rs.owner, cur, next)
	if err != nil {
		rs.t.Fatal(err)
	}
	rs.mustCall(provision.AddressManifestUpdate, provision.ManifestUpdate{Manifest: next.Canonical(), Signature: sig})
	return next
}

// TestReplicasSurviveAKilledReplica: three replicas form a group, take a
// manifest that declares freshness, and keep granting joins while any one
// of them is SIGKILLed; the killed one is admitted again as a new
// incarnation and catches up with a manifest update it missed; challenges
// issued by one replica are valid at the others.
func TestReplicasSurviveAKilledReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and three replicas")
	}
	rs := newReplicaSet(t)
	rs.waitState(provision.ReplicaLive, 0, 1, 2) // formed before any manifest
	rs.setManifest(rs.freshManifest(1))
	testenv.WaitFor(t.Context(), t, "every replica holds the manifest", func() error {
		for slot := range 3 {
			st, err := rs.replica(slot)
			if err != nil {
				return err
			}
			if st.ManifestHash != fmt.Sprintf("%x", rs.hash) || st.Replicas != 3 {
				return fmt.Errorf("replica %d: manifest %s, %d replicas", slot, st.ManifestHash, st.Replicas)
			}
		}
		return nil
	})

	// Joins go on while replicas die, one at a time.
	var joins, failures atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := rs.tryJoin(); err != nil {
				failures.Add(1)
				t.Logf("join failed: %v", err)
			} else {
				joins.Add(1)
			}
		}
	})
	for slot := range 3 {
		before := rs.mustStatus(slot)
		rs.kill(slot)
		rs.waitState(provision.ReplicaLive, 0, 1, 2)
		after := rs.mustStatus(slot)
		if after.Incarnation <= before.Incarnation {
			t.Fatalf("replica %d: incarnation %d after the restart, %d before", slot, after.Incarnation, before.Incarnation)
		}
	}
	stop()
	wg.Wait()
	if joins.Load() == 0 || failures.Load() > 0 {
		t.Fatalf("%d joins granted, %d failed after retries: joins must go on while a replica is down", joins.Load(), failures.Load())
	}
	t.Logf("%d joins granted while replicas were killed, %d refused or lost", joins.Load(), failures.Load())

	// A replica that is down while the manifest changes catches up.
	rs.stop(2)
	next := rs.update(parseManifest(t, rs.freshManifest(1)), 2)
	rs.start(2)
	rs.waitState(provision.ReplicaLive, 0, 1, 2)
	if st := rs.mustStatus(2); st.ManifestHash != next.HashHex() {
		t.Fatalf("replica 2 holds manifest %s after catching up, want %s", st.ManifestHash, next.HashHex())
	}
	if st := rs.mustStatus(2); st.Rollbacks == 0 {
		t.Fatal("replica 2's stale stored state was not counted")
	}
}

// tryJoin joins as analytics, as the trusted runtime does: a request a
// restarting or not-yet-admitted replica refused with 503 is asked again.
func (rs *replicaSet) tryJoin() error {
	_, err := rs.grant()
	return err
}

// grant joins as analytics (see tryJoin) and opens the grant.
func (rs *replicaSet) grant() (*provision.Grant, error) {
	var err error
	for range 50 {
		var b []byte
		if b, err = rs.call(provision.AddressChallenge, nil); err == nil {
			var ch provision.Challenge
			if err = provision.Decode(b, &ch); err != nil {
				return nil, err
			}
			key, kerr := secure.NewServiceKey()
			if kerr != nil {
				return nil, kerr
			}
			var resp []byte
			if resp, err = rs.call(provision.AddressJoin, rs.joinRequest(allowed(), "analytics", key, ch.Nonce)); err == nil {
				return secured.OpenGrant(key, "analytics", ch.Nonce, resp)
			}
		}
		if !unavailable(err) {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

// unavailable reports whether err is a 503 refusal.
func unavailable(err error) bool {
	var re *bus.ReplyError
	return errors.As(err, &re) && re.Code == provision.CodeUnavailable
}

// checkpoint registers analytics instance 0 at counter with the grant's
// freshness key, retrying 503s for a while.
func (rs *replicaSet) checkpoint(g *provision.Grant, counter uint64) (*provision.Registered, error) {
	digest := bytes.Repeat([]byte{byte(counter)}, provision.DigestSize)
	nonce := make([]byte, provision.NonceSize)
	rand.Read(nonce)
	return rs.registered(g, provision.AddressCheckpoint, provision.NewCheckpoint(g.Freshness.Key, "analytics", 0, counter, digest, nonce), nonce)
}

// freshRead reads analytics instance 0's registered version.
func (rs *replicaSet) freshRead(g *provision.Grant, retry bool) (*provision.Registered, error) {
	nonce := make([]byte, provision.NonceSize)
	rand.Read(nonce)
	req := provision.NewFreshRead(g.Freshness.Key, "analytics", 0, nonce)
	if !retry {
		b, err := rs.call(provision.AddressFreshRead, req)
		if err != nil {
			return nil, err
		}
		return checkRegistered(g, b, nonce)
	}
	return rs.registered(g, provision.AddressFreshRead, req, nonce)
}

func (rs *replicaSet) registered(g *provision.Grant, address string, req any, nonce []byte) (*provision.Registered, error) {
	var err error
	for range 50 {
		var b []byte
		if b, err = rs.call(address, req); err == nil {
			return checkRegistered(g, b, nonce)
		}
		if !unavailable(err) {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

// checkRegistered decodes the coordinator's answer and checks it as a
// service does.
func checkRegistered(g *provision.Grant, b, nonce []byte) (*provision.Registered, error) {
	var r provision.Registered
	if err := provision.Decode(b, &r); err != nil {
		return nil, err
	}
	if err := r.Check(g.CoordinatorKey, provision.ServiceSubject("analytics", 0), nonce); err != nil {
		return nil, err
	}
	return &r, nil
}

// mustStatus is slot's status.
func (rs *replicaSet) mustStatus(slot int) *provision.ReplicaStatus {
	rs.t.Helper()
	st, err := rs.replica(slot)
	if err != nil {
		rs.t.Fatal(err)
	}
	return st
}

// TestReplicaRollbackRefused: a host restores a replica's older sealed
// state (a manifest that still allowed what an update forbade); the
// replica refuses it, counts it, and serves the group's latest manifest.
// Then a majority restart loses the quorum: the replicas refuse to serve
// until the owner signs a recovery statement.
func TestReplicaRollbackRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and three replicas")
	}
	rs := newReplicaSet(t)
	rs.waitState(provision.ReplicaLive, 0, 1, 2)
	rs.setManifest(rs.freshManifest(1))
	rs.waitState(provision.ReplicaLive, 0, 1, 2)
	testenv.WaitFor(t.Context(), t, "replica 1 holds the manifest", func() error {
		if st := rs.mustStatus(1); st.ManifestHash != fmt.Sprintf("%x", rs.hash) {
			return errors.New("not yet")
		}
		return nil
	})
	old := filepath.Join(rs.base, "snapshot-1")
	rs.stop(1)
	copyDir(t, rs.states[1], old)
	rs.start(1)
	rs.waitState(provision.ReplicaLive, 0, 1, 2)
	next := rs.update(parseManifest(t, rs.freshManifest(1)), 2)

	// The host rolls replica 1 back.
	rs.stop(1)
	if err := os.RemoveAll(rs.states[1]); err != nil {
		t.Fatal(err)
	}
	copyDir(t, old, rs.states[1])
	rs.start(1)
	rs.waitState(provision.ReplicaLive, 0, 1, 2)
	st := rs.mustStatus(1)
	if st.ManifestHash != next.HashHex() {
		t.Fatalf("rolled-back replica serves manifest %s, want the group's %s", st.ManifestHash, next.HashHex())
	}
	if st.Rollbacks == 0 {
		t.Fatal("the rollback was not counted")
	}

	// A service registers its state version; a rolled-back version is
	// refused and counted.
	g, err := rs.grant()
	if err != nil {
		t.Fatal(err)
	}
	if g.Freshness == nil || g.Freshness.Checkpoint != "1s" {
		t.Fatalf("grant's freshness: %+v", g.Freshness)
	}
	if r, err := rs.checkpoint(g, 5); err != nil || r.Counter != 5 {
		t.Fatalf("checkpoint: %+v, %v", r, err)
	}
	before := rs.mustStatus(0).Rollbacks + rs.mustStatus(1).Rollbacks + rs.mustStatus(2).Rollbacks
	_, err = rs.checkpoint(g, 4)
	refused(t, err, provision.CodeConflict, "stale version")
	if after := rs.mustStatus(0).Rollbacks + rs.mustStatus(1).Rollbacks + rs.mustStatus(2).Rollbacks; after <= before {
		t.Fatalf("the stale checkpoint was not counted (%d before, %d after)", before, after)
	}
	testenv.WaitFor(t.Context(), t, "replicas 0 and 1 stored the register", func() error {
		for _, slot := range []int{0, 1} {
			if !slices.ContainsFunc(rs.mustStatus(slot).Local, func(r provision.Register) bool { return r.Subject == "service/analytics/0" && r.Counter == 5 }) {
				return fmt.Errorf("replica %d has not stored it yet", slot)
			}
		}
		return nil
	})

	// A majority restart: two replicas stop, then start again. The
	// latest versions are gone from enclave memory: nothing that needs a
	// quorum is answered until the owner's recovery statement.
	rs.stop(0)
	rs.stop(1)
	rs.start(0)
	rs.start(1)
	rs.waitState(provision.ReplicaNeedsRecovery, 0, 1)
	for range 5 { // whichever replica answers
		_, err := rs.freshRead(g, false)
		if !unavailable(err) {
			t.Fatalf("a read during the lost quorum answered %v, want 503", err)
		}
	}
	// The live replica takes a rotation it cannot confirm: answered 503,
	// stored there; it takes effect everywhere once the group is whole.
	h := next.Hash()
	rotate := provision.RotateRequest{NextEpoch: 2, Grace: "1h", Signature: ed25519.Sign(rs.owner, provision.RotateMessage(h[:], 2, "1h"))}
	testenv.WaitFor(t.Context(), t, "the live replica took the rotation", func() error {
		_, err := rs.call(provision.AddressRotate, rotate)
		var re *bus.ReplyError
		if errors.As(err, &re) && re.Code == provision.CodeUnavailable && strings.Contains(re.Message, "no quorum") {
			return nil
		}
		return fmt.Errorf("not yet: %v", err)
	})
	rs.recover(next, 0, 1)
	rs.waitState(provision.ReplicaLive, 0, 1, 2)
	if r, err := rs.freshRead(g, true); err != nil || r.Counter != 5 {
		t.Fatalf("after recovery the service's version is %+v, %v; want counter 5", r, err)
	}
	testenv.WaitFor(t.Context(), t, "every replica took the rotation", func() error {
		var versions []uint64
		for slot := range 3 {
			for _, l := range rs.mustStatus(slot).Local {
				if l.Subject == provision.CoordinatorSubject {
					versions = append(versions, l.Counter)
				}
			}
		}
		if len(versions) != 3 || versions[0] != versions[1] || versions[1] != versions[2] {
			return fmt.Errorf("coordinator versions %v", versions)
		}
		return nil
	})
	g2, err := rs.grant()
	if err != nil {
		t.Fatal(err)
	}
	if g2.Epoch != 2 {
		t.Fatalf("a grant after the group is whole again has epoch %d, want 2", g2.Epoch)
	}
}

// recover signs and sends a recovery statement for slots, continuing
// from the versions they report.
func (rs *replicaSet) recover(m *manifest.Manifest, slots ...int) {
	rs.t.Helper()
	hash := m.Hash()
	st := provision.RecoveryStatement{ManifestHash: hash[:]}
	best := map[string]provision.Register{}
	for _, s := range slots {
		r := rs.mustStatus(s)
		st.Nonces = append(st.Nonces, r.RecoveryNonce)
		for _, l := range r.Local {
			if cur, ok := best[l.Subject]; !ok || l.Counter > cur.Counter {
				best[l.Subject] = l
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(best)) {
		st.Registers = append(st.Registers, best[k])
	}
	st.Signature = ed25519.Sign(rs.owner, provision.RecoveryMessage(st.ManifestHash, st.Nonces, st.Registers))
	for _, s := range slots {
		b, err := rs.call(provision.ReplicaAddress(s, provision.ReplicaRecoverOp), st)
		if err != nil {
			rs.t.Logf("recovery of replica %d: %v", s, err)
			continue
		}
		var r provision.ReplicaStatus
		if err := json.Unmarshal(b, &r); err != nil || !bytes.Contains(b, []byte(provision.ReplicaLive)) {
			rs.t.Logf("recovery of replica %d answered %s", s, b)
		}
	}
}
