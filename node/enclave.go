package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/enclave"
)

// Enclave backends a node can host an enclave on.
const (
	BackendProcess = "process" // the image as a child process (default)
	BackendInProc  = "inproc"  // in the node's process: no isolation, tests only
	BackendGramine = "gramine" // under gramine-sgx (real SGX)
)

// EnclaveConfig is one enclave hosted by a node: one entry of a node's
// configuration. It decodes from JSON or YAML.
type EnclaveConfig struct {
	// Name names the deployment (logs, health, failures); required.
	Name string `json:"name" yaml:"name"`
	// Image is the enclave image built by 'cloister enclave build'; its
	// metadata file must be beside it and match it.
	Image string `json:"image,omitempty" yaml:"image,omitempty"`
	// Backend is "process" (default), "inproc" or "gramine".
	Backend string `json:"backend,omitempty" yaml:"backend,omitempty"`
	// Transport is how frames cross to a process or gramine enclave: ""
	// or "shm" (the default: shared-memory rings, the pipes when the image
	// does not take them) or "pipe" (pipes only).
	Transport string `json:"transport,omitempty" yaml:"transport,omitempty"`
	// Instances is how many enclave instances to run (default 1); the bus
	// spreads requests over them.
	Instances int `json:"instances,omitempty" yaml:"instances,omitempty"`
	// Addresses the enclave may serve: exact addresses or patterns ("*" one
	// segment, a final ">" the rest). The node consumes the addresses the
	// image registers that these allow; empty allows all of them.
	Addresses []string `json:"addresses,omitempty" yaml:"addresses,omitempty"`
	// Service is the enclave's service name in the application manifest:
	// the image joins the coordinator as this service at start-up (told
	// in Init; images that fix their service keep theirs). Empty: the
	// image decides.
	Service string `json:"service,omitempty" yaml:"service,omitempty"`
	// Local makes the enclave's consumers reachable from this node only.
	Local bool `json:"local,omitempty" yaml:"local,omitempty"`
	// Workers is the handler concurrency asked of the image (told in Init,
	// which the image takes unless it fixed its own) and sizes the Gramine
	// thread count.
	Workers int `json:"workers,omitempty" yaml:"workers,omitempty"`
	// StateDir keeps the enclave's protected storage (sealed blobs only);
	// default IMAGE.state/NAME beside the image.
	StateDir string `json:"state_dir,omitempty" yaml:"state_dir,omitempty"`
	// MemoryLimit is the image's Go memory limit in bytes (GOMEMLIMIT); 0
	// keeps the image's default.
	MemoryLimit int64 `json:"memory_limit,omitempty" yaml:"memory_limit,omitempty"`
	// Env is extra environment for the enclave process ("KEY=VALUE"), such
	// as GOMAXPROCS for an image whose handlers compute in parallel
	// (trusted images use one processor by default).
	Env []string `json:"env,omitempty" yaml:"env,omitempty"`
	// StartTimeout, RestartBackoff and MaxRestartBackoff tune the
	// supervisor (enclave package defaults when zero).
	StartTimeout      time.Duration `json:"start_timeout,omitempty" yaml:"start_timeout,omitempty"`
	RestartBackoff    time.Duration `json:"restart_backoff,omitempty" yaml:"restart_backoff,omitempty"`
	MaxRestartBackoff time.Duration `json:"max_restart_backoff,omitempty" yaml:"max_restart_backoff,omitempty"`
	// Gramine shapes the manifest of the gramine backend.
	Gramine enclave.GramineOptions `json:"gramine,omitzero" yaml:"gramine,omitempty"`
	// Serve is the trusted runtime of an inproc enclave, such as
	// (*trusted.App).Serve.
	Serve enclave.ServeFunc `json:"-" yaml:"-"`
	// InitConfig is handed to the image in Init.
	InitConfig []byte `json:"-" yaml:"-"`
	// SealSecret is the simulated platform secret (default: that of the
	// node's Options.Simulation).
	SealSecret []byte `json:"-" yaml:"-"`
}

// DeployEnclave hosts an enclave as a deployment of this node and returns
// its ID. Each instance runs its own supervised enclave; the node consumes
// the addresses the image reported (those cfg.Addresses allow), hands every
// delivery to the enclave and returns, so many requests are in flight at
// once. While an instance restarts, the deployment's health is DOWN and its
// requests fail at once with a recipient failure naming the enclave.
func (n *Node) DeployEnclave(ctx context.Context, cfg EnclaveConfig) (string, error) {
	if cfg.Name == "" {
		return "", errors.New("node: enclave: config needs a name")
	}
	if cfg.Backend == "" {
		cfg.Backend = BackendProcess
	}
	if cfg.Instances < 0 || cfg.Workers < 0 || cfg.MemoryLimit < 0 {
		return "", fmt.Errorf("node: enclave %s: negative instances, workers or memory limit", cfg.Name)
	}
	var transport enclave.Transport
	switch cfg.Transport {
	case "", "shm":
	case "pipe":
		transport = enclave.TransportPipe
	default:
		return "", fmt.Errorf("node: enclave %s: transport %q: want shm or pipe", cfg.Name, cfg.Transport)
	}
	var img *enclave.Image
	if cfg.Image != "" {
		var err error
		if img, err = enclave.Load(cfg.Image); err != nil {
			return "", fmt.Errorf("node: enclave %s: %w", cfg.Name, err)
		}
	}
	env := append([]string(nil), cfg.Env...)
	if cfg.MemoryLimit > 0 {
		env = append(env, "GOMEMLIMIT="+strconv.FormatInt(cfg.MemoryLimit, 10))
	}
	var backend enclave.Backend
	switch cfg.Backend {
	case BackendProcess:
		if img == nil {
			return "", fmt.Errorf("node: enclave %s: the process backend needs an image", cfg.Name)
		}
		backend = enclave.NewProcess(enclave.ProcessOptions{Transport: transport})
	case BackendInProc:
		if cfg.Serve == nil {
			return "", fmt.Errorf("node: enclave %s: the inproc backend runs a trusted runtime in this process and needs EnclaveConfig.Serve (an image file cannot run in process; use the process backend)", cfg.Name)
		}
		backend = enclave.NewInProc(cfg.Serve)
	case BackendGramine:
		if img == nil {
			return "", fmt.Errorf("node: enclave %s: the gramine backend needs an image", cfg.Name)
		}
		g := cfg.Gramine
		if g.Threads == 0 && cfg.Workers > 0 {
			g.Threads = max(enclave.DefaultGramineThreads, cfg.Workers+16)
		}
		if g.MemoryLimit == 0 {
			g.MemoryLimit = cfg.MemoryLimit
		}
		if transport == enclave.TransportPipe {
			g.PipeOnly = true
		}
		backend = enclave.NewGramine(enclave.GramineBackendOptions{Manifest: g})
	default:
		return "", fmt.Errorf("node: enclave %s: unknown backend %q (want process, inproc or gramine)", cfg.Name, cfg.Backend)
	}
	stateDir := cfg.StateDir
	if stateDir == "" {
		if img == nil {
			return "", fmt.Errorf("node: enclave %s: without an image, set StateDir for its protected storage", cfg.Name)
		}
		stateDir = filepath.Join(img.Path+".state", cfg.Name)
	}
	fs, err := enclave.NewFileStore(stateDir)
	if err != nil {
		return "", fmt.Errorf("node: enclave %s: %w", cfg.Name, err)
	}
	store := &meteredStore{BatchStore: fs}
	ecfg := enclave.Config{
		Name: cfg.Name, Image: img, Backend: backend, Bus: n.bus, Store: store, Logger: n.logger,
		Allow: cfg.Addresses, Env: env, InitConfig: cfg.InitConfig, SealSecret: cfg.SealSecret,
		Workers: cfg.Workers, Service: cfg.Service,
		Simulation:   n.sim,
		StartTimeout: cfg.StartTimeout, RestartBackoff: cfg.RestartBackoff, MaxRestartBackoff: cfg.MaxRestartBackoff,
	}
	// Check the configuration once before any instance starts.
	if _, err := enclave.New(ecfg); err != nil {
		return "", fmt.Errorf("node: %w", err)
	}
	return n.Deploy(ctx, func() Service { return &enclaveService{cfg: ecfg, local: cfg.Local, store: store} },
		DeployOptions{Name: cfg.Name, Instances: cfg.Instances})
}

// enclaveService is one enclave instance as a node service.
type enclaveService struct {
	cfg   enclave.Config
	local bool
	store *meteredStore // shared by the deployment's instances
	e     *enclave.Enclave
}

func (s *enclaveService) Start(ctx context.Context, inst *Instance) error {
	cfg := s.cfg
	cfg.Instance = inst.Index()
	e, err := enclave.New(cfg)
	if err != nil {
		return err
	}
	if err := e.Start(ctx); err != nil {
		return err
	}
	s.e = e
	for _, a := range e.Addresses() {
		// The enclave's HandleMessage only queues a frame for the enclave:
		// it runs in the delivering goroutine, saving a hand-off.
		if s.local {
			_, err = inst.LocalConsumer(a, e, bus.Inline())
		} else {
			_, err = inst.Consumer(a, e, bus.Inline())
		}
		if err != nil {
			_ = e.Stop(ctx)
			return fmt.Errorf("consume %q: %w", a, err)
		}
	}
	inst.Logger().Info("node: enclave serving", "addresses", e.Addresses(), "pid", e.PID(), "backend", cfg.Backend.Name())
	return nil
}

func (s *enclaveService) Stop(ctx context.Context) error {
	if s.e == nil {
		return nil
	}
	return s.e.Stop(ctx)
}

// Health reports the enclave DOWN while it is restarting or unhealthy.
func (s *enclaveService) Health(ctx context.Context) error {
	if s.e == nil {
		return errors.New("enclave not started")
	}
	return s.e.Health(ctx)
}

// EnclaveInstance describes one enclave instance hosted by a node.
type EnclaveInstance struct {
	DeploymentID string `json:"deployment_id"`
	Name         string `json:"name"`
	Instance     int    `json:"instance"`
	// PID is the enclave's process ID (0 while it is down, or in process).
	PID      int      `json:"pid"`
	State    string   `json:"state"`
	Restarts int      `json:"restarts"`
	Serving  []string `json:"serving"`
	// InFlight is how many requests wait for the enclave's answer.
	InFlight int `json:"in_flight"`
	// FramesIn and FramesOut count the boundary frames the running
	// instance was sent (ECALLs and OCALL results: each one the enclave
	// must take in) and sent back (answers and OCALLs).
	FramesIn  uint64 `json:"frames_in"`
	FramesOut uint64 `json:"frames_out"`
	// Transport is how frames cross to it: "shm", "pipe", "inproc", or ""
	// while it is down (see enclave.Enclave.Transport).
	Transport string `json:"transport,omitempty"`
}

// Enclaves lists the enclave instances this node hosts, in order of
// deployment.
func (n *Node) Enclaves() []EnclaveInstance {
	var out []EnclaveInstance
	for _, es := range n.enclaveServices() {
		e := es.svc.e
		st := e.Stats()
		out = append(out, EnclaveInstance{DeploymentID: es.deploymentID, Name: es.name, Instance: es.index,
			PID: e.PID(), State: e.State().String(), Restarts: e.Restarts(), Serving: e.Addresses(),
			InFlight: e.InFlight(), FramesIn: st.FramesSent, FramesOut: st.FramesReceived, Transport: e.Transport()})
	}
	return out
}

// EnclaveRejections returns, for every enclave instance this node hosts
// that is up ("NAME/INSTANCE"), the messages its trusted runtime rejected on
// secured and client-channel addresses, by address and reason (counts only;
// see enclave.Enclave.Rejections). Instances that cannot answer (down,
// restarting, or not answering within ctx) are left out.
func (n *Node) EnclaveRejections(ctx context.Context) map[string]map[string]map[string]uint64 {
	out := map[string]map[string]map[string]uint64{}
	for _, es := range n.enclaveServices() {
		if r, err := es.svc.e.Rejections(ctx); err == nil {
			out[es.svc.e.Name()] = r
		}
	}
	return out
}

// enclaveEntry is one enclave instance the node hosts.
type enclaveEntry struct {
	deploymentID, name string
	index              int
	svc                *enclaveService
}

// enclaveServices lists the node's started enclave instances, in order of
// deployment.
func (n *Node) enclaveServices() []enclaveEntry {
	n.mu.Lock()
	deps := append([]*deployment(nil), n.deployments...)
	n.mu.Unlock()
	var out []enclaveEntry
	for _, d := range deps {
		for _, inst := range d.instances {
			if s, ok := inst.service.(*enclaveService); ok && s.e != nil {
				out = append(out, enclaveEntry{deploymentID: d.id, name: d.name, index: inst.index, svc: s})
			}
		}
	}
	return out
}
