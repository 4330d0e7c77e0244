package app

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
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
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/examples/water/monitor"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/tracing"
)

// Options configure Start beyond the app.yaml.
type Options struct {
	// Only runs just the named node of the configuration (the others run
	// in other processes); empty runs them all in this process.
	Only string
	// Out receives the banner and the one-line summaries (nil: none).
	Out io.Writer
	// Logger receives the services' logs (default: warnings on stderr).
	Logger *slog.Logger
	// Metrics is the host:port of the first node's operations endpoint
	// (Prometheus /metrics, /healthz, /readyz); the next nodes of this
	// process take the next ports, or free ports when the port is 0.
	// Empty: none.
	Metrics string
	// TraceEndpoint is an OTLP/HTTP traces URL every node of this process
	// exports its message spans to; empty: no tracing.
	TraceEndpoint string
	// Simulation is the simulation trust root of this process's nodes: it
	// signs their enclaves' simulated evidence, roots their simulated seal
	// keys, and is what the coordinator and the sensors trust. The nodes
	// of one application in several processes need the same root. Nil: the
	// root kept in the state directory (SimulationDir), so a state
	// directory carries the keys its sealed state needs.
	Simulation *attest.SimulationRoot
}

// SimulationDir is where, under the state directory, Start keeps the
// simulation root when Options.Simulation is nil.
const SimulationDir = "simulation"

// App is a running water application (the nodes of this process).
type App struct {
	cfg      *Config
	opts     Options
	logger   *slog.Logger
	stateDir string
	tempDir  bool
	sim      *attest.SimulationRoot
	img      *enclave.Image
	// The coordinator mode's image and manifest.
	coordImg    *enclave.Image
	manifest    *manifest.Manifest
	manifestRaw []byte
	creds       Credentials // the sensors' client credentials

	nodes []*localNode
	http  *http.Server
	ln    net.Listener

	collector *collector
	ingests   []*ingest
	stopBG    context.CancelFunc
	bgDone    sync.WaitGroup
}

type localNode struct {
	cfg     NodeConfig
	cluster *cluster.Node
	bus     *bus.Bus
	node    *node.Node
}

// ErrStateDir is wrapped when the state directory cannot be used: it is
// a file, cannot be created, or is not writable.
var ErrStateDir = errors.New("app: unusable state_dir")

// Start starts the nodes of cfg (all of them, or opts.Only) and their
// services. The analytics image is built first if needed.
//
// It fails fast and writes nothing before the checks pass: the
// configuration is checked again (cfg.Check), the dashboard's listener is
// opened and fixed NATS ports are tried (a port in use is an error at
// once), and the state directory must be a writable directory. ctx ends
// the start-up too (a signal).
func Start(ctx context.Context, cfg *Config, opts Options) (_ *App, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	a := &App{cfg: cfg, opts: opts, logger: opts.Logger}
	defer func() {
		if err != nil && ctx.Err() != nil {
			// Interrupted (a signal): say so, not what the interruption
			// broke on its way (a killed build, a cancelled request).
			a.logger.Debug("water: start-up interrupted", "error", err)
			err = fmt.Errorf("app: start-up interrupted: %w", context.Cause(ctx))
		}
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = a.Close(cctx)
		}
	}()
	var run []NodeConfig
	for _, n := range cfg.Nodes {
		if opts.Only == "" || n.Name == opts.Only {
			run = append(run, n)
		}
	}
	if len(run) == 0 {
		return nil, fmt.Errorf("app: no node %q in the configuration", opts.Only)
	}
	if err := cfg.Check(); err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	for _, nc := range run {
		if slices.Contains(nc.Services, ServiceDashboard) {
			if a.ln, err = net.Listen("tcp", cfg.Dashboard); err != nil {
				return nil, fmt.Errorf("app: dashboard: cannot listen on %s (is the port in use? set dashboard:, or --dashboard 127.0.0.1:0 for any free port): %w", cfg.Dashboard, err)
			}
		}
		for _, l := range []struct{ field, addr string }{{"nats_listen", nc.NATSListen}, {"cluster_listen", nc.ClusterListen}} {
			if err := tryListen(l.addr); err != nil {
				return nil, fmt.Errorf("app: node %s: %s %s: %w", nc.Name, l.field, l.addr, err)
			}
		}
	}
	a.stateDir = cfg.StateDir
	if a.stateDir == "" {
		d, err := os.MkdirTemp("", "cloister-water-")
		if err != nil {
			return nil, fmt.Errorf("app: %w", err)
		}
		a.stateDir, a.tempDir = d, true
	} else if err := prepareStateDir(a.stateDir); err != nil {
		return nil, err
	}
	if a.sim = opts.Simulation; a.sim == nil {
		if a.sim, err = attest.LoadOrCreateSimulationRoot(filepath.Join(a.stateDir, SimulationDir)); err != nil {
			return nil, fmt.Errorf("app: %w", err)
		}
	}
	// Every process needs the image: to host it, or to know the
	// measurement the sensors and the dashboard expect.
	if cfg.Enclave.Image != "" {
		if a.img, err = enclave.Load(cfg.Enclave.Image); err != nil {
			return nil, fmt.Errorf("app: %w", err)
		}
	} else {
		path := filepath.Join(a.stateDir, "image", run[0].Name, "analytics.img")
		fmt.Fprintf(opts.Out, "building the analytics enclave image (%s) ...\n", AnalyticsPackage)
		if a.img, err = BuildImage(ctx, path); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(opts.Out, "analytics image %s\n  measurement %s\n", a.img.Path, a.img.Measurement)
	if cfg.Security == SecurityCoordinator {
		if cfg.Enclave.CoordinatorImage != "" {
			if a.coordImg, err = enclave.Load(cfg.Enclave.CoordinatorImage); err != nil {
				return nil, fmt.Errorf("app: %w", err)
			}
		} else {
			path := filepath.Join(a.stateDir, "image", run[0].Name, "coordinator.img")
			fmt.Fprintf(opts.Out, "building the coordinator enclave image (%s) ...\n", CoordinatorPackage)
			if a.coordImg, err = enclave.Build(ctx, CoordinatorPackage, path, enclave.BuildOptions{Dir: moduleRoot()}); err != nil {
				return nil, fmt.Errorf("app: build the coordinator image (run from the Cloister repository, with Go installed, or set enclave.coordinator_image): %w", err)
			}
		}
		if a.creds, err = LoadOrCreateCredentials(a.stateDir, cfg.SensorIDs()); err != nil {
			return nil, err
		}
		if a.manifestRaw, a.manifest, err = Manifest(a.coordImg.Measurement, a.img.Measurement, a.creds); err != nil {
			return nil, err
		}
		fmt.Fprintf(opts.Out, "coordinator image %s\n  measurement %s\nmanifest hash %s\n", a.coordImg.Path, a.coordImg.Measurement, a.manifest.HashHex())
	}

	a.collector = newCollector(a)
	// Nodes without the JetStream store start first: the one with it
	// waits for its routes before JetStream serves.
	sort.SliceStable(run, func(i, j int) bool { return !hostsJetStream(run[i]) && hostsJetStream(run[j]) })
	for i, nc := range run {
		ln, err := a.startNode(ctx, nc, i)
		if err != nil {
			return nil, err
		}
		a.nodes = append(a.nodes, ln)
		a.logger.Info("water: node started", "node", nc.Name, "nats", ln.cluster.ClientURL(), "cluster", ln.cluster.ClusterURL())
	}
	for _, ln := range a.nodes {
		if err := a.deploy(ctx, ln); err != nil {
			return nil, err
		}
	}
	bg, cancel := context.WithCancel(context.Background())
	a.stopBG = cancel
	a.bgDone.Add(1)
	go func() {
		defer a.bgDone.Done()
		a.collector.run(bg)
	}()
	return a, nil
}

// tryListen opens and closes a listener on a fixed host:port, to report a
// port in use before anything starts; any-port addresses pass.
func tryListen(addr string) error {
	if addr == "" {
		return nil
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" || port == "-1" {
		return nil // checked with the configuration; any free port
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen (is the port in use?): %w", err)
	}
	return l.Close()
}

// prepareStateDir makes dir if needed and checks that it is a writable
// directory, so that a wrong state_dir is reported as such before anything
// is written into it.
func prepareStateDir(dir string) error {
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

func (a *App) nodeByName(name string) *localNode {
	for _, n := range a.nodes {
		if n.cfg.Name == name {
			return n
		}
	}
	return nil
}

// opsOptions is the operations endpoint of the index-th node of this
// process: Options.Metrics with its port moved up by index (unless 0).
func (a *App) opsOptions(index int) (node.OpsOptions, error) {
	if a.opts.Metrics == "" {
		return node.OpsOptions{}, nil
	}
	host, port, err := net.SplitHostPort(a.opts.Metrics)
	if err != nil {
		return node.OpsOptions{}, fmt.Errorf("app: metrics address %q: %w", a.opts.Metrics, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p+index > 65535 {
		return node.OpsOptions{}, fmt.Errorf("app: metrics address %q: bad port", a.opts.Metrics)
	}
	if p != 0 {
		p += index
	}
	return node.OpsOptions{
		Listen: net.JoinHostPort(host, strconv.Itoa(p)),
		// The application's own addresses label the traffic of every node.
		Addresses:   []string{"water.>", "cloister.coordinator.>"},
		Coordinator: a.cfg.Security == SecurityCoordinator,
	}, nil
}

// hostsJetStream tells whether nc keeps the durable readings address.
func hostsJetStream(nc NodeConfig) bool {
	return slices.Contains(nc.Services, ServiceIngest) || slices.Contains(nc.Services, ServiceSensors)
}

func (a *App) startNode(ctx context.Context, nc NodeConfig, index int) (*localNode, error) {
	opts := cluster.Options{
		Name:          a.cfg.Name + "-" + nc.Name,
		NATSListen:    nc.NATSListen,
		ClusterListen: nc.ClusterListen,
		Logger:        a.logger.With("node", nc.Name),
		AckWait:       a.cfg.AckWait,
	}
	if opts.NATSListen == "" {
		opts.NATSListen = "127.0.0.1:-1"
	}
	for _, r := range nc.Routes {
		if other := a.nodeByName(r); other != nil {
			r = other.cluster.ClusterURL()
		}
		opts.Routes = append(opts.Routes, r)
	}
	// Every node runs JetStream: a clustered JetStream elects its meta
	// leader among the servers that run it, so one alone would wait for a
	// quorum it cannot have. Only the node of sensors and ingest uses the
	// durable address.
	opts.StoreDir = filepath.Join(a.stateDir, "jetstream", nc.Name)
	if hostsJetStream(nc) {
		opts.Durable = []string{AddressReadings}
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cn, err := cluster.Start(sctx, opts)
	if err != nil {
		return nil, fmt.Errorf("app: node %s: %w", nc.Name, err)
	}
	b, err := bus.New(bus.WithTransport(cn.Transport()), bus.WithLogger(opts.Logger))
	if err != nil {
		cn.Close()
		return nil, fmt.Errorf("app: node %s: %w", nc.Name, err)
	}
	ops, err := a.opsOptions(index)
	if err != nil {
		b.Close(context.Background())
		cn.Close()
		return nil, err
	}
	nopts := node.Options{Bus: b, Logger: opts.Logger, Ops: ops, Simulation: a.sim}
	if a.opts.TraceEndpoint != "" {
		nopts.Tracing = tracing.Options{Endpoint: a.opts.TraceEndpoint, ServiceName: a.cfg.Name, Attributes: map[string]string{"cloister.node": nc.Name}}
	}
	n, err := node.New(nopts)
	if err != nil {
		b.Close(context.Background())
		cn.Close()
		return nil, fmt.Errorf("app: node %s: %w", nc.Name, err)
	}
	return &localNode{cfg: nc, cluster: cn, bus: b, node: n}, nil
}

// deploy starts the services placed on ln, in the order that lets each
// find what it needs.
func (a *App) deploy(ctx context.Context, ln *localNode) error {
	has := func(s string) bool { return slices.Contains(ln.cfg.Services, s) }
	logger := a.logger.With("node", ln.cfg.Name)
	if has(ServiceAlerts) {
		if _, err := ln.node.Deploy(ctx, func() node.Service { return &alerts{nodeName: ln.cfg.Name} },
			node.DeployOptions{Name: ServiceAlerts}); err != nil {
			return err
		}
	}
	if has(ServiceAnalytics) {
		var env []string
		var service string
		addrs := []string{monitor.AddressAnalytics, monitor.AddressAnalytics + ".*"}
		if a.cfg.Security == SecurityCoordinator {
			if err := a.deployCoordinator(ctx, ln); err != nil {
				return err
			}
			service = ServiceAnalytics                    // join the coordinator at start-up
			addrs = append(addrs, provision.AddressEpoch) // key rotations reach the runtime
		}
		initCfg, _ := json.Marshal(map[string]bool{"allow_plain": a.cfg.Security == SecurityPlain})
		if _, err := ln.node.DeployEnclave(ctx, node.EnclaveConfig{
			Env: env, Service: service,
			Name: ServiceAnalytics, Image: a.img.Path, Backend: a.cfg.Enclave.Backend,
			Addresses:  addrs,
			StateDir:   filepath.Join(a.stateDir, "analytics"),
			InitConfig: initCfg, RestartBackoff: a.cfg.Enclave.RestartBackoff,
			MaxRestartBackoff: 2 * time.Second,
		}); err != nil {
			return fmt.Errorf("app: analytics enclave: %w", err)
		}
	}
	if has(ServiceIngest) {
		g := &ingest{nodeName: ln.cfg.Name, logger: logger, deadFile: filepath.Join(a.stateDir, "dead-letters-"+ln.cfg.Name+".jsonl")}
		a.ingests = append(a.ingests, g)
		if _, err := ln.node.Deploy(ctx, func() node.Service { return g },
			node.DeployOptions{Name: ServiceIngest, Mode: node.Worker, WorkerPoolSize: 1}); err != nil {
			return err
		}
	}
	if has(ServiceSensors) {
		if _, err := ln.node.Deploy(ctx, func() node.Service {
			return &sensors{cfg: a.cfg, nodeName: ln.cfg.Name, measurement: a.img.Measurement, logger: logger,
				onAttest: a.collector.setAttestation, app: a, seqFile: filepath.Join(a.stateDir, "sensors-"+ln.cfg.Name+".json"),
				sessionsFile: filepath.Join(a.stateDir, "sensor-sessions-"+ln.cfg.Name+".json")}
		}, node.DeployOptions{Name: ServiceSensors}); err != nil {
			return err
		}
	}
	if has(ServiceDashboard) {
		if err := a.startDashboard(ln); err != nil {
			return err
		}
	}
	return nil
}

// Config returns the application's configuration.
func (a *App) Config() *Config { return a.cfg }

// Image returns the analytics enclave image.
func (a *App) Image() *enclave.Image { return a.img }

// Bus returns the bus of this process's first node.
func (a *App) Bus() *bus.Bus { return a.nodes[0].bus }

// NATSURL returns the NATS client URL of this process's first node (for
// cloister tap and other eavesdroppers).
func (a *App) NATSURL() string { return a.nodes[0].cluster.ClientURL() }

// DashboardURL returns the dashboard's URL, or "" if this process does
// not serve it.
func (a *App) DashboardURL() string {
	if a.ln == nil {
		return ""
	}
	return "http://" + a.ln.Addr().String() + "/"
}

// simKeys are the simulation platform keys the application trusts: its
// root's.
func (a *App) simKeys() []*ecdsa.PublicKey {
	return []*ecdsa.PublicKey{a.sim.PlatformPublicKey()}
}

// StateDir returns where the application keeps its state.
func (a *App) StateDir() string { return a.stateDir }

// Enclaves lists the enclave instances hosted by this process.
func (a *App) Enclaves() []node.EnclaveInstance {
	var out []node.EnclaveInstance
	for _, n := range a.nodes {
		out = append(out, n.node.Enclaves()...)
	}
	return out
}

// InjectLeak starts a leak on a sensor (wherever the sensors run).
func (a *App) InjectLeak(ctx context.Context, sensor string) error {
	_, err := a.Bus().Request(ctx, AddressLeak, sensor, bus.Timeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("app: inject a leak on %s: %w", sensor, err)
	}
	return nil
}

// StopSensors stops the sensors and returns, for each sensor, the
// sequence number of its last reading stored in JetStream (readings whose
// send failed are lost before JetStream and show as gaps).
func (a *App) StopSensors(ctx context.Context) (map[string]uint64, error) {
	m, err := a.Bus().Request(ctx, AddressStopSensors, nil, bus.Timeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("app: stop the sensors: %w", err)
	}
	var last map[string]uint64
	if err := m.Decode(&last); err != nil {
		return nil, fmt.Errorf("app: stop the sensors: %w", err)
	}
	return last, nil
}

// AnalyticsStatus asks analytics for its accounting of sensors, in
// requests of at most monitor.MaxStatusSensors sensors each.
func (a *App) AnalyticsStatus(ctx context.Context, sensors []string) (monitor.Status, error) {
	all := monitor.Status{Sensors: map[string]monitor.SensorCounts{}}
	for first := true; first || len(sensors) > 0; first = false {
		batch := sensors[:min(len(sensors), monitor.MaxStatusSensors)]
		sensors = sensors[len(batch):]
		var st monitor.Status
		m, err := a.Bus().Request(ctx, monitor.AddressStatus, monitor.StatusRequest{Sensors: batch}, bus.Timeout(5*time.Second))
		if err != nil {
			return all, fmt.Errorf("app: analytics status: %w", err)
		}
		if err := m.Decode(&st); err != nil {
			return all, fmt.Errorf("app: analytics status: %w", err)
		}
		maps.Copy(all.Sensors, st.Sensors)
		all.Truncated = all.Truncated || st.Truncated
		all.Unopened, all.Alerts = st.Unopened, st.Alerts
	}
	return all, nil
}

// State returns the latest collected state (what /api/state serves).
func (a *App) State() State { return a.collector.get() }

// Run prints the banner and a one-line summary per Config.Summary until
// ctx ends.
func (a *App) Run(ctx context.Context) error {
	out := a.opts.Out
	var names []string
	for _, n := range a.nodes {
		names = append(names, n.cfg.Name)
	}
	fmt.Fprintf(out, "water: %d sensors every %v (%.0f readings/s), security %s, nodes %s (this process: %s)\n",
		a.cfg.Sensors.Count, a.cfg.Sensors.Period, a.cfg.Sensors.Rate(), a.cfg.Security, nodeNames(a.cfg), strings.Join(names, ", "))
	fmt.Fprintf(out, "NATS clients (cloister tap --servers ...): %s\n", a.NATSURL())
	if m := a.manifestSummary(); m != "" {
		fmt.Fprintln(out, m)
	}
	if u := a.DashboardURL(); u != "" {
		fmt.Fprintf(out, "dashboard: %s\n", u)
	}
	for _, n := range a.nodes {
		if addr := n.node.OpsAddr(); addr != "" {
			fmt.Fprintf(out, "metrics of node %s: http://%s%s (health %s, %s)\n", n.cfg.Name, addr, node.PathMetrics, node.PathHealthz, node.PathReadyz)
		}
	}
	for _, l := range a.guarantees() {
		fmt.Fprintln(out, l)
	}
	if a.cfg.Summary < 0 {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(a.cfg.Summary)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			fmt.Fprintln(out, a.collector.get().Summary())
		}
	}
}

func nodeNames(c *Config) string {
	var s []string
	for _, n := range c.Nodes {
		s = append(s, n.Name+"["+strings.Join(n.Services, ",")+"]")
	}
	return strings.Join(s, " ")
}

// guarantees says what is and is not in force, plainly.
func (a *App) guarantees() []string {
	var l []string
	switch a.cfg.Security {
	case SecurityCoordinator:
		l = append(l, "in force: the coordinator enclave holds the manifest "+a.manifest.HashHex()[:16]+"…; analytics got its client-channel key only after the coordinator verified its evidence against the manifest; the sensors verified the coordinator, pin the manifest hash, and seal every reading (HPKE, X-Wing) to the key it signed; the trusted runtime opens them inside the enclave; ingest, NATS, JetStream and the disk see ciphertext; analytics' state is sealed protected storage",
			"NOT in force: SGX — the process backend isolates the enclaves' address spaces only; their evidence and seal keys are SIMULATED (the manifest allows simulation) and promise nothing against a malicious host",
			"declassified by design: alerts (sensor, kind, severity, time) and per-sensor counts travel in the clear")
		return l
	case SecurityChannel:
		l = append(l, "in force: readings are sealed (HPKE, X-Wing) to the channel key the analytics enclave attests; ingest, NATS, JetStream and the disk see ciphertext; analytics' state is sealed protected storage")
	default:
		l = append(l, "NOT in force: security is plain — readings cross the bus and JetStream in the clear")
	}
	l = append(l, "NOT in force: SGX — the process backend isolates the enclave's address space only; its evidence and seal keys are SIMULATED and promise nothing against a malicious host",
		"NOT in force in this mode: the coordinator and manifest (security: coordinator) — the sensors trust the measurement of the image this process built; alerts and counts travel in the clear by design (declassified)")
	return l
}

// Close stops the dashboard, the services and the nodes, and removes a
// temporary state directory.
func (a *App) Close(ctx context.Context) error {
	var errs []error
	if a.stopBG != nil {
		a.stopBG()
		a.bgDone.Wait()
	}
	if a.http != nil {
		if err := a.http.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	} else if a.ln != nil {
		a.ln.Close() // opened at start, never served
	}
	// Ingest stops retrying at once: what it has not handed to analytics
	// stays in JetStream for the next run.
	for _, g := range a.ingests {
		g.halt()
	}
	// Stop the producers first (the JetStream node started last).
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
	return errors.Join(errs...)
}
