package coordinator_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/coordinator"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
)

// Images built once by TestMain.
var coordImage, joinImage *enclave.Image

// testRoot is the simulation root of every node of the tests: it signs the
// evidence of their enclaves and of the joins the tests forge.
var testRoot *attest.SimulationRoot

// trustTestRoot is the coordinator configuration that trusts testRoot and
// the further simulation platform keys given, as a host hands it in Init.
func trustTestRoot(t testing.TB, others ...*ecdsa.PublicKey) []byte {
	t.Helper()
	c := coordinator.Config{}
	if err := c.TrustSimulationRoot(testRoot); err != nil {
		t.Fatal(err)
	}
	for _, k := range others {
		p, err := coordinator.EncodeSimPlatformKey(k)
		if err != nil {
			t.Fatal(err)
		}
		c.SimPlatformKeys = append(c.SimPlatformKeys, p)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, "coordinator-test-", func(ctx context.Context, dir string) (err error) {
		if testRoot, err = attest.NewEphemeralSimulationRoot(); err != nil {
			return err
		}
		const mod = "github.com/cloister-dev/cloister/coordinator/"
		if coordImage, err = enclave.Build(ctx, mod+"image", filepath.Join(dir, "coordinator.img"), enclave.BuildOptions{}); err != nil {
			return fmt.Errorf("building the coordinator image: %w", err)
		}
		if joinImage, err = enclave.Build(ctx, mod+"internal/joinimage", filepath.Join(dir, "join.img"), enclave.BuildOptions{}); err != nil {
			return fmt.Errorf("building the join image: %w", err)
		}
		return nil
	}))
}

// testLogger keeps test output quiet unless something goes wrong.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// system is one node hosting a coordinator (a real child process) on an
// in-process bus.
type system struct {
	t     testing.TB
	b     *bus.Bus
	n     *node.Node
	base  string // the test's directory
	state string
	owner ed25519.PrivateKey
	hash  [32]byte // of the manifest last set with setManifest
}

func newSystem(t testing.TB) *system {
	t.Helper()
	// Directories first: cleanups run last-in first-out, and the node must
	// stop before its enclaves' directories go.
	base := stateDir(t)
	b, n := newNode(t)
	_, owner, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := &system{t: t, b: b, n: n, base: base, state: filepath.Join(base, "coordinator"), owner: owner}
	s.deployCoordinator()
	return s
}

// deployCoordinator hosts the coordinator image on s.n, with its state in
// s.state.
func (s *system) deployCoordinator() {
	s.t.Helper()
	if _, err := s.n.DeployEnclave(context.Background(), node.EnclaveConfig{
		Name: "coordinator", Image: coordImage.Path, StateDir: s.state, InitConfig: trustTestRoot(s.t),
		RestartBackoff: 20 * time.Millisecond, MaxRestartBackoff: 200 * time.Millisecond,
	}); err != nil {
		s.t.Fatal(err)
	}
}

// stateDir returns a directory for enclave state, removed when the test
// ends. Unlike t.TempDir it does not fail the test if a file appears while
// it is removed: an enclave stopping may still have its host store a last
// sealed blob.
func stateDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "coordinator-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.RemoveAll(dir) != nil {
			time.Sleep(100 * time.Millisecond)
			_ = os.RemoveAll(dir)
		}
	})
	return dir
}

// newNode returns a node on an in-process bus, shut down when the test
// ends.
func newNode(t testing.TB) (*bus.Bus, *node.Node) {
	t.Helper()
	b, err := bus.New(bus.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Options{Bus: b, Logger: testLogger(), Simulation: testRoot})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return b, n
}

// deployJoiner hosts the join image as service.
func (s *system) deployJoiner(service string) {
	s.t.Helper()
	if _, err := s.n.DeployEnclave(context.Background(), node.EnclaveConfig{
		Name: service, Image: joinImage.Path, StateDir: filepath.Join(s.base, service), Env: []string{"JOIN_SERVICE=" + service},
	}); err != nil {
		s.t.Fatal(err)
	}
}

// ownerKey is the owner's public key for a manifest.
func (s *system) ownerKey() string {
	return base64.StdEncoding.EncodeToString(s.owner.Public().(ed25519.PublicKey))
}

// manifestJSON is the canonical form of manifestSource's manifest: what the
// host hands the coordinator.
func (s *system) manifestJSON(version int, allowSim bool, measurement [32]byte) []byte {
	return parseManifest(s.t, s.manifestSource(version, allowSim, measurement)).Canonical()
}

// manifestSource is a manifest in which analytics runs as the join image,
// as its owner writes it (YAML).
func (s *system) manifestSource(version int, allowSim bool, measurement [32]byte) []byte {
	return fmt.Appendf(nil, `version: %d
owner:
  public_key: %s
policy:
  allow_simulation: %t
services:
  analytics:
    identities:
      - mrenclave: "%x"
    secrets:
      stats-key: {generate: 32}
      api-token: {value: "hex:00112233445566778899aabbccddeeff"}
  archive:
    identities:
      - mrenclave: "%x"
  ingest: {}
clients:
  meter-7: {public_key: %s}
addresses:
  analytics.echo:
    clients: true
    consume: [analytics]
  water.readings:
    secured: true
    consume: [analytics]
    send: [archive]
  water.stats:
    secured: true
    publish: [analytics]
    consume: [archive]
  water.alerts:
    publish: [analytics]
    consume: [ingest]
`, version, s.ownerKey(), allowSim, measurement[:], joinImage.Measurement[:],
		base64.StdEncoding.EncodeToString(testClient.Public().(ed25519.PublicKey)))
}

// testClient is the credential of the manifests' client "meter-7".
var testClient = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x7e}, ed25519.SeedSize))

func parseManifest(t testing.TB, y []byte) *manifest.Manifest {
	t.Helper()
	m, err := manifestyaml.Parse(y)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// call makes a provisioning request; a refusal is a *bus.ReplyError.
func (s *system) call(address string, v any) ([]byte, error) {
	var body []byte
	if v != nil {
		var err error
		if body, err = provision.Encode(v); err != nil {
			s.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := s.b.Request(ctx, address, body, bus.Timeout(30*time.Second))
	if err != nil {
		return nil, err
	}
	return m.Body(), nil
}

// mustCall is call that must succeed.
func (s *system) mustCall(address string, v any) []byte {
	s.t.Helper()
	b, err := s.call(address, v)
	if err != nil {
		s.t.Fatalf("%s: %v", address, err)
	}
	return b
}

// refused checks that err is a refusal with code whose message contains
// want.
func refused(t *testing.T, err error, code int, want string) {
	t.Helper()
	var re *bus.ReplyError
	if !errors.As(err, &re) || !errors.Is(err, bus.ErrRecipientFailure) {
		t.Fatalf("want a refusal (code %d, %q), got %v", code, want, err)
	}
	if re.Code != code || !strings.Contains(re.Message, want) {
		t.Fatalf("refusal: code %d %q; want code %d containing %q", re.Code, re.Message, code, want)
	}
}

func (s *system) status() provision.Status {
	s.t.Helper()
	var st provision.Status
	if err := json.Unmarshal(s.mustCall(provision.AddressStatus, nil), &st); err != nil {
		s.t.Fatal(err)
	}
	return st
}

func (s *system) setManifest(y []byte) {
	s.t.Helper()
	s.mustCall(provision.AddressManifestSet, provision.ManifestSet{Manifest: y})
	s.hash = parseManifest(s.t, y).Hash()
}

// joinAs joins from the test process as an enclave with identity id: a
// simulated quote signed by this run's platform key. It returns the
// joining key and nonce with the raw answer.
func (s *system) joinAs(id attest.SimIdentity, service string) (*secure.ServiceKey, []byte, []byte, error) {
	s.t.Helper()
	var ch provision.Challenge
	if err := provision.Decode(s.mustCall(provision.AddressChallenge, nil), &ch); err != nil {
		s.t.Fatal(err)
	}
	key, err := secure.NewServiceKey()
	if err != nil {
		s.t.Fatal(err)
	}
	req := s.joinRequest(id, service, key, ch.Nonce)
	resp, err := s.call(provision.AddressJoin, req)
	return key, ch.Nonce, resp, err
}

func (s *system) joinRequest(id attest.SimIdentity, service string, key *secure.ServiceKey, nonce []byte) provision.JoinRequest {
	s.t.Helper()
	ev, err := testRoot.Issuer(id).Issue(context.Background(), provision.JoinReportData(key.PublicKeyBytes(), nonce))
	if err != nil {
		s.t.Fatal(err)
	}
	evb, err := ev.MarshalBinary()
	if err != nil {
		s.t.Fatal(err)
	}
	return provision.JoinRequest{Service: service, PublicKey: key.PublicKeyBytes(), Nonce: nonce, Evidence: evb}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// newBenchSystem is a coordinator with the test manifest set.
func newBenchSystem(b *testing.B) *system {
	s := newSystem(b)
	s.setManifest(s.manifestJSON(1, true, joinImage.Measurement))
	return s
}
