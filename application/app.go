package application

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/coordinator"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/tracing"
)

// CoordinatorPackage is the coordinator's enclave image in Cloister.
const CoordinatorPackage = enclave.ToolkitModule + "/coordinator/image"

// GoService is a regular service written in Go, deployed on the node the
// description places its name on (as Vert.x deploys a verticle).
type GoService struct {
	// Name is the service's name in the description (services:).
	Name string
	// New makes one instance; it is called once per instance.
	New func() node.Service
	// Config is handed to every instance as JSON (node.Instance.Config).
	Config any
}

// App is a running application: the nodes of this process with their
// coordinator, enclaves and services.
type App struct {
	cfg      *Config
	logger   *slog.Logger
	out      io.Writer // cfg.Out, one write at a time
	stateDir string
	tempDir  bool
	sim      *attest.SimulationRoot

	coordImg    *enclave.Image
	images      map[string]*enclave.Image
	manifestRaw []byte
	manifest    *manifest.Manifest
	owner       ed25519.PrivateKey // with freshness: the owner key of the state directory

	run      []Node // the nodes of this process
	nodes    []*runningNode
	commands []*command
	stopOnce sync.Once
	stopErr  error
	done     chan struct{}
}

// runningNode is one node of this process.
type runningNode struct {
	cfg     Node
	cluster *cluster.Node
	bus     *bus.Bus
	node    *node.Node
}

// DefaultSimulationDir is where an application keeps this machine's
// simulation root when Config.Simulation is nil: the cloister directory of
// the user's configuration directory ($XDG_CONFIG_HOME or ~/.config on
// Linux), the same place the cloister command uses, so that one machine
// has one simulation platform key and the command's verbs (request
// --secure, coordinator verify) trust what the applications run here.
func DefaultSimulationDir() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("application: locating the simulation keys: %w", err)
	}
	return filepath.Join(dir, "cloister"), nil
}

// ErrStateDir is wrapped when the state directory cannot be used.
var ErrStateDir = errors.New("application: unusable state_dir")

// Start starts the application cfg describes (all its nodes, or cfg.Only):
// it builds or loads the images (the coordinator's too), generates the
// manifest from their measurements and the declared addresses and clients,
// starts the nodes (embedded NATS with JetStream, the durable addresses
// declared), the coordinator with that manifest, the enclaves (each joins
// the coordinator as its image name), the Go services given here and the
// commands. Every Go service the description places on a node of this
// process must be given, and nothing else. On error, what started is
// stopped again. Start is New followed by App.Start.
func Start(ctx context.Context, cfg *Config, services ...GoService) (*App, error) {
	a, err := New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := a.Start(ctx, services...); err != nil {
		return nil, err
	}
	return a, nil
}

// New prepares the application cfg describes without starting it: it
// checks the description and the fixed ports, makes the state directory,
// builds or loads the images and generates the manifest, so that a
// program can read them (Manifest, CoordinatorImage, Image) before its
// services start. On error, the temporary state directory is removed.
func New(ctx context.Context, cfg *Config) (_ *App, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if err := cfg.Check(); err != nil {
		return nil, fmt.Errorf("application: %w", err)
	}
	a := &App{cfg: cfg, logger: cfg.Logger, out: &lockedWriter{w: cfg.Out}, images: map[string]*enclave.Image{}, done: make(chan struct{})}
	defer func() { a.fail(ctx, &err) }()
	for _, n := range cfg.Nodes {
		if cfg.Only == "" || n.Name == cfg.Only {
			a.run = append(a.run, n)
		}
	}
	if len(a.run) == 0 {
		return nil, fmt.Errorf("application: no node %q in the description", cfg.Only)
	}
	if err := cfg.CheckPorts(); err != nil {
		return nil, err
	}
	if err := a.prepareState(); err != nil {
		return nil, err
	}
	if a.sim = cfg.Simulation; a.sim == nil {
		dir, err := DefaultSimulationDir()
		if err != nil {
			return nil, err
		}
		if a.sim, err = attest.LoadOrCreateSimulationRoot(dir); err != nil {
			return nil, fmt.Errorf("application: %w", err)
		}
	}
	if err := a.loadImages(ctx, a.run[0].Name); err != nil {
		return nil, err
	}
	return a, nil
}

// fail stops what started when *err is set, and says when the start-up
// was interrupted rather than what the interruption broke on its way.
func (a *App) fail(ctx context.Context, err *error) {
	if *err == nil {
		return
	}
	if ctx.Err() != nil {
		*err = fmt.Errorf("application: start-up interrupted: %w (%w)", context.Cause(ctx), *err)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = a.Stop(cctx)
}

// Start starts what New prepared: the nodes of this process, the
// coordinator, the enclaves, the Go services given and the commands. On
// error, everything is stopped (as by Stop).
func (a *App) Start(ctx context.Context, services ...GoService) (err error) {
	defer func() { a.fail(ctx, &err) }()
	cfg := a.cfg
	given := map[string]GoService{}
	for _, s := range services {
		d, ok := cfg.Services[s.Name]
		if !ok || len(d.Command) > 0 {
			return fmt.Errorf("application: Go service %q is not declared as one under services: (without command)", s.Name)
		}
		if s.New == nil {
			return fmt.Errorf("application: Go service %q has no New", s.Name)
		}
		given[s.Name] = s
	}
	run := a.run
	for _, n := range run {
		for _, name := range n.Run {
			if s, ok := cfg.Services[name]; ok && len(s.Command) == 0 {
				if _, ok := given[name]; !ok {
					return fmt.Errorf("application: Go service %q runs on node %s but was not given to Start", name, n.Name)
				}
			}
		}
	}
	// The nodes that use a durable address start last: they declare it,
	// which needs JetStream serving (a clustered JetStream serves once its
	// routes are up).
	sort.SliceStable(run, func(i, j int) bool { return len(cfg.durableOn(run[i])) == 0 && len(cfg.durableOn(run[j])) > 0 })
	for i, n := range run {
		ln, err := a.startNode(ctx, n, i)
		if err != nil {
			return err
		}
		a.nodes = append(a.nodes, ln)
		fmt.Fprintf(a.out, "node %s: NATS %s\n", n.Name, ln.natsURL())
	}
	// Every replica of this process first: a quorum of them may be needed
	// before any serves.
	if err := a.startCoordinator(ctx); err != nil {
		return err
	}
	for _, ln := range a.nodes {
		if err := a.deploy(ctx, ln, given); err != nil {
			return err
		}
	}
	return nil
}

// CheckPorts tries the fixed NATS and cluster ports of the nodes this
// process runs (all, or Only), so that a port in use is reported before
// anything is built or written.
func (c *Config) CheckPorts() error {
	for _, n := range c.Nodes {
		if c.Only != "" && n.Name != c.Only {
			continue
		}
		for _, l := range []struct{ field, addr string }{{"nats_listen", n.NATSListen}, {"cluster_listen", n.ClusterListen}} {
			if err := tryListen(l.addr); err != nil {
				return fmt.Errorf("application: node %s: %s %s: %w", n.Name, l.field, l.addr, err)
			}
		}
	}
	return nil
}

// tryListen opens and closes a listener on a fixed host:port, to report a
// port in use before anything starts; any-port addresses pass.
func tryListen(addr string) error {
	if addr == "" {
		return nil
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" || port == "-1" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen (is the port in use?): %w", err)
	}
	return l.Close()
}

// prepareState makes the state directory (a temporary one if none is
// described) and checks that it is writable.
func (a *App) prepareState() error {
	a.stateDir = a.cfg.path(a.cfg.StateDir)
	if a.stateDir == "" {
		d, err := os.MkdirTemp("", "cloister-"+a.cfg.Name+"-")
		if err != nil {
			return fmt.Errorf("application: %w", err)
		}
		a.stateDir, a.tempDir = d, true
		return nil
	}
	return PrepareStateDir(a.stateDir)
}

// PrepareStateDir makes dir if needed and checks that it is a writable
// directory, so that a wrong state directory is reported as such before
// anything is written into it.
func PrepareStateDir(dir string) error {
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return fmt.Errorf("%w: %s is a file, not a directory", ErrStateDir, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%w: %s cannot be created: %w", ErrStateDir, dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("%w: %s is not writable (read-only?): %w", ErrStateDir, dir, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrStateDir, dir, err)
	}
	return nil
}

// loadImages builds or loads every image and the coordinator's, then
// generates the manifest. Images are built into a folder of the first
// node of this process, so that processes sharing the state directory (one
// per node) do not build into the same file.
func (a *App) loadImages(ctx context.Context, first string) error {
	if len(a.cfg.Images) == 0 {
		return nil
	}
	ms := Measurements{Images: map[string]enclave.Measurement{}}
	for _, name := range sortedKeys(a.cfg.Images) {
		desc := a.cfg.Images[name]
		img, err := a.image(ctx, first, name, desc.Package, desc.File, enclave.BuildOptions{Signer: desc.Signer, ProductID: desc.ProductID, SVN: desc.SVN})
		if err != nil {
			return err
		}
		a.images[name] = img
		ms.Images[name] = img.Measurement
	}
	if a.cfg.NoCoordinator {
		return nil
	}
	img, err := a.image(ctx, first, CoordinatorService, CoordinatorPackage, a.cfg.CoordinatorImage, enclave.BuildOptions{})
	if err != nil {
		return err
	}
	a.coordImg, ms.Coordinator = img, img.Measurement
	clients, err := a.cfg.ClientKeys()
	if err != nil {
		return err
	}
	var owner ed25519.PublicKey
	if a.cfg.Freshness() {
		if a.owner, err = LoadOrCreateOwnerKey(a.stateDir); err != nil {
			return err
		}
		owner = a.owner.Public().(ed25519.PublicKey)
	}
	if a.manifestRaw, a.manifest, err = a.cfg.Manifest(ms, clients, owner); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(a.stateDir, "manifest.yaml"), a.manifestRaw, 0o644); err != nil {
		return fmt.Errorf("application: %w", err)
	}
	fmt.Fprintf(a.out, "manifest %s (%s)\n", a.manifest.HashHex(), filepath.Join(a.stateDir, "manifest.yaml"))
	return nil
}

// image loads the prebuilt file, or builds pkg into the state directory.
func (a *App) image(ctx context.Context, node, name, pkg, file string, opts enclave.BuildOptions) (*enclave.Image, error) {
	var img *enclave.Image
	var err error
	if file != "" {
		img, err = enclave.Load(a.cfg.path(file))
	} else {
		fmt.Fprintf(a.out, "building image %s (%s) ...\n", name, pkg)
		out := filepath.Join(a.stateDir, "images", node, name+".img")
		opts.Dir = a.cfg.dir()
		if isDirPath(pkg) { // a directory: built in its own module
			opts.Dir, pkg = a.cfg.path(pkg), "."
		}
		img, err = enclave.BuildPackage(ctx, pkg, out, opts, a.out)
	}
	if err != nil {
		return nil, fmt.Errorf("application: image %s: %w", name, err)
	}
	fmt.Fprintf(a.out, "image %s measurement %s\n", name, img.Measurement)
	return img, nil
}

// isDirPath reports whether a package is given as a directory ("./x",
// "../x", "/abs/x") rather than an import path.
func isDirPath(pkg string) bool {
	return pkg == "." || strings.HasPrefix(pkg, "./") || strings.HasPrefix(pkg, "../") || filepath.IsAbs(pkg)
}

func (a *App) nodeByName(name string) *runningNode {
	for _, n := range a.nodes {
		if n.cfg.Name == name {
			return n
		}
	}
	return nil
}

func (a *App) startNode(ctx context.Context, nc Node, index int) (*runningNode, error) {
	logger := a.logger.With("node", nc.Name)
	opts := cluster.Options{
		Name:          a.cfg.Name + "-" + nc.Name,
		NATSListen:    nc.NATSListen,
		ClusterListen: nc.ClusterListen,
		Logger:        logger,
		AckWait:       a.cfg.AckWait,
		// Every node runs JetStream: a clustered JetStream elects its meta
		// leader among the servers that run it.
		StoreDir: filepath.Join(a.stateDir, "jetstream", nc.Name),
		// Durability is the address's: the nodes that use a durable
		// address declare it, and every sender sends to it at least once.
		Durable: a.cfg.durableOn(nc),
	}
	if len(nc.Servers) > 0 {
		opts.Servers, opts.CredentialsFile, opts.StoreDir = nc.Servers, a.cfg.path(nc.Credentials), ""
	} else if opts.NATSListen == "" {
		opts.NATSListen = "127.0.0.1:-1"
	}
	for _, r := range nc.Routes {
		if other := a.nodeByName(r); other != nil {
			r = other.cluster.ClusterURL()
		}
		opts.Routes = append(opts.Routes, r)
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cn, err := cluster.Start(sctx, opts)
	if err != nil {
		return nil, fmt.Errorf("application: node %s: %w", nc.Name, err)
	}
	b, err := bus.New(bus.WithTransport(cn.Transport()), bus.WithLogger(logger))
	if err != nil {
		cn.Close()
		return nil, fmt.Errorf("application: node %s: %w", nc.Name, err)
	}
	nopts := node.Options{Bus: b, Logger: logger, Simulation: a.sim}
	if nopts.Ops, err = a.opsOptions(index); err != nil {
		b.Close(context.Background())
		cn.Close()
		return nil, err
	}
	if a.cfg.TraceEndpoint != "" {
		nopts.Tracing = tracing.Options{Endpoint: a.cfg.TraceEndpoint, ServiceName: a.cfg.Name, Attributes: map[string]string{"cloister.node": nc.Name}}
	}
	n, err := node.New(nopts)
	if err != nil {
		b.Close(context.Background())
		cn.Close()
		return nil, fmt.Errorf("application: node %s: %w", nc.Name, err)
	}
	return &runningNode{cfg: nc, cluster: cn, bus: b, node: n}, nil
}

// deploy starts what runs on ln (after its coordinator replicas): the
// images, then the regular services.
func (a *App) deploy(ctx context.Context, ln *runningNode, given map[string]GoService) error {
	for _, name := range ln.cfg.Run {
		desc, ok := a.cfg.Images[name]
		if !ok {
			continue
		}
		if _, err := ln.node.DeployEnclave(ctx, node.EnclaveConfig{
			Name: name, Image: a.images[name].Path, Backend: desc.Backend,
			Instances: desc.Instances, Workers: desc.Workers, Env: desc.Env,
			Addresses: desc.Serves, InitConfig: desc.InitConfig,
			Service:        a.joinAs(name),
			StateDir:       filepath.Join(a.stateDir, name),
			RestartBackoff: desc.RestartBackoff, MaxRestartBackoff: desc.MaxRestartBackoff,
		}); err != nil {
			return fmt.Errorf("application: image %s: %w", name, err)
		}
		fmt.Fprintf(a.out, "image %s: %d instance(s) on node %s\n", name, desc.Instances, ln.cfg.Name)
	}
	for _, name := range ln.cfg.Run {
		desc, ok := a.cfg.Services[name]
		if !ok {
			continue
		}
		if len(desc.Command) > 0 {
			cmd := a.startCommand(ln, name, desc)
			a.commands = append(a.commands, cmd)
			continue
		}
		s := given[name]
		mode := node.EventLoop
		if desc.Worker {
			mode = node.Worker
		}
		if _, err := ln.node.Deploy(ctx, s.New, node.DeployOptions{Name: name, Instances: desc.Instances, Config: s.Config, Mode: mode, WorkerPoolSize: desc.Workers}); err != nil {
			return fmt.Errorf("application: service %s: %w", name, err)
		}
	}
	return nil
}

// startCoordinator hosts the coordinator's slots placed on the nodes of
// this process, waits until they serve (with freshness: until they are
// live members of the group), and gives the coordinator the manifest
// unless it already holds it (its sealed state in the state directory).
func (a *App) startCoordinator(ctx context.Context) error {
	if a.coordImg == nil {
		return nil
	}
	var local []int
	var first *runningNode
	for slot, name := range a.cfg.CoordinatorSlots() {
		ln := a.nodeByName(name)
		if ln == nil {
			continue // another process runs it
		}
		if err := a.deployReplica(ctx, ln, slot); err != nil {
			return err
		}
		local = append(local, slot)
		if first == nil {
			first = ln
		}
	}
	if first == nil {
		return nil
	}
	if !a.cfg.Freshness() {
		fmt.Fprintln(a.out, "coordinator: freshness is off: the host can roll sealed state back undetected (coordinator: {freshness: true} in the description turns it on)")
	}
	if err := a.awaitReplicas(ctx, first.bus, local); err != nil {
		return err
	}
	return a.setManifest(ctx, first)
}

// deployReplica hosts coordinator slot on ln.
func (a *App) deployReplica(ctx context.Context, ln *runningNode, slot int) error {
	replicas := 0
	if a.cfg.Freshness() {
		replicas = a.cfg.Coordinator.Replicas
	}
	initCfg, err := ReplicaInit(a.sim, slot, replicas)
	if err != nil {
		return err
	}
	ec := node.EnclaveConfig{
		Name: CoordinatorService, Image: a.coordImg.Path, Backend: a.coordinatorBackend(ln),
		StateDir:       a.replicaStateDir(slot),
		InitConfig:     initCfg,
		RestartBackoff: a.cfg.RestartBackoff, MaxRestartBackoff: a.cfg.MaxRestartBackoff,
	}
	if a.cfg.Freshness() {
		ec.Name = ReplicaDeployment(slot)
		ec.Addresses = coordinator.ReplicaAddresses(slot)
	}
	if _, err := ln.node.DeployEnclave(ctx, ec); err != nil {
		return fmt.Errorf("application: coordinator: %w", err)
	}
	if a.cfg.Freshness() {
		fmt.Fprintf(a.out, "coordinator replica %d of %d on node %s\n", slot, a.cfg.Coordinator.Replicas, ln.cfg.Name)
	}
	return nil
}

// ReplicaDeployment names the deployment of coordinator slot on its node.
func ReplicaDeployment(slot int) string { return fmt.Sprintf("%s-%d", CoordinatorService, slot) }

// replicaStateDir is where slot keeps its sealed state: slot 0 where the
// single coordinator kept it, the others beside it.
func (a *App) replicaStateDir(slot int) string {
	if slot == 0 {
		return filepath.Join(a.stateDir, CoordinatorService)
	}
	return filepath.Join(a.stateDir, CoordinatorService+"-replicas", strconv.Itoa(slot))
}

// quorumWait bounds how long a start waits for the coordinator (with
// freshness: for a quorum of replicas, which other processes may start).
const quorumWait = 3 * time.Minute

// awaitReplicas waits until the coordinator answers and, with freshness,
// until the local slots are live: admitted by a quorum. Replicas that wait
// for the owner's recovery statement (the group lost its quorum) get it
// when Config.Recover is set; otherwise the start waits, saying what the
// owner must do, until ctx ends.
func (a *App) awaitReplicas(ctx context.Context, b *bus.Bus, local []int) error {
	deadline := time.Now().Add(quorumWait)
	said := map[string]bool{}
	say := func(key, format string, args ...any) {
		if !said[key] {
			said[key] = true
			fmt.Fprintf(a.out, format+"\n", args...)
			a.logger.Warn("application: " + fmt.Sprintf(format, args...))
		}
	}
	for {
		ready, why, needRecovery, err := a.replicasReady(ctx, b, local)
		if err != nil {
			return fmt.Errorf("application: coordinator: %w", err)
		}
		if ready {
			return nil
		}
		switch {
		case needRecovery && a.cfg.Recover:
			if err := a.recoverAtStart(ctx, b); err != nil {
				return err
			}
			deadline = time.Now().Add(quorumWait)
			continue
		case needRecovery:
			say("recovery", "COORDINATOR: %s. Nothing is served until the manifest owner signs a recovery statement:\n"+
				"  cloister coordinator recover --key %s --server %s\n"+
				"(or start with --recover to continue from the state on disk)", why, filepath.Join(a.stateDir, OwnerKeyFile), a.nodes[0].natsURL())
			deadline = time.Now().Add(quorumWait) // the owner decides when
		default:
			say("wait", "coordinator: waiting for the replicas (%s)", why)
			if time.Now().After(deadline) {
				return fmt.Errorf("application: coordinator: not ready after %v: %s", quorumWait, why)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("application: coordinator: %w (%s)", context.Cause(ctx), why)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// replicasReady reports whether the coordinator serves: without freshness,
// whether it answers its status; with it, whether every local slot is live.
// why says what is missing; needRecovery, whether a slot waits for the
// owner's recovery statement; err, a failure that waiting does not mend.
func (a *App) replicasReady(ctx context.Context, b *bus.Bus, local []int) (ready bool, why string, needRecovery bool, err error) {
	if !a.cfg.Freshness() {
		_, err := client.CoordinatorStatus(ctx, b, 5*time.Second)
		switch {
		case err == nil:
			return true, "", false, nil
		case unavailable(err):
			return false, err.Error(), false, nil
		}
		return false, "", false, err
	}
	var waiting []string
	for _, slot := range local {
		st, err := replicaStatus(ctx, b, slot, 2*time.Second)
		switch {
		case err != nil:
			waiting = append(waiting, fmt.Sprintf("replica %d: %v", slot, err))
		case st.State == provision.ReplicaNeedsRecovery:
			return false, fmt.Sprintf("the coordinator replicas lost their quorum (replica %d: %s)", slot, st.Reason), true, nil
		case st.State != provision.ReplicaLive:
			waiting = append(waiting, fmt.Sprintf("replica %d %s: %s", slot, st.State, st.Reason))
		}
	}
	if len(waiting) > 0 {
		return false, fmt.Sprintf("a quorum is %d of %d replicas; %s", a.cfg.Coordinator.Replicas/2+1, a.cfg.Coordinator.Replicas, strings.Join(waiting, "; ")), false, nil
	}
	return true, "", false, nil
}

// recoverAtStart signs, with the owner key of the state directory, the
// recovery statement that continues from the state the replicas read from
// disk, and says so loudly: it protects against a host that is not the
// owner, not against one that holds the state directory.
func (a *App) recoverAtStart(ctx context.Context, b *bus.Bus) error {
	hash := a.manifest.Hash()
	answers, err := Recover(ctx, b, a.owner, a.cfg.Coordinator.Replicas, hash[:], func(st *provision.RecoveryStatement, _ []SlotStatus) error {
		fmt.Fprintf(a.out, "RECOVERY: the coordinator replicas lost their quorum; --recover signs, with the owner key %s, a recovery statement that CONTINUES FROM THE STATE ON DISK (%d replica(s), manifest %x):\n",
			filepath.Join(a.stateDir, OwnerKeyFile), len(st.Nonces), st.ManifestHash)
		for _, r := range st.Registers {
			fmt.Fprintf(a.out, "RECOVERY:   %s at version %d\n", r.Subject, r.Counter)
		}
		fmt.Fprintf(a.out, "RECOVERY: a rollback of that state by whoever holds this state directory is not detected\n")
		a.logger.Warn("application: recovering the coordinator replicas from the state on disk (--recover)", "replicas", len(st.Nonces), "subjects", len(st.Registers))
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrNoRecovery) {
			return nil // another process recovered them meanwhile: look again
		}
		return fmt.Errorf("application: coordinator recovery: %w", err)
	}
	if err := RecoveryErrors(answers); err != nil {
		return fmt.Errorf("application: coordinator recovery: %w", err)
	}
	return nil
}

// setManifest gives the coordinator the manifest unless it holds it.
func (a *App) setManifest(ctx context.Context, ln *runningNode) error {
	st, err := SetManifest(ctx, ln.bus, a.manifest, quorumWait)
	if err != nil {
		return err
	}
	if st.ManifestHash != a.manifest.HashHex() {
		return fmt.Errorf("application: the coordinator in %s holds manifest %s, not this application's %s: the images or the description changed since that state was made (to start afresh, delete %s or use another state_dir; to keep it, send the coordinator an update signed by the manifest owner)",
			a.stateDir, st.ManifestHash, a.manifest.HashHex(), a.stateDir)
	}
	fmt.Fprintf(a.out, "coordinator on node %s: measurement %s, manifest %s\n", ln.cfg.Name, a.coordImg.Measurement, a.manifest.HashHex())
	return nil
}

// SetManifest gives the coordinator m unless it holds a manifest already,
// and returns its status (whose ManifestHash the caller compares with m's).
// While the coordinator cannot answer (no replica serves yet, or the
// replicas are being admitted: a 503, no handlers, a timeout) it tries again, for at most
// wait; a conflict (another host set the manifest first) is read again.
func SetManifest(ctx context.Context, b *bus.Bus, m *manifest.Manifest, wait time.Duration) (*provision.Status, error) {
	deadline := time.Now().Add(wait)
	for {
		st, err := client.CoordinatorStatus(ctx, b, 15*time.Second)
		if err == nil && st.ManifestSet {
			return st, nil
		}
		if err == nil {
			body, eerr := provision.Encode(provision.ManifestSet{Manifest: m.Canonical()})
			if eerr != nil {
				return nil, eerr
			}
			if _, err = b.Request(ctx, provision.AddressManifestSet, body, bus.Timeout(30*time.Second)); err == nil || replyCode(err) == provision.CodeConflict {
				continue
			}
			err = fmt.Errorf("setting the coordinator's manifest: %w", err)
		}
		if !unavailable(err) || time.Now().After(deadline) {
			return nil, fmt.Errorf("application: coordinator: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("application: coordinator: %w (%w)", context.Cause(ctx), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// unavailable reports whether err is a coordinator that cannot answer now
// but may soon: a replica being admitted or waiting for recovery
// (provision.CodeUnavailable), no replica serving yet, or a timeout.
func unavailable(err error) bool {
	var re *bus.ReplyError
	if !errors.As(err, &re) {
		return false
	}
	switch re.Failure {
	case bus.FailureNoHandlers, bus.FailureTimeout:
		return true
	case bus.FailureRecipient:
		return re.Code == provision.CodeUnavailable
	}
	return false
}

// replyCode is the recipient's failure code in err, or 0.
func replyCode(err error) int {
	var re *bus.ReplyError
	if errors.As(err, &re) && re.Failure == bus.FailureRecipient {
		return re.Code
	}
	return 0
}

// CoordinatorInit is the coordinator's Init configuration for an
// application whose simulated enclaves root in sim: the coordinator trusts
// sim's platform key (and nothing else beyond what the manifest allows).
func CoordinatorInit(sim *attest.SimulationRoot) ([]byte, error) { return ReplicaInit(sim, 0, 0) }

// ReplicaInit is CoordinatorInit for replica slot of a coordinator with
// freshness that runs replicas replicas (coordinator.Config.Slot and
// Replicas).
func ReplicaInit(sim *attest.SimulationRoot, slot, replicas int) ([]byte, error) {
	cc := coordinator.Config{Slot: slot, Replicas: replicas}
	if err := cc.TrustSimulationRoot(sim); err != nil {
		return nil, fmt.Errorf("application: coordinator configuration: %w", err)
	}
	b, err := json.Marshal(cc)
	if err != nil {
		return nil, fmt.Errorf("application: coordinator configuration: %w", err)
	}
	return b, nil
}

// coordinatorBackend is the backend of the first image on ln (the
// coordinator runs as its images do), or the process backend.
func (a *App) coordinatorBackend(ln *runningNode) string {
	for _, name := range ln.cfg.Run {
		if img, ok := a.cfg.Images[name]; ok {
			return img.Backend
		}
	}
	return node.BackendProcess
}

// joinAs is the manifest service an image joins the coordinator as: its
// name when it uses a secured or client-facing address (it needs the keys
// of its grant, and links the secured-address layer, trusted/secured), or
// none: an image that uses neither never joins, so it need not link the
// layer.
func (a *App) joinAs(image string) string {
	if a.cfg.NoCoordinator {
		return ""
	}
	for _, addr := range a.cfg.Addresses {
		if (addr.Secured || addr.Clients) && slices.Contains(slices.Concat(addr.Consume, addr.Send, addr.Publish), image) {
			return image
		}
	}
	return ""
}

// opsOptions is the operations endpoint of the index-th node of this
// process: Config.Metrics with its port moved up by index (unless 0).
func (a *App) opsOptions(index int) (node.OpsOptions, error) {
	if a.cfg.Metrics == "" {
		return node.OpsOptions{}, nil
	}
	host, port, err := net.SplitHostPort(a.cfg.Metrics)
	if err != nil {
		return node.OpsOptions{}, fmt.Errorf("application: metrics address %q: %w", a.cfg.Metrics, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p+index > 65535 {
		return node.OpsOptions{}, fmt.Errorf("application: metrics address %q: bad port", a.cfg.Metrics)
	}
	if p != 0 {
		p += index
	}
	// The application's declared addresses label the traffic.
	labels := []string{"cloister.coordinator.>"}
	for _, addr := range sortedKeys(a.cfg.Addresses) {
		labels = append(labels, addr)
	}
	return node.OpsOptions{
		Listen:      net.JoinHostPort(host, strconv.Itoa(p)),
		Addresses:   labels,
		Coordinator: a.coordImg != nil,
	}, nil
}

// Simulation returns the simulation trust root the application's nodes
// use (Config.Simulation, or the one kept under the state directory).
func (a *App) Simulation() *attest.SimulationRoot { return a.sim }

// Config returns the application's description.
func (a *App) Config() *Config { return a.cfg }

// Bus returns the bus of this process's first node.
func (a *App) Bus() *bus.Bus { return a.nodes[0].bus }

// NATSURL returns the NATS client URL of this process's first node.
func (a *App) NATSURL() string { return a.nodes[0].natsURL() }

// natsURL is where clients reach n's NATS: its embedded server, or the
// external servers it joined.
func (n *runningNode) natsURL() string {
	if len(n.cfg.Servers) > 0 {
		return strings.Join(n.cfg.Servers, ",")
	}
	return n.cluster.ClientURL()
}

// StateDir returns where the application keeps its state.
func (a *App) StateDir() string { return a.stateDir }

// Manifest returns the generated manifest (nil without images).
func (a *App) Manifest() *manifest.Manifest { return a.manifest }

// CoordinatorImage returns the coordinator's image (nil without images):
// its measurement is what outside clients verify the coordinator against.
func (a *App) CoordinatorImage() *enclave.Image { return a.coordImg }

// Image returns the named image of the description, or nil.
func (a *App) Image(name string) *enclave.Image { return a.images[name] }

// NodeNames returns the names of this process's nodes, in the order they
// started.
func (a *App) NodeNames() []string {
	out := make([]string, len(a.nodes))
	for i, n := range a.nodes {
		out[i] = n.cfg.Name
	}
	return out
}

// Node returns the node layer of this process's node name (deployments,
// enclaves, health, its bus), or nil.
func (a *App) Node(name string) *node.Node {
	if n := a.nodeByName(name); n != nil {
		return n.node
	}
	return nil
}

// NodeNATSURL returns the NATS client URL of this process's node name, or
// "".
func (a *App) NodeNATSURL(name string) string {
	if n := a.nodeByName(name); n != nil {
		return n.natsURL()
	}
	return ""
}

// Enclaves lists the enclave instances hosted by this process.
func (a *App) Enclaves() []node.EnclaveInstance {
	var out []node.EnclaveInstance
	for _, n := range a.nodes {
		out = append(out, n.node.Enclaves()...)
	}
	return out
}

// Wait blocks until Stop has finished, and returns its error.
func (a *App) Wait() error {
	<-a.done
	return a.stopErr
}

// Stop stops the commands, the services, the enclaves and the nodes (the
// last started first) and removes a temporary state directory. Only the
// first call stops; later ones return its result.
func (a *App) Stop(ctx context.Context) error {
	a.stopOnce.Do(func() {
		var errs []error
		for _, c := range a.commands {
			c.stop()
		}
		nodes := slices.Clone(a.nodes)
		slices.Reverse(nodes)
		for _, n := range nodes {
			if err := n.node.Shutdown(ctx); err != nil {
				errs = append(errs, err)
			}
			if err := n.cluster.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if a.tempDir {
			if err := os.RemoveAll(a.stateDir); err != nil {
				errs = append(errs, err)
			}
		}
		a.stopErr = errors.Join(errs...)
		close(a.done)
	})
	return a.stopErr
}
