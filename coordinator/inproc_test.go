package coordinator_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/coordinator"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
)

// clock is a settable clock for the coordinator.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestChallengesExpireAndAreBounded runs the coordinator in process (the
// inproc backend: no isolation, but its clock can be set) to check that a
// challenge is short-lived, that issuing challenges keeps no state, and
// that the set of spent challenges is bounded without forgetting one
// before it expires.
func TestChallengesExpireAndAreBounded(t *testing.T) {
	clk := &clock{now: time.Now()}
	app := coordinator.NewApp(coordinator.Options{Now: clk.Now, MaxChallenges: 2, NonceLifetime: time.Minute}, trusted.Options{})
	dir := stateDir(t)
	b, n := newNode(t)
	if _, err := n.DeployEnclave(context.Background(), node.EnclaveConfig{
		Name: "coordinator", Backend: node.BackendInProc, Serve: app.Serve, Image: coordImage.Path, StateDir: dir, InitConfig: trustTestRoot(t),
	}); err != nil {
		t.Fatal(err)
	}
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	s := &system{t: t, b: b, n: n, owner: owner}
	s.setManifest(s.manifestJSON(1, true, joinImage.Measurement))
	challenge := func() []byte {
		var ch provision.Challenge
		if err := provision.Decode(s.mustCall(provision.AddressChallenge, nil), &ch); err != nil {
			t.Fatal(err)
		}
		return ch.Nonce
	}

	// (The test process joins with its own simulated evidence, as
	// elsewhere: the inproc backend's own evidence claims debug.)
	nonce := challenge()
	key, _ := secure.NewServiceKey()
	clk.advance(time.Minute)
	_, err := s.call(provision.AddressJoin, s.joinRequest(allowed(), "analytics", key, nonce))
	refused(t, err, provision.CodeRefused, "expired")

	// Many more challenges than MaxChallenges: none is refused.
	for range 50 {
		challenge()
	}
	// A challenge with one bit changed was not issued here.
	nonce = challenge()
	nonce[0] ^= 1
	_, err = s.call(provision.AddressJoin, s.joinRequest(allowed(), "analytics", key, nonce))
	refused(t, err, provision.CodeRefused, "not issued")

	// Two joins fill the spent set; a third within the lifetime is told to
	// retry; once the first two expired it gets in.
	for range 2 {
		s.mustCall(provision.AddressJoin, s.joinRequest(allowed(), "analytics", key, challenge()))
	}
	third := challenge()
	_, err = s.call(provision.AddressJoin, s.joinRequest(allowed(), "analytics", key, third))
	refused(t, err, provision.CodeTooMany, "try again shortly")
	clk.advance(time.Minute)
	third = challenge()
	clk.advance(30 * time.Second)
	req := s.joinRequest(allowed(), "analytics", key, third)
	s.mustCall(provision.AddressJoin, req)
	// Spent: its replay is refused, although it has not expired.
	_, err = s.call(provision.AddressJoin, req)
	refused(t, err, provision.CodeRefused, "already used")
}

// TestConfigTrustsAnotherMachinesSimKey: a join whose simulated evidence is
// signed by another machine's platform key is refused, unless the host's
// configuration names that key (simulated clusters).
func TestConfigTrustsAnotherMachinesSimKey(t *testing.T) {
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := attest.NewSimIssuer(allowed(), other)
	if err != nil {
		t.Fatal(err)
	}
	for _, withKey := range []bool{false, true} {
		app := coordinator.NewApp(coordinator.Options{}, trusted.Options{})
		dir := stateDir(t)
		b, n := newNode(t)
		ec := node.EnclaveConfig{Name: "coordinator", Backend: node.BackendInProc, Serve: app.Serve, Image: coordImage.Path, StateDir: dir,
			InitConfig: trustTestRoot(t)}
		if withKey {
			ec.InitConfig = trustTestRoot(t, &other.PublicKey)
		}
		if _, err := n.DeployEnclave(context.Background(), ec); err != nil {
			t.Fatal(err)
		}
		_, owner, _ := ed25519.GenerateKey(rand.Reader)
		s := &system{t: t, b: b, n: n, owner: owner}
		s.setManifest(s.manifestJSON(1, true, joinImage.Measurement))
		var ch provision.Challenge
		if err := provision.Decode(s.mustCall(provision.AddressChallenge, nil), &ch); err != nil {
			t.Fatal(err)
		}
		key, _ := secure.NewServiceKey()
		ev, err := iss.Issue(context.Background(), provision.JoinReportData(key.PublicKeyBytes(), ch.Nonce))
		if err != nil {
			t.Fatal(err)
		}
		evb, _ := ev.MarshalBinary()
		_, err = s.call(provision.AddressJoin, provision.JoinRequest{Service: "analytics", PublicKey: key.PublicKeyBytes(), Nonce: ch.Nonce, Evidence: evb})
		if withKey && err != nil {
			t.Fatalf("with the key configured: %v", err)
		}
		if !withKey {
			refused(t, err, provision.CodeRefused, "evidence does not verify")
		}
	}
	// A configuration that does not parse stops the coordinator from
	// starting, with the reason.
	app := coordinator.NewApp(coordinator.Options{}, trusted.Options{})
	_, n := newNode(t)
	_, err = n.DeployEnclave(context.Background(), node.EnclaveConfig{Name: "coordinator", Backend: node.BackendInProc,
		Serve: app.Serve, Image: coordImage.Path, StateDir: stateDir(t), InitConfig: []byte(`{"sim_platform_keys":["nope"]}`),
		StartTimeout: 20 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "sim_platform_keys[0]") {
		t.Fatalf("bad configuration: %v", err)
	}
}
