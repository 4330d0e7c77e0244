package app

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
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
	"strings"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/application"
	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/examples/water/monitor"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
)

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
	// of one application in several processes need the same root. Nil:
	// this machine's root (application.DefaultSimulationDir).
	Simulation *attest.SimulationRoot
}

// App is a running water application (the nodes of this process).
type App struct {
	cfg      *Config
	opts     Options
	logger   *slog.Logger
	stateDir string
	tempDir  bool
	app      *application.App // the nodes, enclaves, coordinator and services
	img      *enclave.Image
	// The coordinator mode's image and manifest.
	coordImg *enclave.Image
	manifest *manifest.Manifest
	creds    Credentials // the sensors' client credentials

	http *http.Server
	ln   net.Listener

	collector *collector
	ingests   []*ingest
	stopBG    context.CancelFunc
	bgDone    sync.WaitGroup
}

// ErrStateDir is wrapped when the state directory cannot be used: it is
// a file, cannot be created, or is not writable.
var ErrStateDir = application.ErrStateDir

// Start starts the nodes of cfg (all of them, or opts.Only) and their
// services: the water services are Go services of an application
// description (see Description) that the application package starts with
// the analytics image, built first if needed, and the coordinator.
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
	if err := cfg.Check(); err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	hasNode := false
	for _, nc := range cfg.Nodes {
		if opts.Only != "" && nc.Name != opts.Only {
			continue
		}
		hasNode = true
		if slices.Contains(nc.Services, ServiceDashboard) {
			if a.ln, err = net.Listen("tcp", cfg.Dashboard); err != nil {
				return nil, fmt.Errorf("app: dashboard: cannot listen on %s (is the port in use? set dashboard:, or --dashboard 127.0.0.1:0 for any free port): %w", cfg.Dashboard, err)
			}
		}
	}
	if !hasNode {
		return nil, fmt.Errorf("app: no node %q in the configuration", opts.Only)
	}
	// The fixed ports, before anything is written.
	ports := &application.Config{Only: opts.Only}
	for _, nc := range cfg.Nodes {
		ports.Nodes = append(ports.Nodes, application.Node{Name: nc.Name, NATSListen: nc.NATSListen, ClusterListen: nc.ClusterListen})
	}
	if err := ports.CheckPorts(); err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	a.stateDir = cfg.StateDir
	if a.stateDir == "" {
		d, err := os.MkdirTemp("", "cloister-water-")
		if err != nil {
			return nil, fmt.Errorf("app: %w", err)
		}
		a.stateDir, a.tempDir = d, true
	} else if err := application.PrepareStateDir(a.stateDir); err != nil {
		return nil, err
	}
	if cfg.Security == SecurityCoordinator {
		if a.creds, err = LoadOrCreateCredentials(a.stateDir, cfg.SensorIDs()); err != nil {
			return nil, err
		}
	}
	desc, err := a.description()
	if err != nil {
		return nil, err
	}
	desc.Simulation = opts.Simulation
	if a.app, err = application.New(ctx, desc); err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	a.img, a.coordImg, a.manifest = a.app.Image(ServiceAnalytics), a.app.CoordinatorImage(), a.app.Manifest()
	a.collector = newCollector(a)
	if err := a.app.Start(ctx, a.services()...); err != nil {
		return nil, fmt.Errorf("app: %w", err)
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

// Addresses are the water application's addresses and who may use them
// (the manifest is generated from them): water.readings is durable,
// water.analytics open to the sensors' client sessions.
func Addresses() map[string]application.Address {
	return map[string]application.Address{
		AddressReadings:          {Durable: true, Consume: []string{ServiceIngest}, Send: []string{ServiceSensors}},
		AddressReseal:            {Consume: []string{ServiceSensors}, Send: []string{ServiceIngest}},
		monitor.AddressAnalytics: {Clients: true, Consume: []string{ServiceAnalytics}, Send: []string{ServiceIngest}},
		monitor.AddressAttest:    {Consume: []string{ServiceAnalytics}, Send: []string{ServiceSensors, ServiceDashboard}},
		monitor.AddressStatus:    {Consume: []string{ServiceAnalytics}, Send: []string{ServiceDashboard}},
		monitor.AddressAlerts:    {Consume: []string{ServiceAlerts, ServiceDashboard}, Publish: []string{ServiceAnalytics}},
	}
}

// description is the application description of cfg: the analytics image,
// the regular services (Go services of this package), the addresses, the
// sensors as clients, the nodes.
func (a *App) description() (*application.Config, error) {
	cfg := a.cfg
	serves := []string{monitor.AddressAnalytics, monitor.AddressAnalytics + ".*"}
	if cfg.Security == SecurityCoordinator {
		serves = append(serves, provision.AddressEpoch) // key rotations reach the runtime
	}
	initCfg, _ := json.Marshal(map[string]bool{"allow_plain": cfg.Security == SecurityPlain})
	d := &application.Config{
		Name: cfg.Name, Program: ".", StateDir: a.stateDir, AckWait: cfg.AckWait,
		CoordinatorImage: cfg.Enclave.CoordinatorImage, NoCoordinator: cfg.Security != SecurityCoordinator,
		RestartBackoff: cfg.Enclave.RestartBackoff, MaxRestartBackoff: 2 * time.Second,
		Images: map[string]application.Image{ServiceAnalytics: {
			Package: AnalyticsPackage, File: cfg.Enclave.Image, Backend: cfg.Enclave.Backend, Serves: serves,
			InitConfig: initCfg, Signer: "cloister-examples", ProductID: 7, SVN: 1,
		}},
		Services: map[string]application.Service{
			ServiceSensors: {}, ServiceIngest: {Worker: true, Workers: 1}, ServiceAlerts: {}, ServiceDashboard: {},
		},
		Addresses: Addresses(),
		Only:      a.opts.Only, Out: a.opts.Out, Logger: a.logger,
		Metrics: a.opts.Metrics, TraceEndpoint: a.opts.TraceEndpoint,
	}
	if cfg.Enclave.Image != "" {
		img := d.Images[ServiceAnalytics]
		img.Package = ""
		d.Images[ServiceAnalytics] = img
	}
	if len(a.creds) > 0 {
		d.Clients = map[string]application.Client{}
		for id, k := range a.creds.publicKeys() {
			d.Clients[id] = application.Client{PublicKey: base64.StdEncoding.EncodeToString(k)}
		}
	}
	// Each node deploys what it runs in this order, so that alerts listen
	// before analytics raises any and ingest consumes before the sensors
	// send.
	order := []string{ServiceAlerts, ServiceAnalytics, ServiceIngest, ServiceSensors, ServiceDashboard}
	for _, nc := range cfg.Nodes {
		n := application.Node{Name: nc.Name, NATSListen: nc.NATSListen, ClusterListen: nc.ClusterListen, Routes: nc.Routes}
		for _, s := range order {
			if slices.Contains(nc.Services, s) {
				n.Run = append(n.Run, s)
			}
		}
		n.Coordinator = cfg.Security == SecurityCoordinator && slices.Contains(nc.Services, ServiceAnalytics)
		d.Nodes = append(d.Nodes, n)
	}
	if err := d.Check(); err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	return d, nil
}

// services are the water's Go services, for the nodes of this process.
func (a *App) services() []application.GoService {
	cfg := a.cfg
	logger := func(s string) *slog.Logger { return a.logger.With("node", cfg.NodeOf(s)) }
	var out []application.GoService
	add := func(name string, f func(nodeName string) node.Service) {
		nodeName := cfg.NodeOf(name)
		if a.opts.Only == "" || a.opts.Only == nodeName {
			out = append(out, application.GoService{Name: name, New: func() node.Service { return f(nodeName) }})
		}
	}
	add(ServiceAlerts, func(n string) node.Service { return &alerts{nodeName: n} })
	add(ServiceIngest, func(n string) node.Service {
		g := &ingest{nodeName: n, logger: logger(ServiceIngest), deadFile: filepath.Join(a.stateDir, "dead-letters-"+n+".jsonl")}
		a.ingests = append(a.ingests, g)
		return g
	})
	add(ServiceSensors, func(n string) node.Service {
		return &sensors{cfg: cfg, nodeName: n, measurement: a.img.Measurement, logger: logger(ServiceSensors),
			onAttest: a.collector.setAttestation, app: a, seqFile: filepath.Join(a.stateDir, "sensors-"+n+".json"),
			sessionsFile: filepath.Join(a.stateDir, "sensor-sessions-"+n+".json")}
	})
	add(ServiceDashboard, func(string) node.Service { return dashboardService{a} })
	return out
}

// Config returns the application's configuration.
func (a *App) Config() *Config { return a.cfg }

// Image returns the analytics enclave image.
func (a *App) Image() *enclave.Image { return a.img }

// Bus returns the bus of this process's first node.
func (a *App) Bus() *bus.Bus { return a.app.Bus() }

// NATSURL returns the NATS client URL of this process's first node (for
// cloister tap and other eavesdroppers).
func (a *App) NATSURL() string { return a.app.NATSURL() }

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
	return []*ecdsa.PublicKey{a.app.Simulation().PlatformPublicKey()}
}

// StateDir returns where the application keeps its state.
func (a *App) StateDir() string { return a.stateDir }

// Enclaves lists the enclave instances hosted by this process.
func (a *App) Enclaves() []node.EnclaveInstance { return a.app.Enclaves() }

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
	names := a.app.NodeNames()
	fmt.Fprintf(out, "water: %d sensors every %v (%.0f readings/s), security %s, nodes %s (this process: %s)\n",
		a.cfg.Sensors.Count, a.cfg.Sensors.Period, a.cfg.Sensors.Rate(), a.cfg.Security, nodeNames(a.cfg), strings.Join(names, ", "))
	fmt.Fprintf(out, "NATS clients (cloister tap -s ...): %s\n", a.NATSURL())
	if m := a.manifestSummary(); m != "" {
		fmt.Fprintln(out, m)
	}
	if u := a.DashboardURL(); u != "" {
		fmt.Fprintf(out, "dashboard: %s\n", u)
	}
	for _, name := range names {
		if addr := a.app.Node(name).OpsAddr(); addr != "" {
			fmt.Fprintf(out, "metrics of node %s: http://%s%s (health %s, %s)\n", name, addr, node.PathMetrics, node.PathHealthz, node.PathReadyz)
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
	// The nodes stop, the JetStream node (started last) first.
	if a.app != nil {
		if err := a.app.Stop(ctx); err != nil {
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
