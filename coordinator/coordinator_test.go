package coordinator_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/coordinator"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted/secured"
)

func TestManifestSetOnceThenSignedUpdates(t *testing.T) {
	s := newSystem(t)
	_, err := s.call(provision.AddressJoin, provision.JoinRequest{Service: "analytics", PublicKey: []byte{0, 32}, Nonce: make([]byte, 32), Evidence: []byte("x")})
	refused(t, err, provision.CodeBadRequest, "public key")
	if st := s.status(); st.ManifestSet || st.Epoch != 1 || st.EvidenceType != "simulated" || st.Measurement != coordImage.Measurement.String() {
		t.Fatalf("fresh coordinator: %+v", st)
	}
	_, err = s.call(provision.AddressAttest, provision.AttestRequest{Nonce: make([]byte, 32)})
	refused(t, err, provision.CodeNoManifest, "no manifest")

	v1y := s.manifestJSON(1, true, joinImage.Measurement)
	v1 := parseManifest(t, v1y)
	s.setManifest(v1y)
	if st := s.status(); !st.ManifestSet || st.ManifestHash != v1.HashHex() || st.ManifestVersion != 1 {
		t.Fatalf("after set: %+v", st)
	}
	// A second set is refused, even of another manifest.
	v2y := s.manifestJSON(2, true, joinImage.Measurement)
	v2 := parseManifest(t, v2y)
	_, err = s.call(provision.AddressManifestSet, provision.ManifestSet{Manifest: v2y})
	refused(t, err, provision.CodeConflict, "already set")
	_, err = s.call(provision.AddressManifestSet, provision.ManifestSet{Manifest: []byte(`{"version":0}`)})
	refused(t, err, provision.CodeBadRequest, "version")
	// Only the canonical JSON form: the coordinator links no YAML parser.
	_, err = s.call(provision.AddressManifestSet, provision.ManifestSet{Manifest: s.manifestSource(2, true, joinImage.Measurement)})
	refused(t, err, provision.CodeBadRequest, "not valid JSON")

	// Unsigned, signed by someone else, or not newer: refused.
	_, err = s.call(provision.AddressManifestUpdate, provision.ManifestUpdate{Manifest: v2y})
	refused(t, err, provision.CodeUnauthorized, "not signed")
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	sig, err := manifest.SignUpdate(stranger, v1, v2)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.call(provision.AddressManifestUpdate, provision.ManifestUpdate{Manifest: v2y, Signature: sig})
	refused(t, err, provision.CodeUnauthorized, "signature")
	same, _ := manifest.SignUpdate(s.owner, v1, v1)
	_, err = s.call(provision.AddressManifestUpdate, provision.ManifestUpdate{Manifest: v1y, Signature: same})
	refused(t, err, provision.CodeConflict, "not higher")

	sig, _ = manifest.SignUpdate(s.owner, v1, v2)
	s.mustCall(provision.AddressManifestUpdate, provision.ManifestUpdate{Manifest: v2y, Signature: sig})
	if st := s.status(); st.ManifestHash != v2.HashHex() || st.ManifestVersion != 2 {
		t.Fatalf("after update: %+v", st)
	}
	// Going back to version 1, even properly signed, is refused.
	back, _ := manifest.SignUpdate(s.owner, v2, v1)
	_, err = s.call(provision.AddressManifestUpdate, provision.ManifestUpdate{Manifest: v1y, Signature: back})
	refused(t, err, provision.CodeConflict, "not higher")
	if st := s.status(); st.ManifestVersion != 2 {
		t.Fatalf("a refused update changed the state: %+v", st)
	}
}

// allowed is the identity the test process claims when it joins as
// analytics: the join image's measurement.
func allowed() attest.SimIdentity {
	return attest.SimIdentity{MREnclave: joinImage.Measurement, MRSigner: enclave32("signer"), ProductID: 1}
}

func enclave32(s string) [32]byte {
	var b [32]byte
	copy(b[:], s)
	return b
}

func TestJoinGrantsOnlyToTheJoiningKey(t *testing.T) {
	s := newSystem(t)
	y := s.manifestJSON(1, true, joinImage.Measurement)
	m := parseManifest(t, y)
	s.setManifest(y)

	key, nonce, resp, err := s.joinAs(allowed(), "analytics")
	if err != nil {
		t.Fatal(err)
	}
	g, err := secured.OpenGrant(key, "analytics", nonce, resp)
	if err != nil {
		t.Fatal(err)
	}
	hash := m.Hash()
	if g.Service != "analytics" || !bytes.Equal(g.ManifestHash, hash[:]) || g.Epoch != 1 || g.ManifestVersion != 1 {
		t.Fatalf("grant: %+v", g)
	}
	var addrs []string
	for _, a := range g.Addresses {
		addrs = append(addrs, a.Address)
		switch a.Address {
		case "water.readings":
			if !a.Secured || !a.Consume || a.Send || len(a.Keys) != 1 || a.Keys[0].Epoch != 1 || len(a.Keys[0].Key) != secure.KeySize {
				t.Errorf("water.readings: %+v", a)
			}
		case "water.alerts":
			if a.Secured || !a.Publish || len(a.Keys) != 0 {
				t.Errorf("water.alerts: %+v", a)
			}
		}
	}
	if !slices.Equal(addrs, []string{"analytics.echo", "water.alerts", "water.readings", "water.stats"}) {
		t.Fatalf("addresses %v", addrs)
	}
	// It consumes an address open to clients: the grant names them.
	if len(g.Clients) != 1 || !ed25519.PublicKey(g.Clients["meter-7"]).Equal(testClient.Public()) {
		t.Fatalf("grant's clients %v", g.Clients)
	}
	if len(g.Secrets["stats-key"]) != 32 || hex.EncodeToString(g.Secrets["api-token"]) != "00112233445566778899aabbccddeeff" {
		t.Fatalf("secrets: %d-byte stats-key, api-token %x", len(g.Secrets["stats-key"]), g.Secrets["api-token"])
	}
	ck, err := secure.ParseServiceKey(g.ChannelKey)
	if err != nil {
		t.Fatal(err)
	}
	// The channel key matches the one the coordinator vouches for.
	var skr provision.ServiceKeyResponse
	if err := provision.Decode(s.mustCall(provision.AddressServiceKey, provision.ServiceKeyRequest{Service: "analytics"}), &skr); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(skr.PublicKey, ck.PublicKeyBytes()) {
		t.Fatal("the granted channel key is not the one the coordinator signs for")
	}

	// Any other key fails to open the grant, and so does another nonce or
	// service (the HPKE info binds both).
	other, _ := secure.NewServiceKey()
	if _, err := secured.OpenGrant(other, "analytics", nonce, resp); !errors.Is(err, secured.ErrGrant) {
		t.Fatalf("another key opened the grant: %v", err)
	}
	if _, err := secured.OpenGrant(key, "archive", nonce, resp); !errors.Is(err, secured.ErrGrant) {
		t.Fatalf("the grant opened as another service: %v", err)
	}

	// A second join as the same service gets the same keys.
	key2, nonce2, resp2, err := s.joinAs(allowed(), "analytics")
	if err != nil {
		t.Fatal(err)
	}
	g2, err := secured.OpenGrant(key2, "analytics", nonce2, resp2)
	if err != nil {
		t.Fatal(err)
	}
	if !equalJSON(g, g2) {
		t.Fatal("two joins of one service got different grants")
	}
	if st := s.status(); st.Joins != 2 {
		t.Fatalf("joins counted: %+v", st)
	}
}

func TestJoinRefusals(t *testing.T) {
	s := newSystem(t)
	v1y := s.manifestJSON(1, true, joinImage.Measurement)
	v1 := parseManifest(t, v1y)
	s.setManifest(v1y)

	// A measurement the manifest does not list.
	bad := allowed()
	bad.MREnclave = enclave32("some other image")
	_, _, _, err := s.joinAs(bad, "analytics")
	refused(t, err, provision.CodeRefused, hex.EncodeToString(bad.MREnclave[:])+" (signer")
	refused(t, err, provision.CodeRefused, "is not among the identities of service analytics")

	// Debug enclaves are refused unless the service allows them.
	dbg := allowed()
	dbg.Debug = true
	_, _, _, err = s.joinAs(dbg, "analytics")
	refused(t, err, provision.CodeRefused, "debug enclave refused")

	// Unknown and regular services.
	_, _, _, err = s.joinAs(allowed(), "nobody")
	refused(t, err, provision.CodeNotFound, `"nobody" is not in the manifest`)
	_, _, _, err = s.joinAs(allowed(), "ingest")
	refused(t, err, provision.CodeRefused, "regular service")

	// A replayed join: the nonce was spent by the first one.
	var ch provision.Challenge
	if err := provision.Decode(s.mustCall(provision.AddressChallenge, nil), &ch); err != nil {
		t.Fatal(err)
	}
	key, _ := secure.NewServiceKey()
	req := s.joinRequest(allowed(), "analytics", key, ch.Nonce)
	s.mustCall(provision.AddressJoin, req)
	_, err = s.call(provision.AddressJoin, req)
	refused(t, err, provision.CodeRefused, "already used")
	// A nonce the coordinator never issued.
	fresh := make([]byte, 32)
	rand.Read(fresh)
	_, err = s.call(provision.AddressJoin, s.joinRequest(allowed(), "analytics", key, fresh))
	refused(t, err, provision.CodeRefused, "not issued")

	// Evidence that binds another key than the one asking.
	if err := provision.Decode(s.mustCall(provision.AddressChallenge, nil), &ch); err != nil {
		t.Fatal(err)
	}
	req = s.joinRequest(allowed(), "analytics", key, ch.Nonce)
	other, _ := secure.NewServiceKey()
	req.PublicKey = other.PublicKeyBytes()
	_, err = s.call(provision.AddressJoin, req)
	refused(t, err, provision.CodeRefused, "does not bind the joining key")

	// The owner forbids simulation: simulated evidence is refused.
	v2y := s.manifestJSON(2, false, joinImage.Measurement)
	sig, _ := manifest.SignUpdate(s.owner, v1, parseManifest(t, v2y))
	s.mustCall(provision.AddressManifestUpdate, provision.ManifestUpdate{Manifest: v2y, Signature: sig})
	_, _, _, err = s.joinAs(allowed(), "analytics")
	refused(t, err, provision.CodeRefused, "simulated evidence refused: the manifest forbids simulation")

	if st := s.status(); st.Refusals != 8 || st.Joins != 1 {
		t.Fatalf("counters: %+v", st)
	}
}

// summary is what the join image answers on <service>.join.
type summary struct {
	Service    string            `json:"service"`
	Epoch      uint32            `json:"epoch"`
	Keys       map[string]string `json:"keys"`
	Secrets    map[string]string `json:"secrets"`
	ChannelKey string            `json:"channel_key"`
	ChannelPub string            `json:"channel_pub"`
}

func (s *system) enclaveJoin(service string) summary {
	s.t.Helper()
	var sum summary
	if err := json.Unmarshal(s.mustCall(service+".join", nil), &sum); err != nil {
		s.t.Fatal(err)
	}
	return sum
}

func (s *system) coordinatorPID() int {
	for _, e := range s.n.Enclaves() {
		if e.Name == "coordinator" {
			return e.PID
		}
	}
	return 0
}

func connect(s *system, hash [32]byte) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return client.Connect(ctx, s.b, client.Options{
		CoordinatorPolicy: attest.Policy{MREnclaves: [][32]byte{coordImage.Measurement}},
		ManifestHash:      hash, AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{testRoot.PlatformPublicKey()}, Logger: testLogger(),
		Credential: secure.Credential{Name: "meter-7", Key: testClient},
	})
}

// TestRestartKeepsKeysAndRotation runs real enclaves: the join image joins
// as analytics, the coordinator is SIGKILLed and restarted by its
// supervisor, and everything derived before is derived again; then a
// rotation starts epoch 2 with epoch 1 still in the grant.
func TestRestartKeepsKeysAndRotation(t *testing.T) {
	s := newSystem(t)
	y := s.manifestJSON(1, true, joinImage.Measurement)
	m := parseManifest(t, y)
	s.setManifest(y)
	s.deployJoiner("analytics")

	before := s.enclaveJoin("analytics")
	if before.Service != "analytics" || before.Epoch != 1 || before.Keys["water.readings/1"] == "" || before.ChannelPub == "" || len(before.Secrets) != 2 {
		t.Fatalf("join from the enclave: %+v", before)
	}
	c, err := connect(s, m.Hash())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	out, err := c.Request(ctx, "analytics.echo", "analytics", []byte("reading 42"))
	if err != nil || string(out) != "echo: reading 42" {
		t.Fatalf("secure request: %q, %v", out, err)
	}

	pid := s.coordinatorPID()
	if pid == 0 {
		t.Fatal("no coordinator process")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t.Context(), t, "coordinator restarted", func() error {
		if p := s.coordinatorPID(); p == 0 || p == pid {
			return errors.New("not yet")
		}
		_, err := s.call(provision.AddressStatus, nil)
		return err
	})
	// (The counters are written in the background: a crash may lose the
	// last few, so they are not checked here.)
	if st := s.status(); !st.ManifestSet || st.ManifestHash != m.HashHex() {
		t.Fatalf("state after the restart: %+v", st)
	}
	after := s.enclaveJoin("analytics")
	if !equalJSON(before, after) {
		t.Fatalf("keys changed over the restart:\n%+v\n%+v", before, after)
	}
	// The client's cached key and a freshly verified client both work.
	if out, err = c.Request(ctx, "analytics.echo", "analytics", []byte("after")); err != nil || string(out) != "echo: after" {
		t.Fatalf("secure request after the restart: %q, %v", out, err)
	}
	c2, err := connect(s, m.Hash())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(c2.SigningKey(), nil) || !bytes.Equal(c2.SigningKey(), c.SigningKey()) {
		t.Fatal("the coordinator's signing key changed over the restart")
	}

	// Rotation: signed by the owner, next epoch, grace period.
	rot := func(next uint32, grace string, key ed25519.PrivateKey) error {
		h := m.Hash()
		sig := ed25519.Sign(key, provision.RotateMessage(h[:], next, grace))
		_, err := s.call(provision.AddressRotate, provision.RotateRequest{NextEpoch: next, Grace: grace, Signature: sig})
		return err
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	refused(t, rot(2, "1h", stranger), provision.CodeUnauthorized, "signature")
	refused(t, rot(3, "1h", s.owner), provision.CodeConflict, "the next is 2")
	// A signature over another grace period does not carry over.
	h := m.Hash()
	sig := ed25519.Sign(s.owner, provision.RotateMessage(h[:], 2, "1h"))
	_, err = s.call(provision.AddressRotate, provision.RotateRequest{NextEpoch: 2, Grace: "720h", Signature: sig})
	refused(t, err, provision.CodeUnauthorized, "signature")
	notices := make(chan provision.EpochNotice, 4)
	if _, err := s.b.Consumer(provision.AddressEpoch, bus.HandlerFunc(func(_ context.Context, m *bus.Message) {
		var n provision.EpochNotice
		if provision.Decode(m.Body(), &n) == nil {
			notices <- n
		}
	})); err != nil {
		t.Fatal(err)
	}
	if err := rot(2, "1h", s.owner); err != nil {
		t.Fatal(err)
	}
	if n := <-notices; n.Epoch != 2 || !bytes.Equal(n.ManifestHash, h[:]) {
		t.Fatalf("epoch notice %+v", n)
	}
	st := s.status()
	if st.Epoch != 2 || st.GraceUntil.IsZero() {
		t.Fatalf("after rotation: %+v", st)
	}
	rotated := s.enclaveJoin("analytics")
	if rotated.Epoch != 2 || rotated.Keys["water.readings/1"] != before.Keys["water.readings/1"] ||
		rotated.Keys["water.readings/2"] == "" || rotated.Keys["water.readings/2"] == before.Keys["water.readings/1"] {
		t.Fatalf("grant after rotation: %+v (before %+v)", rotated, before)
	}
	if rotated.ChannelPub != before.ChannelPub {
		t.Fatal("rotation changed the channel key")
	}
	if err := rot(3, "0s", s.owner); err != nil {
		t.Fatal(err)
	}
	if third := s.enclaveJoin("analytics"); third.Epoch != 3 || len(third.Keys) != 2 || third.Keys["water.readings/2"] != "" {
		t.Fatalf("after a rotation without grace the old epoch must be gone: %+v", third)
	}
}

func TestClientRefusesWrongManifestHash(t *testing.T) {
	s := newSystem(t)
	y := s.manifestJSON(1, true, joinImage.Measurement)
	m := parseManifest(t, y)
	s.setManifest(y)
	wrong := m.Hash()
	wrong[0] ^= 1
	_, err := connect(s, wrong)
	var mm *client.ManifestMismatchError
	if !errors.Is(err, client.ErrManifestMismatch) || !errors.As(err, &mm) || !errors.Is(err, client.ErrUntrusted) {
		t.Fatalf("wrong manifest hash: %v", err)
	}
	// The right hash, but a policy for another image.
	ctx := context.Background()
	_, err = client.Connect(ctx, s.b, client.Options{
		CoordinatorPolicy: attest.Policy{MREnclaves: [][32]byte{joinImage.Measurement}},
		ManifestHash:      m.Hash(), AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{testRoot.PlatformPublicKey()}, Logger: testLogger(),
	})
	var ue *client.UntrustedError
	if !errors.As(err, &ue) || ue.Check != "policy" {
		t.Fatalf("wrong coordinator image: %v", err)
	}
	// Simulated evidence without AllowSimulation.
	_, err = client.Connect(ctx, s.b, client.Options{
		CoordinatorPolicy: attest.Policy{MREnclaves: [][32]byte{coordImage.Measurement}}, ManifestHash: m.Hash(),
	})
	if !errors.As(err, &ue) || ue.Check != "evidence" {
		t.Fatalf("simulated coordinator accepted without AllowSimulation: %v", err)
	}
	c, err := connect(s, m.Hash())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ServiceKey(ctx, "ingest"); err == nil {
		t.Fatal("a regular service has a channel key")
	}
}

// TestChallengeFloodThenJoin: any bus client may ask for challenges; a
// flood of them (more than the coordinator would ever remember) costs it
// nothing, and a genuine join right after succeeds.
func TestChallengeFloodThenJoin(t *testing.T) {
	s := newSystem(t)
	s.setManifest(s.manifestJSON(1, true, joinImage.Measurement))
	const flood = coordinator.DefaultMaxChallenges + 904
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < flood; i += 8 {
				if _, err := s.call(provision.AddressChallenge, nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("challenge during the flood: %v", err)
	}
	if _, _, _, err := s.joinAs(allowed(), "analytics"); err != nil {
		t.Fatalf("join after %d challenge requests: %v", flood, err)
	}
}
