package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/coordinator"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/internal/syncbuf"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
)

// Images built once by TestMain.
var (
	coordinatorImage *enclave.Image
	serviceImage     *enclave.Image
	// cloisterBin is the cloister command, for cloister tap.
	cloisterBin string
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, "cloister-e2e-", func(ctx context.Context, dir string) (err error) {
		if coordinatorImage, err = enclave.Build(ctx, "github.com/cloister-dev/cloister/coordinator/image", filepath.Join(dir, "coordinator.img"), enclave.BuildOptions{}); err != nil {
			return fmt.Errorf("building the coordinator image: %w", err)
		}
		if serviceImage, err = enclave.Build(ctx, "./internal/svcimage", filepath.Join(dir, "service.img"), enclave.BuildOptions{}); err != nil {
			return fmt.Errorf("building the service image: %w", err)
		}
		cloisterBin = filepath.Join(dir, "cloister")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", cloisterBin, "github.com/cloister-dev/cloister/cmd/cloister").CombinedOutput(); err != nil {
			return fmt.Errorf("building cloister: %w\n%s", err, out)
		}
		return nil
	}))
}

// logSink keeps every host log line of a world.
type logSink = syncbuf.Buffer

// sniffer records every message a raw NATS subscriber on ">" sees on one
// server.
type sniffer struct {
	nc   *nats.Conn
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (s *sniffer) all() []*nats.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*nats.Msg(nil), s.msgs...)
}

// world is a three-node cluster: node 0 hosts the coordinator, node 1
// alpha, node 2 beta; the test's client talks from node 0.
type world struct {
	t        testing.TB
	servers  []*cluster.Node
	nodes    []*node.Node
	sniffers []*sniffer
	logs     *logSink
	owner    ed25519.PrivateKey
	manifest string
	hash     [32]byte
	client   *client.Client
	deployed map[string]string      // enclave name → deployment ID
	state    string                 // protected storage of the enclaves
	tap      *logSink               // what cloister tap printed (nil: no tap)
	tester   ed25519.PrivateKey     // the credential of the manifest's client "tester"
	root     *attest.SimulationRoot // signs every node's simulated evidence, roots its seal keys
}

const manifestTemplate = `
version: %d
owner:
  public_key: %s
policy:
  allow_simulation: %t
services:
  alpha:
    identities: [{mrenclave: %s}]
  beta:
    identities: [{mrenclave: %s}]
  gamma:
    identities: [{mrenclave: "0000000000000000000000000000000000000000000000000000000000000001"}]
  tester: {}
clients:
  tester: {public_key: %s}
addresses:
  sec.echo:   {secured: true, consume: [alpha], send: [beta]}
  sec.news:   {secured: true, consume: [alpha], publish: [beta]}
  sec.jobs:   {secured: true, consume: [alpha], send: [beta]}
  plain.echo: {consume: [alpha], send: [beta]}
  alpha.ask:  {clients: true, consume: [alpha], send: [tester]}
  beta.ask:   {clients: true, consume: [beta, gamma], send: [tester]}
`

func (w *world) manifestText(version int, allowSim bool) string {
	m := hex.EncodeToString(serviceImage.Measurement[:])
	return fmt.Sprintf(manifestTemplate, version, base64.StdEncoding.EncodeToString(w.owner.Public().(ed25519.PublicKey)), allowSim, m, m,
		base64.StdEncoding.EncodeToString(w.tester.Public().(ed25519.PublicKey)))
}

func newWorld(t testing.TB, withTap bool) *world {
	t.Helper()
	w := &world{t: t, logs: &logSink{}, deployed: map[string]string{}}
	// Removed best effort: the host may still finish a store write of an
	// enclave that just stopped.
	var err error
	if w.state, err = os.MkdirTemp("", "cloister-e2e-state-"); err != nil {
		t.Fatal(err)
	}
	if w.root, err = attest.NewEphemeralSimulationRoot(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(w.state) })
	_, w.owner, _ = ed25519.GenerateKey(rand.Reader)
	_, w.tester, _ = ed25519.GenerateKey(rand.Reader)
	logger := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 3 {
		opts := cluster.Options{Name: fmt.Sprintf("e2e-%d", i), ClusterListen: "127.0.0.1:-1", NATSListen: "127.0.0.1:-1", Logger: logger}
		if i > 0 {
			opts.Routes = []string{w.servers[0].ClusterURL()}
		}
		s, err := cluster.Start(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		w.servers = append(w.servers, s)
	}
	testenv.WaitFor(w.t.Context(), w.t, "the cluster's routes", func() bool {
		for _, s := range w.servers {
			rz, err := s.Server().Routez(nil)
			if err != nil {
				return false
			}
			peers := map[string]bool{}
			for _, r := range rz.Routes {
				peers[r.RemoteID] = true
			}
			if len(peers) != len(w.servers)-1 {
				return false
			}
		}
		return true
	})
	// The eavesdropper: a raw subscriber on every subject of every server,
	// from before the first message to the end of the run.
	for _, s := range w.servers {
		sn := &sniffer{}
		nc, err := nats.Connect(s.ClientURL(), nats.Name("eavesdropper"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Subscribe(">", func(m *nats.Msg) {
			sn.mu.Lock()
			sn.msgs = append(sn.msgs, m)
			sn.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		sn.nc = nc
		t.Cleanup(nc.Close)
		w.sniffers = append(w.sniffers, sn)
	}
	if withTap {
		w.startTap(ctx, w.servers[1].ClientURL())
	}
	for i, s := range w.servers {
		tr, err := s.NewTransport(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := bus.New(bus.WithTransport(tr), bus.WithLogger(logger.With("node", i)))
		if err != nil {
			t.Fatal(err)
		}
		n, err := node.New(node.Options{Bus: b, Logger: logger.With("node", i), Simulation: w.root})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			n.Shutdown(ctx)
		})
		w.nodes = append(w.nodes, n)
	}

	if err := w.deploy(0, "coordinator", "", coordinatorImage); err != nil {
		t.Fatal(err)
	}
	w.manifest = w.manifestText(1, true)
	m0, err := manifestyaml.Parse([]byte(w.manifest))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := provision.Encode(provision.ManifestSet{Manifest: m0.Canonical()})
	m, err := w.nodes[0].Bus().Request(ctx, provision.AddressManifestSet, body)
	if err != nil {
		t.Fatal(err)
	}
	var st provision.Status
	if err := provision.Decode(m.Body(), &st); err != nil {
		t.Fatal(err)
	}
	h, _ := hex.DecodeString(st.ManifestHash)
	copy(w.hash[:], h)

	if err := w.deploy(1, "alpha", "alpha", serviceImage); err != nil {
		t.Fatal(err)
	}
	if err := w.deploy(2, "beta", "beta", serviceImage); err != nil {
		t.Fatal(err)
	}
	// The test is an outside client: it checks the coordinator's evidence
	// and the pinned manifest hash once, then seals to the services.
	w.client, err = client.Connect(ctx, w.nodes[0].Bus(), client.Options{
		CoordinatorPolicy: attest.Policy{MREnclaves: [][32]byte{coordinatorImage.Measurement}},
		ManifestHash:      w.hash, AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{w.root.PlatformPublicKey()}, Logger: logger,
		Credential: secure.Credential{Name: "tester", Key: w.tester},
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// deploy hosts image on node i as enclave name joining as service.
func (w *world) deploy(i int, name, service string, image *enclave.Image) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var init []byte
	if image == coordinatorImage { // it trusts the evidence the nodes' root signs
		var c coordinator.Config
		if err := c.TrustSimulationRoot(w.root); err != nil {
			return err
		}
		init, _ = json.Marshal(c)
	}
	id, err := w.nodes[i].DeployEnclave(ctx, node.EnclaveConfig{Name: name, Image: image.Path, Service: service,
		StateDir: filepath.Join(w.state, name), RestartBackoff: 20 * time.Millisecond, Workers: 40, InitConfig: init})
	if err == nil {
		w.deployed[name] = id
	}
	return err
}

// Op mirrors the service image's op.
type Op struct {
	Op       string `json:"op"`
	To       string `json:"to"`
	Body     string `json:"body,omitempty"`
	N        int    `json:"n,omitempty"`
	InFlight int    `json:"in_flight,omitempty"`
	Size     int    `json:"size,omitempty"`
}

// ask sends op to service over its client channel and returns the opened
// answer.
func (w *world) ask(service string, op Op) ([]byte, error) {
	b, _ := json.Marshal(op)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return w.client.Request(ctx, service+".ask", service, b, bus.Timeout(60*time.Second))
}

func (w *world) mustAsk(service string, op Op) []byte {
	w.t.Helper()
	b, err := w.ask(service, op)
	if err != nil {
		w.t.Fatalf("%s %s %s: %v", service, op.Op, op.To, err)
	}
	return b
}

// seen returns how often alpha's handler of address ran, and its last body.
func (w *world) seen(address string) (int, string) {
	w.t.Helper()
	var s struct {
		Count int    `json:"count"`
		Last  string `json:"last"`
	}
	if err := json.Unmarshal(w.mustAsk("alpha", Op{Op: "last", To: address}), &s); err != nil {
		w.t.Fatal(err)
	}
	return s.Count, s.Last
}

// rejected returns alpha's rejection count on address for reason.
func (w *world) rejected(address, reason string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return w.nodes[1].EnclaveRejections(ctx)["alpha/0"][address][reason]
}

// captured returns the messages the eavesdropper saw on subject.
func (w *world) captured(subject string) []*nats.Msg {
	var out []*nats.Msg
	seen := map[string]bool{}
	for _, s := range w.sniffers {
		for _, m := range s.all() {
			if m.Subject == subject && !seen[string(m.Data)] {
				seen[string(m.Data)] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// inject publishes a raw NATS message from an unauthenticated client
// connected to server i.
func (w *world) inject(i int, subject string, header nats.Header, data []byte) {
	w.t.Helper()
	nc, err := nats.Connect(w.servers[i].ClientURL(), nats.Name("forger"))
	if err != nil {
		w.t.Fatal(err)
	}
	defer nc.Close()
	m := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: data}
	for k, v := range header {
		m.Header[k] = append([]string(nil), v...)
	}
	if err := nc.PublishMsg(m); err != nil {
		w.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		w.t.Fatal(err)
	}
}

func newMarker() string {
	var b [16]byte
	rand.Read(b[:])
	return "CLOISTER-MARKER-" + hex.EncodeToString(b[:])
}

// startTap runs cloister tap, the command-line eavesdropper, against the
// server at url, printing whole bodies, until the test ends.
func (w *world) startTap(ctx context.Context, url string) {
	t := w.t
	t.Helper()
	w.tap = &logSink{}
	cmd := exec.Command(cloisterBin, "tap", "--servers", url, "--max-body", "0")
	cmd.Stdout = w.tap
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan error, 1)
	go func() {
		var seen bytes.Buffer
		buf := make([]byte, 4096)
		for {
			n, err := stderr.Read(buf)
			seen.Write(buf[:n])
			if bytes.Contains(seen.Bytes(), []byte("listening")) {
				ready <- nil
				io.Copy(io.Discard, stderr)
				return
			}
			if err != nil {
				ready <- fmt.Errorf("cloister tap ended before listening: %v: %s", err, seen.String())
				return
			}
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("cloister tap did not start listening")
	}
}

// pid returns the process ID of enclave name on node i.
func (w *world) pid(i int, name string) int {
	w.t.Helper()
	for _, e := range w.nodes[i].Enclaves() {
		if e.Name == name && e.PID != 0 {
			return e.PID
		}
	}
	w.t.Fatalf("no process for enclave %s on node %d", name, i)
	return 0
}
