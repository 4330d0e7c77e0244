package coordinator_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"sync"
	"testing"
	"time"

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
// challenge is short-lived and that outstanding challenges are bounded.
func TestChallengesExpireAndAreBounded(t *testing.T) {
	clk := &clock{now: time.Now()}
	app := coordinator.NewApp(coordinator.Options{Now: clk.Now, MaxChallenges: 3, NonceLifetime: time.Minute}, trusted.Options{})
	dir := t.TempDir()
	b, n := newNode(t)
	if _, err := n.DeployEnclave(context.Background(), node.EnclaveConfig{
		Name: "coordinator", Backend: node.BackendInProc, Serve: app.Serve, Image: coordImage.Path, StateDir: dir,
	}); err != nil {
		t.Fatal(err)
	}
	_, owner, _ := ed25519.GenerateKey(rand.Reader)
	s := &system{t: t, b: b, n: n, owner: owner}
	s.setManifest(s.manifestYAML(1, true, joinImage.Measurement))

	// (The test process joins with its own simulated evidence, as
	// elsewhere: the inproc backend's own evidence claims debug.)
	var ch provision.Challenge
	if err := provision.Decode(s.mustCall(provision.AddressChallenge, nil), &ch); err != nil {
		t.Fatal(err)
	}
	key, _ := secure.NewServiceKey()
	clk.advance(time.Minute)
	_, err := s.call(provision.AddressJoin, s.joinRequest(allowed(), "analytics", key, ch.Nonce))
	refused(t, err, provision.CodeRefused, "expired")

	for range 3 {
		s.mustCall(provision.AddressChallenge, nil)
	}
	_, err = s.call(provision.AddressChallenge, nil)
	refused(t, err, provision.CodeTooMany, "challenges outstanding")
	// Expired challenges make room again.
	clk.advance(time.Minute)
	s.mustCall(provision.AddressChallenge, nil)

	// And a join within the lifetime succeeds.
	if err := provision.Decode(s.mustCall(provision.AddressChallenge, nil), &ch); err != nil {
		t.Fatal(err)
	}
	clk.advance(30 * time.Second)
	s.mustCall(provision.AddressJoin, s.joinRequest(allowed(), "analytics", key, ch.Nonce))
}
