package application

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/node"
)

// Config is an application description (an app.yaml) and how to run it.
type Config struct {
	// Name names the application (required): logs, NATS server names.
	Name string `yaml:"name"`
	// Program is the Go main package (relative to the description's
	// directory, e.g. "." or "./cmd/myapp") that runs this application with
	// its Go services: `cloister run` runs it (go run PROGRAM APP.yaml)
	// rather than the application itself. Required when Services declares a
	// Go service.
	Program string `yaml:"program"`
	// StateDir keeps everything that must survive a restart: JetStream,
	// the images built, the coordinator's sealed keys and manifest, the
	// enclaves' protected storage, client keys made here; relative to the
	// description's directory. Empty: a temporary directory removed at
	// Stop.
	StateDir string `yaml:"state_dir"`
	// AckWait is how long a message to a durable address may stay
	// unacknowledged before JetStream delivers it again (default 10s).
	AckWait time.Duration `yaml:"ack_wait"`
	// CoordinatorImage is a prebuilt coordinator image file; empty: the
	// coordinator is built from Cloister's coordinator/image package.
	CoordinatorImage string `yaml:"coordinator_image"`
	// Coordinator turns on freshness: replicas of the coordinator that
	// refuse rolled-back sealed state. Off when absent.
	Coordinator Coordinator `yaml:"coordinator"`
	// RestartBackoff and MaxRestartBackoff are the enclave supervisor's
	// first and longest delay before restarting an enclave that stopped
	// (the coordinator's and, unless they set their own, every image's;
	// enclave package defaults when zero).
	RestartBackoff    time.Duration `yaml:"restart_backoff"`
	MaxRestartBackoff time.Duration `yaml:"max_restart_backoff"`
	// Nodes are the nodes and what each runs.
	Nodes []Node `yaml:"nodes"`
	// Images are the trusted services: enclave images by name (the name is
	// the service's name in the manifest).
	Images map[string]Image `yaml:"images"`
	// Services are the regular services by name.
	Services map[string]Service `yaml:"services"`
	// Addresses declares the addresses whose properties matter: who may
	// consume, send and publish, whether they are secured, open to outside
	// clients, durable. The manifest is generated from them.
	Addresses map[string]Address `yaml:"addresses"`
	// Clients are the outside clients the manifest names.
	Clients map[string]Client `yaml:"clients"`

	// NoCoordinator runs the images without a coordinator or manifest
	// (images that attest themselves to their callers).
	NoCoordinator bool `yaml:"-"`
	// Metrics is the host:port of the first node's operations endpoint
	// (Prometheus /metrics, /healthz, /readyz); the next nodes of this
	// process take the next ports, or free ports when the port is 0.
	// Empty: none.
	Metrics string `yaml:"-"`
	// TraceEndpoint is an OTLP/HTTP traces URL every node of this process
	// exports its message spans to; empty: no tracing.
	TraceEndpoint string `yaml:"-"`
	// Dir is the description's directory: relative paths and Go packages
	// are resolved from it (LoadConfig sets it; default the working
	// directory).
	Dir string `yaml:"-"`
	// Recover lets a start end a lost quorum of coordinator replicas by
	// itself: it signs, with the owner key of the state directory, a
	// recovery statement that continues from the state on disk, and says
	// so loudly. Without it, a start whose replicas lost their quorum waits
	// for the owner's statement ('cloister coordinator recover').
	Recover bool `yaml:"-"`
	// Only starts just the named node (the others run in other processes);
	// empty starts them all.
	Only string `yaml:"-"`
	// Simulation is the simulation trust root of this process's nodes: it
	// signs their enclaves' simulated evidence, roots their simulated seal
	// keys, and is what the coordinator trusts. The nodes of one
	// application in several processes need the same root. Nil: this
	// machine's root, kept in DefaultSimulationDir.
	Simulation *attest.SimulationRoot `yaml:"-"`
	// Out receives what a person running the application reads: images
	// built, measurements, the manifest hash, the NATS URL (nil: nothing).
	Out io.Writer `yaml:"-"`
	// Logger receives the nodes' and services' logs (default: warnings on
	// stderr).
	Logger *slog.Logger `yaml:"-"`
}

// Node is one node: an embedded NATS server (with JetStream) and the
// images and services placed on it.
type Node struct {
	// Name names the node (required, unique).
	Name string `yaml:"name"`
	// NATSListen is where NATS clients connect (default 127.0.0.1 on a free
	// port).
	NATSListen string `yaml:"nats_listen"`
	// ClusterListen and Routes join the nodes into one NATS cluster; a
	// route may name another node of the description.
	ClusterListen string   `yaml:"cluster_listen"`
	Routes        []string `yaml:"routes"`
	// Servers are the URLs of an external NATS cluster (with JetStream,
	// for durable addresses) the node joins instead of embedding a server;
	// Credentials is its NATS credentials (.creds) file, relative to the
	// description's directory. Commands on the node get both.
	Servers     []string `yaml:"servers"`
	Credentials string   `yaml:"credentials"`
	// Run lists the images and services placed on this node. With one node
	// everything unplaced runs on it.
	Run []string `yaml:"run"`
	// Coordinator places the coordinator on this node (default: the first
	// node that runs an image). With freshness, one replica runs on each
	// node so marked (default: the nodes that run images, then the others,
	// in order, as many as there are replicas).
	Coordinator bool `yaml:"coordinator"`
}

// Coordinator is the description's coordinator section: freshness (rollback
// protection of sealed state) and the replicas that provide it.
//
//	coordinator:
//	  freshness: true   # default false: the host can roll sealed state back
//	  replicas: 3       # default 3 with three nodes or more, else 1
//	  checkpoint: 1s    # default 1s; 0s registers every write
//
// With freshness, the generated manifest declares it (and names the
// application's owner key, OwnerKeyFile in the state directory: only the
// owner can end a lost quorum), and the coordinator runs as Replicas
// replicas, slot k on the k-th coordinator node. Without it the manifest is
// what it was before the section existed, so existing state keeps opening.
type Coordinator struct {
	// Freshness turns rollback protection on.
	Freshness bool `yaml:"freshness"`
	// Replicas is the number of coordinator replicas (1 to
	// manifest.MaxReplicas); a quorum is Replicas/2+1 of them. With one
	// node they all run on it; otherwise each on its own node.
	Replicas int `yaml:"replicas"`
	// Checkpoint is the longest time a service's writes may go
	// unregistered with the replicas; a rollback can undo at most the
	// writes of one interval. 0 registers every batch of writes before
	// its replies leave the enclave.
	Checkpoint *time.Duration `yaml:"checkpoint"`
}

// DefaultCheckpoint is the checkpoint interval when freshness is on and
// the description names none.
const DefaultCheckpoint = time.Second

// Image is a trusted service: an enclave image built from a Go package or
// given as a prebuilt file.
type Image struct {
	// Package is the image's main package: relative ("./enclave") to the
	// description's directory, or an import path of the user's module or of
	// Cloister. Exactly one of Package and File.
	Package string `yaml:"package"`
	// File is a prebuilt image (with its .meta.json beside it).
	File string `yaml:"file"`
	// Instances is how many enclave instances run (default 1).
	Instances int `yaml:"instances"`
	// Workers is the handler concurrency asked of each instance.
	Workers int `yaml:"workers"`
	// Backend is "process" (default: simulated evidence) or "gramine".
	Backend string `yaml:"backend"`
	// Env is extra environment for the image ("KEY=VALUE").
	Env []string `yaml:"env"`
	// Serves limits the addresses the image may serve (exact addresses or
	// patterns: "*" one segment, a final ">" the rest); empty: those the
	// manifest lets it consume.
	Serves []string `yaml:"serves"`
	// Signer, ProductID and SVN are recorded in the image's metadata when
	// it is built (the signer's identity plays the part of MRSIGNER).
	Signer    string `yaml:"signer"`
	ProductID uint16 `yaml:"product_id"`
	SVN       uint16 `yaml:"svn"`
	// RestartBackoff and MaxRestartBackoff override the description's.
	RestartBackoff    time.Duration `yaml:"restart_backoff"`
	MaxRestartBackoff time.Duration `yaml:"max_restart_backoff"`
	// InitConfig is handed to the image when it starts (Go only).
	InitConfig []byte `yaml:"-"`
}

// Service is a regular service: written in Go and registered by the
// program (no Command), or a command the node starts and supervises.
type Service struct {
	// Command is the program and its arguments, run in the description's
	// directory with NATS_URL (the node's NATS client URL), NATS_CREDS
	// (its credentials file, if any), CLOISTER_SERVICE and CLOISTER_STATE_DIR in its environment; it is
	// restarted with a growing delay when it exits. Empty: a Go service
	// the program passes to Start.
	Command []string `yaml:"command"`
	// Env is extra environment for the command ("KEY=VALUE").
	Env []string `yaml:"env"`
	// Instances is how many instances of a Go service run (default 1).
	Instances int `yaml:"instances"`
	// Worker runs a Go service's handlers on a worker pool rather than an
	// event loop.
	Worker bool `yaml:"worker"`
	// Workers bounds a worker service's pool (default the node's).
	Workers int `yaml:"workers"`
}

// Address is what the description declares about one address.
type Address struct {
	// Secured: messages are sealed end to end with the address's key; only
	// the services named below hold it.
	Secured bool `yaml:"secured"`
	// Clients: outside clients with a credential the manifest names may
	// call it over client sessions (cloister request --secure).
	Clients bool `yaml:"clients"`
	// Durable: every send to it, from any service of the application, is
	// stored in JetStream and delivered at least once. Declared here once;
	// senders do nothing.
	Durable bool `yaml:"durable"`
	// Consume, Send and Publish name the images and services with each
	// right.
	Consume []string `yaml:"consume"`
	Send    []string `yaml:"send"`
	Publish []string `yaml:"publish"`
}

// Client is an outside client: its Ed25519 public key, or a key file that
// is made (mode 0600) if it does not exist yet.
type Client struct {
	// PublicKey is the base64 of the Ed25519 public key.
	PublicKey string `yaml:"public_key"`
	// KeyFile is the client's private key (PEM, as cloister manifest
	// client writes it), relative to the description's directory; made if
	// missing.
	KeyFile string `yaml:"key_file"`
}

// Defaults.
const (
	// DefaultAckWait is the ack wait of durable addresses.
	DefaultAckWait = cluster.DefaultAckWait
	// CoordinatorService is the coordinator's name in the manifest and
	// among the nodes' deployments.
	CoordinatorService = "coordinator"
)

// reservedNames returns what cannot name images or services: the
// coordinator and its replicas' deployments, and the state directory's own
// folders.
func reservedNames() []string {
	names := []string{CoordinatorService, CoordinatorService + "-replicas", "images", "jetstream", "services", "manifest.yaml"}
	for slot := range manifest.MaxReplicas {
		names = append(names, ReplicaDeployment(slot))
	}
	return names
}

// ErrConfig is matched by every [*ConfigError].
var ErrConfig = errors.New("application: invalid description")

// ConfigError is a bad value in a description: the field, its line in the
// file, and what is wrong.
type ConfigError struct {
	// Field is the field path, e.g. "images.counter.package" or
	// "nodes[1].routes[0]".
	Field string
	// Line is the field's line in the file (1-based; 0 if unknown).
	Line int
	// Msg says what is wrong.
	Msg string
}

// Error returns "field (line N): message".
func (e *ConfigError) Error() string {
	f := e.Field
	if f == "" {
		f = "description"
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", f, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", f, e.Msg)
}

// Is makes every ConfigError match [ErrConfig].
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

func fieldErr(field, format string, a ...any) *ConfigError {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// LoadConfig reads and checks a description; relative paths in it are the
// file's.
func LoadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("application: %w", err)
	}
	c, err := ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("application: %s: %w", path, err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("application: %w", err)
	}
	c.Dir = dir
	return c, nil
}

// ParseConfig parses a description strictly — unknown fields, a second
// document, values of the wrong type and every invalid value are errors
// naming the field and its line ([*ConfigError] or the YAML decoder's
// "line N: ...") — and fills in defaults.
func ParseConfig(raw []byte) (*Config, error) {
	var c Config
	root, err := DecodeStrict(raw, &c)
	if err != nil {
		return nil, err
	}
	if err := c.fill(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) && ce.Line == 0 {
			if n := Lookup(root, ce.Field); n != nil {
				ce.Line = n.Line
			}
		}
		return nil, err
	}
	return &c, nil
}

// DecodeStrict decodes one YAML document into v, refusing unknown fields
// and a second document, and returns the document's node tree for
// [Lookup] (to give later errors their line).
func DecodeStrict(raw []byte, v any) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ConfigError{Msg: "the file is empty"}
		}
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var root yaml.Node
	nd := yaml.NewDecoder(bytes.NewReader(raw))
	if err := nd.Decode(&root); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var second yaml.Node
	switch err := nd.Decode(&second); {
	case err == nil:
		return nil, &ConfigError{Line: second.Line, Msg: "a second YAML document (after ---): a description holds one"}
	case !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return &root, nil
}

// Lookup returns the node at path ("a.b[2].c") in doc, or nil.
func Lookup(doc *yaml.Node, path string) *yaml.Node {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if path == "" {
		return n
	}
	for _, part := range strings.Split(path, ".") {
		name, rest, _ := strings.Cut(part, "[")
		if name != "" {
			if n.Kind != yaml.MappingNode {
				return nil
			}
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == name {
					next = n.Content[i+1]
				}
			}
			if next == nil {
				return nil
			}
			n = next
		}
		for rest != "" {
			idx, after, ok := strings.Cut(rest, "]")
			i, err := strconv.Atoi(idx)
			if !ok || err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
				return nil
			}
			n = n.Content[i]
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return n
}

// Check fills in defaults and checks the description again (after fields
// were changed in Go).
func (c *Config) Check() error { return c.fill() }

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// validName reports whether s can name a service, image or node: letters,
// digits, '-' and '_', starting with a letter.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '_'):
		default:
			return false
		}
	}
	return true
}

func (c *Config) fill() error {
	if c.Name == "" {
		return fieldErr("name", "a name is needed")
	}
	if !validName(c.Name) {
		return fieldErr("name", "%q: use letters, digits, '-' and '_', starting with a letter", c.Name)
	}
	if c.RestartBackoff < 0 || c.MaxRestartBackoff < 0 {
		return fieldErr("restart_backoff", "restart backoffs must not be negative")
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.AckWait < time.Second {
		return fieldErr("ack_wait", "%v (want at least 1s: a shorter wait redelivers messages still being handled)", c.AckWait)
	}
	if len(c.Nodes) == 0 {
		c.Nodes = []Node{{Name: "n1"}}
	}
	names := map[string]string{} // image or service name → "image" or "service"
	for _, name := range sortedKeys(c.Images) {
		img := c.Images[name]
		at := "images." + name
		if !validName(name) || slices.Contains(reservedNames(), name) {
			return fieldErr(at, "%q cannot name an image (letters, digits, '-' and '_'; not %s)", name, strings.Join(reservedNames(), ", "))
		}
		if img.RestartBackoff == 0 {
			img.RestartBackoff = c.RestartBackoff
		}
		if img.MaxRestartBackoff == 0 {
			img.MaxRestartBackoff = c.MaxRestartBackoff
		}
		if img.RestartBackoff < 0 || img.MaxRestartBackoff < 0 {
			return fieldErr(at, "restart backoffs must not be negative")
		}
		if (img.Package == "") == (img.File == "") {
			return fieldErr(at, "give exactly one of package (a Go main package) and file (a prebuilt image)")
		}
		if img.Instances == 0 {
			img.Instances = 1
		}
		if img.Instances < 0 {
			return fieldErr(at+".instances", "%d is negative", img.Instances)
		}
		if img.Workers < 0 {
			return fieldErr(at+".workers", "%d is negative", img.Workers)
		}
		if img.Backend == "" {
			img.Backend = node.BackendProcess
		}
		if img.Backend != node.BackendProcess && img.Backend != node.BackendGramine {
			return fieldErr(at+".backend", "%q (want %s or %s)", img.Backend, node.BackendProcess, node.BackendGramine)
		}
		c.Images[name] = img
		names[name] = "image"
	}
	for _, name := range sortedKeys(c.Services) {
		s := c.Services[name]
		at := "services." + name
		if !validName(name) || slices.Contains(reservedNames(), name) {
			return fieldErr(at, "%q cannot name a service (letters, digits, '-' and '_'; not %s)", name, strings.Join(reservedNames(), ", "))
		}
		if names[name] != "" {
			return fieldErr(at, "%q names an image too", name)
		}
		if s.Instances == 0 {
			s.Instances = 1
		}
		if s.Instances < 0 {
			return fieldErr(at+".instances", "%d is negative", s.Instances)
		}
		if len(s.Command) > 0 && (s.Instances != 1 || s.Worker || s.Workers != 0) {
			return fieldErr(at, "instances, worker and workers are for Go services, not commands")
		}
		if s.Workers < 0 {
			return fieldErr(at+".workers", "%d is negative", s.Workers)
		}
		if len(s.Command) == 0 && c.Program == "" {
			return fieldErr(at, "a Go service (no command) needs the program that registers it: set program: (the Go main package that calls application.Start)")
		}
		c.Services[name] = s
		names[name] = "service"
	}
	for _, addr := range sortedKeys(c.Addresses) {
		a := c.Addresses[addr]
		at := "addresses." + addr
		if err := checkAddress(addr); err != nil {
			return fieldErr(at, "%v", err)
		}
		for right, who := range map[string][]string{"consume": a.Consume, "send": a.Send, "publish": a.Publish} {
			for i, w := range who {
				if names[w] == "" {
					return fieldErr(fmt.Sprintf("%s.%s[%d]", at, right, i), "%q is neither an image nor a service of this description", w)
				}
			}
		}
		if (a.Secured || a.Clients) && !slices.ContainsFunc(a.Consume, func(w string) bool { return names[w] == "image" }) {
			return fieldErr(at+".consume", "a secured or client-facing address needs an image among its consumers (only images hold its keys)")
		}
	}
	for _, name := range sortedKeys(c.Clients) {
		cl := c.Clients[name]
		at := "clients." + name
		if !validName(name) {
			return fieldErr(at, "%q cannot name a client (letters, digits, '-' and '_')", name)
		}
		if (cl.PublicKey == "") == (cl.KeyFile == "") {
			return fieldErr(at, "give exactly one of public_key and key_file")
		}
	}
	if err := CheckNodes(c.Nodes); err != nil {
		return err
	}
	placed := map[string]string{}
	coordinators := 0
	for i, n := range c.Nodes {
		at := fmt.Sprintf("nodes[%d]", i)
		for j, s := range n.Run {
			if names[s] == "" {
				return fieldErr(fmt.Sprintf("%s.run[%d]", at, j), "%q is neither an image nor a service of this description", s)
			}
			if other, ok := placed[s]; ok {
				return fieldErr(fmt.Sprintf("%s.run[%d]", at, j), "%s already runs on node %s", s, other)
			}
			placed[s] = n.Name
		}
		if n.Coordinator {
			coordinators++
		}
	}
	if err := c.fillCoordinator(coordinators); err != nil {
		return err
	}
	for _, s := range append(sortedKeys(c.Images), sortedKeys(c.Services)...) {
		if _, ok := placed[s]; ok {
			continue
		}
		if len(c.Nodes) > 1 {
			return fieldErr("nodes", "%s is not placed on any node (add it to a node's run:)", s)
		}
		c.Nodes[0].Run = append(c.Nodes[0].Run, s)
	}
	if len(c.Images) > 0 && !c.NoCoordinator {
		c.placeCoordinators(coordinators, func(s string) bool { return names[s] == "image" })
	}
	return nil
}

// fillCoordinator checks the coordinator section and fills its defaults;
// marked is the number of nodes marked coordinator: true.
func (c *Config) fillCoordinator(marked int) error {
	co := &c.Coordinator
	if !co.Freshness {
		if co.Replicas != 0 || co.Checkpoint != nil {
			return fieldErr("coordinator", "replicas and checkpoint need freshness: true (without it the coordinator is one instance)")
		}
		if marked > 1 {
			return fieldErr("nodes", "the coordinator is placed on %d nodes (one only; several replicas need coordinator.freshness: true)", marked)
		}
		return nil
	}
	if len(c.Images) == 0 || c.NoCoordinator {
		return fieldErr("coordinator.freshness", "freshness is the coordinator's, and this description runs none (it has no images)")
	}
	if co.Replicas == 0 {
		co.Replicas = 1
		if len(c.Nodes) >= 3 {
			co.Replicas = 3
		}
	}
	if co.Replicas < 1 || co.Replicas > manifest.MaxReplicas {
		return fieldErr("coordinator.replicas", "%d (want 1 to %d)", co.Replicas, manifest.MaxReplicas)
	}
	if co.Checkpoint == nil {
		d := DefaultCheckpoint
		co.Checkpoint = &d
	}
	if *co.Checkpoint < 0 || *co.Checkpoint > manifest.MaxCheckpoint {
		return fieldErr("coordinator.checkpoint", "%v (want 0s to %v)", *co.Checkpoint, manifest.MaxCheckpoint)
	}
	if len(c.Nodes) > 1 && co.Replicas > len(c.Nodes) {
		return fieldErr("coordinator.replicas", "%d replicas on %d nodes: each replica needs a node of its own (a node that restarts takes all of its replicas with it)", co.Replicas, len(c.Nodes))
	}
	if len(c.Nodes) > 1 && marked > co.Replicas {
		return fieldErr("nodes", "the coordinator is placed on %d nodes, for %d replicas", marked, co.Replicas)
	}
	return nil
}

// placeCoordinators marks the nodes that run the coordinator (or its
// replicas) when the description marked fewer than needed: the nodes that
// run images first, then the others, in order.
func (c *Config) placeCoordinators(marked int, isImage func(string) bool) {
	want := 1
	if c.Coordinator.Freshness && len(c.Nodes) > 1 {
		want = c.Coordinator.Replicas
	}
	for _, images := range []bool{true, false} {
		for i := range c.Nodes {
			if marked >= want {
				return
			}
			n := &c.Nodes[i]
			if !n.Coordinator && slices.ContainsFunc(n.Run, isImage) == images {
				n.Coordinator = true
				marked++
			}
		}
	}
}

// Freshness reports whether the description turns freshness on.
func (c *Config) Freshness() bool { return c.Coordinator.Freshness }

// CoordinatorSlots returns the node of each coordinator slot: one slot on
// the coordinator node without freshness; with it, slot k on the k-th
// node marked coordinator, or every slot on the only node.
func (c *Config) CoordinatorSlots() []string {
	var marked []string
	for _, n := range c.Nodes {
		if n.Coordinator {
			marked = append(marked, n.Name)
		}
	}
	if len(marked) == 0 {
		return nil
	}
	if !c.Coordinator.Freshness {
		return marked[:1]
	}
	slots := make([]string, c.Coordinator.Replicas)
	for k := range slots {
		slots[k] = marked[k%len(marked)]
	}
	return slots
}

// CheckNodes checks the nodes' NATS settings, as a description's are: each
// named once; listen addresses with a host; routes to a node of the list or
// a route URL, and only with cluster_listen; several nodes clustered;
// external servers or an embedded one, not both. Errors name the field
// (nodes[i]....).
func CheckNodes(nodes []Node) error {
	names := map[string]bool{}
	for _, n := range nodes {
		names[n.Name] = true
	}
	seen := map[string]bool{}
	for i, n := range nodes {
		at := fmt.Sprintf("nodes[%d]", i)
		if !validName(n.Name) {
			return fieldErr(at+".name", "%q: a node needs a name of letters, digits, '-' and '_'", n.Name)
		}
		if seen[n.Name] {
			return fieldErr(at+".name", "node %q named twice", n.Name)
		}
		seen[n.Name] = true
		if len(n.Servers) > 0 && (n.NATSListen != "" || n.ClusterListen != "" || len(n.Routes) > 0) {
			return fieldErr(at+".servers", "a node joins external servers or embeds one, not both (drop nats_listen, cluster_listen and routes)")
		}
		if n.Credentials != "" && len(n.Servers) == 0 {
			return fieldErr(at+".credentials", "credentials are for external servers: set servers")
		}
		if n.NATSListen != "" {
			if err := cluster.CheckListenAddress("NATS listen address", n.NATSListen); err != nil {
				return fieldErr(at+".nats_listen", "%v", err)
			}
		}
		if n.ClusterListen != "" {
			if err := cluster.CheckListenAddress("cluster listen address", n.ClusterListen); err != nil {
				return fieldErr(at+".cluster_listen", "%v", err)
			}
		}
		for j, r := range n.Routes {
			if names[r] {
				continue
			}
			if _, err := cluster.ParseRoute(r); err != nil {
				return fieldErr(fmt.Sprintf("%s.routes[%d]", at, j), "%q is neither a node of this file nor a route: %v", r, err)
			}
		}
		if len(n.Routes) > 0 && n.ClusterListen == "" {
			return fieldErr(at+".routes", "routes need cluster_listen")
		}
		if len(nodes) > 1 && n.ClusterListen == "" && len(n.Servers) == 0 {
			return fieldErr(at, "several nodes need cluster_listen (and routes) to form one bus")
		}
	}
	return nil
}

// checkAddress checks a declared address: dot-separated tokens of
// printable characters without spaces or wildcards.
func checkAddress(a string) error {
	if a == "" || strings.HasPrefix(a, ".") || strings.HasSuffix(a, ".") || strings.Contains(a, "..") {
		return fmt.Errorf("%q: want dot-separated names such as orders.created", a)
	}
	for _, r := range a {
		if r <= ' ' || r == '*' || r == '>' || r > '~' {
			return fmt.Errorf("%q: no spaces, wildcards or non-ASCII characters", a)
		}
	}
	if strings.HasPrefix(a, "cloister.") {
		return fmt.Errorf("%q: addresses under cloister. are Cloister's own", a)
	}
	return nil
}

// DurableAddresses returns the addresses declared durable, in order.
func (c *Config) DurableAddresses() []string {
	var out []string
	for _, a := range sortedKeys(c.Addresses) {
		if c.Addresses[a].Durable {
			out = append(out, a)
		}
	}
	return out
}

// durableOn returns the durable addresses that something placed on n
// consumes, sends or publishes to (n declares them), or every durable
// address when nothing of the description uses it.
func (c *Config) durableOn(n Node) []string {
	var out []string
	for _, addr := range c.DurableAddresses() {
		a := c.Addresses[addr]
		users := slices.Concat(a.Consume, a.Send, a.Publish)
		if len(users) == 0 || slices.ContainsFunc(users, func(u string) bool { return slices.Contains(n.Run, u) }) {
			out = append(out, addr)
		}
	}
	return out
}

// path resolves p against the description's directory.
func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir(), p)
}

func (c *Config) dir() string {
	if c.Dir != "" {
		return c.Dir
	}
	d, _ := os.Getwd()
	return d
}
