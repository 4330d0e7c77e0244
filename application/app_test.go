package application

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/internal/syncbuf"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/secure"
)

func TestParseConfigErrorsNameFieldAndLine(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown field", "name: a\nnodez: []\n", "line 2"},
		{"no name", "images: {}\n", "name: a name is needed"},
		{"image both", "name: a\nimages:\n  v:\n    package: ./v\n    file: v.img\n", "images.v (line 4): give exactly one"},
		{"bad backend", "name: a\nimages:\n  v:\n    package: ./v\n    backend: sgx2\n", "images.v.backend (line 5)"},
		{"unknown consumer", "name: a\naddresses:\n  x.y:\n    consume: [nobody]\n", "addresses.x.y.consume[0]"},
		{"go service needs program", "name: a\nservices:\n  front: {}\n", "services.front (line 3): a Go service"},
		{"secured without image", "name: a\nservices:\n  s: {command: [true]}\naddresses:\n  x: {secured: true, consume: [s]}\n", "needs an image"},
		{"second document", "name: a\n---\nname: b\n", "line 2"},
		{"wrong type", "name: a\nack_wait: [1]\n", "line 2"},
		{"unplaced", "name: a\nservices:\n  s: {command: [true]}\nnodes:\n  - {name: n1, cluster_listen: 127.0.0.1:-1}\n  - {name: n2, cluster_listen: 127.0.0.1:-1}\n", "s is not placed"},
		{"placed twice", "name: a\nservices:\n  s: {command: [true]}\nnodes:\n  - {name: n1, run: [s], cluster_listen: 127.0.0.1:-1}\n  - {name: n2, run: [s], cluster_listen: 127.0.0.1:-1}\n", "nodes[1].run[0] (line 6)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrConfig mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseConfigPlacesEverythingOnTheOnlyNode(t *testing.T) {
	c, err := ParseConfig([]byte("name: a\nprogram: .\nimages:\n  v: {package: ./v}\nservices:\n  s: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if n := c.Nodes[0]; n.Name != "n1" || !n.Coordinator || strings.Join(n.Run, ",") != "v,s" {
		t.Fatalf("node %+v", n)
	}
}

// greeter is a Go service: it answers greet.hello and keeps what reaches
// the durable address orders.
type greeter struct {
	mu     sync.Mutex
	orders []string
}

func (g *greeter) Start(ctx context.Context, inst *node.Instance) error {
	if _, err := inst.Consumer("greet.hello", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		m.Reply("hello, " + string(m.Body()))
	})); err != nil {
		return err
	}
	_, err := inst.Consumer("orders", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.orders = append(g.orders, string(m.Body()))
	}))
	return err
}

func (g *greeter) Stop(ctx context.Context) error { return nil }

func (g *greeter) got() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.orders...)
}

// TestStartRunsEveryKindOfService starts an application with a trusted
// image on a client-facing address, a Go service, a supervised command and
// a durable address, and uses each the way a user would.
func TestStartRunsEveryKindOfService(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images")
	}
	dir := t.TempDir()
	root, _ := filepath.Abs("..")
	desc := `name: demo
program: .
state_dir: state
images:
  counter: {package: ` + root + `/examples/counter/secured}
services:
  front: {}
  ticker:
    command: [sh, -c, 'echo "$NATS_URL $CLOISTER_SERVICE" >> "$CLOISTER_STATE_DIR/runs"; echo started; exit 3']
addresses:
  counter.inc: {clients: true, consume: [counter]}
  greet.hello: {consume: [front]}
  orders: {durable: true, consume: [front], send: [front]}
clients:
  meter-7: {key_file: meter-7.pem}
`
	path := filepath.Join(dir, "app.yaml")
	if err := os.WriteFile(path, []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var out syncbuf.Buffer
	cfg.Out = &out
	g := &greeter{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, err := Start(ctx, cfg, GoService{Name: "front", New: func() node.Service { return g }})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	defer a.Stop(context.Background())

	// The Go service answers.
	m, err := a.Bus().Request(ctx, "greet.hello", "ada", bus.Timeout(10*time.Second))
	if err != nil {
		t.Fatalf("greet.hello: %v", err)
	}
	var hello string
	if err := m.Decode(&hello); err != nil || hello != "hello, ada" {
		t.Fatalf("greet.hello: %v %q", err, m.Body())
	}

	// A plain send to the durable address is durable: the address says so.
	if err := a.Bus().Send(ctx, "orders", "o-1"); err != nil {
		t.Fatal(err)
	}
	for len(g.got()) == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the durable send never arrived")
		case <-time.After(50 * time.Millisecond):
		}
	}
	stats, err := a.Bus().Transport().(bus.DurableReporter).DurableStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := stats["orders"]; !ok {
		t.Fatalf("orders is not durable on the node: %v", stats)
	}

	// An outside client that verified the coordinator and proved its key
	// calls the trusted image.
	key, err := LoadOrCreateKey(filepath.Join(dir, "meter-7.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.Connect(ctx, a.Bus(), client.Options{
		CoordinatorPolicy: attest.Policy{MREnclaves: [][32]byte{a.CoordinatorImage().Measurement}},
		ManifestHash:      a.Manifest().Hash(), AllowSimulation: true,
		SimPlatformKeys: []*ecdsa.PublicKey{a.Simulation().PlatformPublicKey()},
		Credential:      secure.Credential{Name: "meter-7", Key: key},
	})
	if err != nil {
		t.Fatal(err)
	}
	reply, err := cl.Request(ctx, "counter.inc", "counter", []byte("alice"), bus.Timeout(10*time.Second))
	if err != nil || string(reply) != "1" {
		t.Fatalf("counter.inc: %v %q", err, reply)
	}
	// The address takes nothing else.
	if _, err := a.Bus().Request(ctx, "counter.inc", []byte("alice"), bus.Timeout(10*time.Second)); err == nil {
		t.Fatal("a plain request to a client-facing address was served")
	}

	// The command was started with its bus and restarted after it exited.
	runs := filepath.Join(a.StateDir(), "services", "ticker", "runs")
	for {
		b, _ := os.ReadFile(runs)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) >= 2 {
			if !strings.HasPrefix(lines[0], "nats://") || !strings.HasSuffix(lines[0], " ticker") {
				t.Fatalf("command environment: %q", lines[0])
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the command was not restarted: %q", b)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !strings.Contains(out.String(), "ticker | started") {
		t.Errorf("the command's output is not shown:\n%s", out.String())
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestStartRefusesMissingGoService(t *testing.T) {
	cfg, err := ParseConfig([]byte("name: a\nprogram: .\nservices:\n  front: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), `"front" runs on node n1 but was not given`) {
		t.Fatalf("got %v", err)
	}
}

// FuzzParseConfig: no description makes the parser panic, and whatever it
// accepts it accepts again after Check.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		"name: a\n",
		"name: a\nprogram: .\nimages:\n  v: {package: ./v}\nservices:\n  s: {}\naddresses:\n  x: {secured: true, clients: true, consume: [v]}\nclients:\n  c: {key_file: c.pem}\n",
		"name: a\nservices:\n  s: {command: [true]}\nnodes:\n  - {name: n1, run: [s], cluster_listen: 127.0.0.1:-1}\n  - {name: n2, cluster_listen: 127.0.0.1:-1, routes: [n1]}\n",
		"name: a\n---\nname: b\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := ParseConfig(raw)
		if err != nil {
			return
		}
		if err := c.Check(); err != nil {
			t.Fatalf("accepted, then refused on Check: %v", err)
		}
	})
}

// TestNodeJoinsExternalServers: a node with servers: joins an external
// NATS (with JetStream) rather than embedding one, its Go services serve
// there, and its commands are pointed at it.
func TestNodeJoinsExternalServers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ext, err := cluster.Start(ctx, cluster.Options{Name: "external", NATSListen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	dir := t.TempDir()
	cfg, err := ParseConfig([]byte(`name: ext
program: .
state_dir: ` + dir + `
nodes:
  - name: n1
    servers: [` + ext.ClientURL() + `]
services:
  front: {}
  probe: {command: [sh, -c, 'echo "$NATS_URL" > "$CLOISTER_STATE_DIR/url"; exec sleep 600']}
addresses:
  greet.hello: {consume: [front]}
  orders: {durable: true, consume: [front]}
`))
	if err != nil {
		t.Fatal(err)
	}
	a, err := Start(ctx, cfg, GoService{Name: "front", New: func() node.Service { return &greeter{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	if a.NATSURL() != ext.ClientURL() {
		t.Errorf("NATS URL %q, want the external %q", a.NATSURL(), ext.ClientURL())
	}
	// A bus of the external server's own reaches the node's service.
	b, err := bus.New(bus.WithTransport(ext.Transport()))
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Request(ctx, "greet.hello", []byte("ada"), bus.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var hello string
	if err := m.Decode(&hello); err != nil || hello != "hello, ada" {
		t.Fatalf("greet.hello: %q %v", m.Body(), err)
	}
	for {
		got, _ := os.ReadFile(filepath.Join(dir, "services", "probe", "url"))
		if strings.TrimSpace(string(got)) == ext.ClientURL() {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the command got NATS_URL %q", got)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestPackageDocExample: the description in the package documentation
// parses and gives a valid manifest.
func TestPackageDocExample(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var yml strings.Builder
	for _, line := range strings.Split(string(doc), "\n") {
		if rest, ok := strings.CutPrefix(line, "//\t"); ok {
			if strings.HasPrefix(rest, "func ") {
				break
			}
			yml.WriteString(rest + "\n")
		}
	}
	cfg, err := ParseConfig([]byte(yml.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, yml.String())
	}
	var m enclave.Measurement
	m[0] = 0xab
	if _, _, err := cfg.Manifest(Measurements{Coordinator: m, Images: map[string]enclave.Measurement{"vault": m}}, nil, nil); err != nil {
		t.Fatal(err)
	}
}
