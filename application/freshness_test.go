package application

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
)

const threeNodes = `
nodes:
  - {name: n1, cluster_listen: 127.0.0.1:-1, run: [s]}
  - {name: n2, cluster_listen: 127.0.0.1:-1, routes: [n1], run: [v]}
  - {name: n3, cluster_listen: 127.0.0.1:-1, routes: [n1]}
`

func TestCoordinatorSectionDefaultsAndPlacement(t *testing.T) {
	base := "name: a\nimages:\n  v: {package: ./v}\nservices:\n  s: {command: [true]}\n"
	for _, tc := range []struct {
		name, yaml string
		freshness  bool
		replicas   int
		checkpoint time.Duration
		slots      string
	}{
		{"off by default, one node", base, false, 0, 0, "n1"},
		{"off, three nodes: the image's node", base + threeNodes, false, 0, 0, "n2"},
		{"on, one node: one replica", base + "coordinator: {freshness: true}\n", true, 1, time.Second, "n1"},
		{"on, one node, three replicas on it", base + "coordinator: {freshness: true, replicas: 3, checkpoint: 0s}\n", true, 3, 0, "n1,n1,n1"},
		{"on, three nodes: three replicas, image nodes first", base + "coordinator: {freshness: true, checkpoint: 100ms}\n" + threeNodes, true, 3, 100 * time.Millisecond, "n1,n2,n3"},
		{"on, three nodes, one replica", base + "coordinator: {freshness: true, replicas: 1}\n" + threeNodes, true, 1, time.Second, "n2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if c.Freshness() != tc.freshness || c.Coordinator.Replicas != tc.replicas {
				t.Fatalf("coordinator %+v", c.Coordinator)
			}
			if tc.freshness && *c.Coordinator.Checkpoint != tc.checkpoint {
				t.Fatalf("checkpoint %v, want %v", *c.Coordinator.Checkpoint, tc.checkpoint)
			}
			if got := strings.Join(c.CoordinatorSlots(), ","); got != tc.slots {
				t.Fatalf("slots on %s, want %s", got, tc.slots)
			}
			if err := c.Check(); err != nil { // filling again changes nothing
				t.Fatal(err)
			}
			if got := strings.Join(c.CoordinatorSlots(), ","); got != tc.slots {
				t.Fatalf("after Check: slots on %s, want %s", got, tc.slots)
			}
		})
	}
}

func TestCoordinatorSectionErrors(t *testing.T) {
	base := "name: a\nimages:\n  v: {package: ./v}\nservices:\n  s: {command: [true]}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"replicas without freshness", base + "coordinator: {replicas: 3}\n", "coordinator (line 6): replicas and checkpoint need freshness: true"},
		{"too many replicas", base + "coordinator: {freshness: true, replicas: 8}\n", "coordinator.replicas (line 6): 8 (want 1 to 7)"},
		{"more replicas than nodes", base + "coordinator: {freshness: true, replicas: 5}\n" + threeNodes, "5 replicas on 3 nodes"},
		{"negative checkpoint", base + "coordinator: {freshness: true, checkpoint: -1s}\n", "coordinator.checkpoint"},
		{"unknown field", base + "coordinator: {fresh: true}\n", "line 6"},
		{"two coordinators without freshness", strings.Replace(base+threeNodes, "run: [s]}", "run: [s], coordinator: true}", 1) + "  - {name: n4, cluster_listen: 127.0.0.1:-1, routes: [n1], coordinator: true}\n", "one only"},
		{"freshness without a coordinator", "name: a\nservices:\n  s: {command: [true]}\ncoordinator: {freshness: true}\n", "coordinator.freshness (line 4): freshness is the coordinator's"},
		{"reserved name", "name: a\nimages:\n  coordinator-2: {package: ./v}\n", "cannot name an image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrConfig mentioning %q", err, tc.want)
			}
		})
	}
}

func testMeasurements(t *testing.T) Measurements {
	t.Helper()
	var m enclave.Measurement
	if _, err := rand.Read(m[:]); err != nil {
		t.Fatal(err)
	}
	return Measurements{Coordinator: m, Images: map[string]enclave.Measurement{"v": m}}
}

func TestManifestWithoutFreshnessKeepsItsHash(t *testing.T) {
	ms := testMeasurements(t)
	desc := "name: a\nimages:\n  v: {package: ./v}\naddresses:\n  x.y: {secured: true, consume: [v]}\n"
	c, err := ParseConfig([]byte(desc))
	if err != nil {
		t.Fatal(err)
	}
	raw, m, err := c.Manifest(ms, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Freshness != nil || m.Owner != nil || bytes.Contains(raw, []byte("freshness")) || bytes.Contains(raw, []byte("owner")) {
		t.Fatalf("a description without freshness got a freshness section or an owner:\n%s", raw)
	}
	// The canonical form is what it was before the section existed: the
	// keys of a manifest without freshness or owner.
	var doc map[string]any
	if err := json.Unmarshal(m.Canonical(), &doc); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if got := strings.Join(keys, ","); got != "addresses,policy,services,version" {
		t.Fatalf("canonical keys %s", got)
	}
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	if _, _, err := c.Manifest(ms, nil, owner.Public().(ed25519.PublicKey)); err == nil {
		t.Fatal("an owner key changed the manifest of a description without freshness")
	}
}

func TestManifestWithFreshness(t *testing.T) {
	ms := testMeasurements(t)
	c, err := ParseConfig([]byte("name: a\nimages:\n  v: {package: ./v}\ncoordinator: {freshness: true, replicas: 3, checkpoint: 100ms}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Manifest(ms, nil, nil); err == nil {
		t.Fatal("freshness without an owner key was accepted")
	}
	dir := t.TempDir()
	key, err := LoadOrCreateOwnerKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := c.Manifest(ms, nil, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if m.Freshness == nil || m.Freshness.Replicas != 3 || m.Freshness.Checkpoint != 100*time.Millisecond {
		t.Fatalf("freshness %+v", m.Freshness)
	}
	// The owner in the manifest is the key in the file, as the CLI's
	// --key reads it.
	pemBytes, err := os.ReadFile(filepath.Join(dir, OwnerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := manifest.ParseSigningKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("a message")
	sig, err := SignAsOwner(signer, msg)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Owner.Verify(msg, sig) {
		t.Fatal("the manifest's owner does not verify the owner key's signature")
	}
}

func TestOwnerKeyMadeOnceAndShared(t *testing.T) {
	dir := t.TempDir()
	keys := make([]ed25519.PrivateKey, 8)
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i := range keys { // processes of one application share the state dir
		wg.Go(func() { keys[i], errs[i] = LoadOrCreateOwnerKey(dir) })
	}
	wg.Wait()
	for i := range keys {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !keys[i].Equal(keys[0]) {
			t.Fatal("two owner keys for one state directory")
		}
	}
	fi, err := os.Stat(filepath.Join(dir, OwnerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("owner key mode %v, want 0600", fi.Mode().Perm())
	}
	if err := os.WriteFile(filepath.Join(dir, OwnerKeyFile), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateOwnerKey(dir); err == nil {
		t.Fatal("a damaged owner key was accepted (or replaced)")
	}
}

// replica is a ReplicaStatus as a replica answers it.
func replica(slot int, state, hash string, local ...provision.Register) SlotStatus {
	nonce := bytes.Repeat([]byte{byte(slot + 1)}, provision.NonceSize)
	st := &provision.ReplicaStatus{Slot: slot, Replicas: 3, State: state, ManifestHash: hash, Local: local}
	if state == provision.ReplicaNeedsRecovery {
		st.RecoveryNonce = nonce
		st.Reason = "a quorum of replicas restarted"
	}
	return SlotStatus{Slot: slot, Status: st}
}

func digest(b byte) []byte { return bytes.Repeat([]byte{b}, provision.DigestSize) }

func TestPlanRecovery(t *testing.T) {
	h := strings.Repeat("ab", 32)
	other := strings.Repeat("cd", 32)
	need := provision.ReplicaNeedsRecovery
	reg := func(s string, c uint64, d byte) provision.Register {
		return provision.Register{Subject: s, Counter: c, Digest: digest(d)}
	}
	t.Run("highest local version per subject, every nonce; the coordinator's of those recovered", func(t *testing.T) {
		st, err := PlanRecovery([]SlotStatus{
			replica(0, need, h, reg("service/analytics/0", 7, 1), reg("coordinator", 3, 9)),
			replica(1, need, h, reg("service/analytics/0", 9, 2)),
			replica(2, provision.ReplicaLive, h, reg("coordinator", 4, 8)),
			{Slot: 3, Err: errors.New("no answer")},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(st.ManifestHash) != h || len(st.Nonces) != 2 {
			t.Fatalf("statement %+v", st)
		}
		// A live replica's own coordinator state is not what the others
		// can continue from: they must hold what the statement names.
		want := []provision.Register{reg("coordinator", 3, 9), reg("service/analytics/0", 9, 2)}
		if len(st.Registers) != 2 || st.Registers[0].Counter != 3 || st.Registers[1].Counter != 9 ||
			!bytes.Equal(st.Registers[1].Digest, want[1].Digest) || st.Registers[0].Subject != "coordinator" {
			t.Fatalf("registers %+v, want %+v", st.Registers, want)
		}
		hash, _ := hex.DecodeString(h)
		if _, err := PlanRecovery([]SlotStatus{replica(0, need, h)}, hash); err != nil {
			t.Fatalf("the replicas' own manifest given: %v", err)
		}
	})
	for _, tc := range []struct {
		name     string
		statuses []SlotStatus
		given    string
		want     string
	}{
		{"none needs recovery", []SlotStatus{replica(0, provision.ReplicaLive, h)}, "", "no replica needs recovery"},
		{"manifests differ", []SlotStatus{replica(0, need, h), replica(1, need, other)}, "", "different manifests"},
		{"no manifest", []SlotStatus{replica(0, need, "")}, "", "hold no manifest"},
		{"not a hash", []SlotStatus{replica(0, need, "xyz")}, "", "not a hash"},
		{"another manifest given", []SlotStatus{replica(0, need, h)}, other, "not the one given"},
		{"fork", []SlotStatus{replica(0, need, h, reg("s", 5, 1)), replica(1, need, h, reg("s", 5, 2))}, "", "a fork"},
		{"bad digest", []SlotStatus{replica(0, need, h, provision.Register{Subject: "s", Counter: 1, Digest: []byte{1}})}, "", "digest of 1 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var given []byte
			if tc.given != "" {
				given, _ = hex.DecodeString(tc.given)
			}
			_, err := PlanRecovery(tc.statuses, given)
			if !errors.Is(err, ErrNoRecovery) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrNoRecovery mentioning %q", err, tc.want)
			}
		})
	}
}

func TestSignRecoveryVerifiesAsTheOwner(t *testing.T) {
	key, err := LoadOrCreateOwnerKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	owner, err := manifest.ParseOwnerKey(ownerKeyBase64(key))
	if err != nil {
		t.Fatal(err)
	}
	st, err := PlanRecovery([]SlotStatus{replica(0, provision.ReplicaNeedsRecovery, strings.Repeat("ab", 32),
		provision.Register{Subject: "coordinator", Counter: 2, Digest: digest(3)})}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := SignRecovery(key, st); err != nil {
		t.Fatal(err)
	}
	if !owner.Verify(provision.RecoveryMessage(st.ManifestHash, st.Nonces, st.Registers), st.Signature) {
		t.Fatal("the recovery statement's signature does not verify")
	}
	st.Registers[0].Counter = 1 // an older state than signed
	if owner.Verify(provision.RecoveryMessage(st.ManifestHash, st.Nonces, st.Registers), st.Signature) {
		t.Fatal("the signature verifies a changed statement")
	}
}

func ownerKeyBase64(k ed25519.PrivateKey) string {
	return base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey))
}

// FuzzPlanRecovery feeds PlanRecovery replica statuses decoded from bytes a
// host relays: it never panics, and whatever it plans is well formed.
func FuzzPlanRecovery(f *testing.F) {
	h := strings.Repeat("ab", 32)
	for _, set := range [][]SlotStatus{
		{replica(0, provision.ReplicaNeedsRecovery, h, provision.Register{Subject: "coordinator", Counter: 2, Digest: digest(3)}), replica(1, provision.ReplicaLive, h)},
		{replica(0, provision.ReplicaAdmitting, "")},
	} {
		var parts [][]byte
		for _, s := range set {
			b, err := json.Marshal(s.Status)
			if err != nil {
				f.Fatal(err)
			}
			parts = append(parts, b)
		}
		f.Add(bytes.Join(parts, []byte("\n")))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var statuses []SlotStatus
		for i, line := range bytes.Split(data, []byte("\n")) {
			var st provision.ReplicaStatus
			if provision.Decode(line, &st) == nil {
				statuses = append(statuses, SlotStatus{Slot: i, Status: &st})
			}
		}
		st, err := PlanRecovery(statuses, nil)
		if err != nil {
			if !errors.Is(err, ErrNoRecovery) {
				t.Fatalf("error %v does not wrap ErrNoRecovery", err)
			}
			return
		}
		if len(st.ManifestHash) != provision.HashSize || len(st.Nonces) == 0 || provision.CheckRegisters(st.Registers) != nil {
			t.Fatalf("ill-formed statement %+v", st)
		}
	})
}
