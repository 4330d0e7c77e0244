package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/tracing"
)

// Service is a unit of deployment: Start registers its consumers through
// the instance, Stop releases what Start acquired. Both get a context that
// bounds how long they may take.
type Service interface {
	Start(ctx context.Context, inst *Instance) error
	Stop(ctx context.Context) error
}

// HealthChecker is implemented by services that can tell whether they
// work; a non-nil error marks the deployment DOWN.
type HealthChecker interface {
	Health(ctx context.Context) error
}

// Mode chooses how an instance's handlers run.
type Mode int

const (
	// EventLoop runs each instance's handlers on one goroutine of its own.
	EventLoop Mode = iota
	// Worker runs handlers on a bounded pool; they may block.
	Worker
)

func (m Mode) String() string {
	if m == Worker {
		return "worker"
	}
	return "event-loop"
}

// DefaultWorkerPoolSize is the worker pool of a Worker deployment unless
// DeployOptions.WorkerPoolSize says otherwise.
const DefaultWorkerPoolSize = 20

// DeployOptions configure one deployment.
type DeployOptions struct {
	// Name identifies the deployment in logs and health; defaults to the
	// service's Go type.
	Name string
	// Instances is how many instances to start (default 1).
	Instances int
	// Config is handed to every instance, as JSON (see Instance.Config).
	Config any
	// Mode is EventLoop (default) or Worker.
	Mode Mode
	// WorkerPoolSize bounds the pool of a Worker deployment.
	WorkerPoolSize int
}

// Options configure a node.
type Options struct {
	// Bus is the node's bus; the node owns it and closes it at Shutdown.
	// Nil means a new in-process bus.
	Bus *bus.Bus
	// Logger defaults to the bus's logger.
	Logger *slog.Logger
	// BlockedThreshold is how long a handler may hold an event loop
	// before a warning (default 2 s).
	BlockedThreshold time.Duration
	// BlockedCheckInterval is how often loops are checked (default
	// BlockedThreshold / 4).
	BlockedCheckInterval time.Duration
	// Ops configures the operations endpoint (Prometheus metrics,
	// /healthz, /readyz); off unless Ops.Listen is set.
	Ops OpsOptions
	// Tracing configures W3C trace context in message headers and
	// OpenTelemetry spans exported over OTLP/HTTP; off unless
	// Tracing.Endpoint (or Tracing.Exporter) is set. The node names the
	// spans of requests its enclaves handle unless Tracing.EnclaveAddress
	// is set.
	Tracing tracing.Options
	// Simulation is the simulation trust root of the enclaves this node
	// hosts on the process and inproc backends: it signs their simulated
	// evidence and roots their simulated seal keys. The program decides
	// where it lives; the node never looks for one. Nil: those enclaves
	// have no evidence and no protected storage (they say so when asked).
	Simulation *attest.SimulationRoot
}

// Node hosts deployments of services on one bus.
type Node struct {
	bus       *bus.Bus
	logger    *slog.Logger
	threshold time.Duration
	sim       *attest.SimulationRoot

	mu          sync.Mutex
	deployments []*deployment // in order of deployment
	closed      bool

	stopChecker chan struct{}
	checkerDone chan struct{}

	opsOpts OpsOptions
	ops     *ops            // nil when the node serves no operations endpoint
	tracer  *tracing.Tracer // nil when the node does not trace
	cmu     sync.Mutex
	checks  []ReadinessCheck
}

// ErrShutdown is returned by operations on a node that has shut down.
var ErrShutdown = errors.New("node: shut down")

// New starts a node.
func New(opts Options) (*Node, error) {
	if opts.Bus == nil {
		b, err := bus.New()
		if err != nil {
			return nil, err
		}
		opts.Bus = b
	}
	if opts.Logger == nil {
		opts.Logger = opts.Bus.Logger()
	}
	if opts.BlockedThreshold < 0 || opts.BlockedCheckInterval < 0 {
		return nil, fmt.Errorf("node: negative blocked-thread threshold or interval")
	}
	if opts.BlockedThreshold == 0 {
		opts.BlockedThreshold = 2 * time.Second
	}
	if opts.BlockedCheckInterval == 0 {
		opts.BlockedCheckInterval = opts.BlockedThreshold / 4
	}
	if err := opts.Ops.check(); err != nil {
		return nil, err
	}
	n := &Node{
		bus:         opts.Bus,
		logger:      opts.Logger,
		threshold:   opts.BlockedThreshold,
		stopChecker: make(chan struct{}),
		checkerDone: make(chan struct{}),
		opsOpts:     opts.Ops,
		sim:         opts.Simulation,
	}
	if opts.Tracing.Endpoint != "" || opts.Tracing.Exporter != nil {
		topts := opts.Tracing
		if topts.EnclaveAddress == nil {
			topts.EnclaveAddress = n.servesEnclave
		}
		t, err := tracing.New(context.Background(), topts)
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		t.Install(n.bus)
		n.tracer = t
	}
	o, err := startOps(n, opts.Ops)
	if err != nil {
		if n.tracer != nil {
			_ = n.tracer.Shutdown(context.Background())
		}
		return nil, err
	}
	n.ops = o
	go n.checkBlocked(opts.BlockedCheckInterval)
	return n, nil
}

// Bus returns the node's bus.
func (n *Node) Bus() *bus.Bus { return n.bus }

// Logger returns the node's logger.
func (n *Node) Logger() *slog.Logger { return n.logger }

type deployment struct {
	id        string
	name      string
	opts      DeployOptions
	instances []*Instance
	pools     []*pool
	deployed  time.Time
	stopping  bool
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Deploy starts opts.Instances instances made by newService and returns
// the deployment's ID. If any instance fails to start, the ones already
// started are stopped and the error is returned.
func (n *Node) Deploy(ctx context.Context, newService func() Service, opts DeployOptions) (string, error) {
	if newService == nil {
		return "", errors.New("node: Deploy: nil service constructor")
	}
	if opts.Instances == 0 {
		opts.Instances = 1
	}
	if opts.Instances < 0 {
		return "", fmt.Errorf("node: Deploy: instances must be positive, got %d", opts.Instances)
	}
	if opts.Mode == Worker && opts.WorkerPoolSize == 0 {
		opts.WorkerPoolSize = DefaultWorkerPoolSize
	}
	if opts.WorkerPoolSize < 0 {
		return "", fmt.Errorf("node: Deploy: worker pool size must be positive, got %d", opts.WorkerPoolSize)
	}
	var config json.RawMessage
	if opts.Config != nil {
		raw, err := json.Marshal(opts.Config)
		if err != nil {
			return "", fmt.Errorf("node: Deploy: config is not JSON-encodable: %w", err)
		}
		config = raw
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return "", ErrShutdown
	}
	n.mu.Unlock()

	d := &deployment{id: newID(), opts: opts, deployed: time.Now()}
	var shared *pool
	if opts.Mode == Worker {
		shared = newPool(opts.WorkerPoolSize)
		d.pools = append(d.pools, shared)
	}
	for i := range opts.Instances {
		svc := newService()
		if svc == nil {
			n.abortDeploy(d)
			return "", errors.New("node: Deploy: the service constructor returned nil")
		}
		if d.name == "" {
			d.name = opts.Name
			if d.name == "" {
				d.name = fmt.Sprintf("%T", svc)
			}
		}
		exec := shared
		if exec == nil {
			exec = newPool(1)
			d.pools = append(d.pools, exec)
		}
		inst := &Instance{node: n, dep: d, index: i, service: svc, exec: exec, config: config}
		inst.logger = n.logger.With("deployment", d.name, "instance", i)
		d.instances = append(d.instances, inst)
		if err := svc.Start(ctx, inst); err != nil {
			inst.startFailed = true
			n.abortDeploy(d)
			return "", fmt.Errorf("node: deploy %s: instance %d failed to start: %w", d.name, i, err)
		}
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.abortDeploy(d)
		return "", ErrShutdown
	}
	n.deployments = append(n.deployments, d)
	n.mu.Unlock()
	n.logger.Info("node: deployed", "deployment", d.name, "id", d.id, "instances", opts.Instances, "mode", opts.Mode.String())
	return d.id, nil
}

func (n *Node) abortDeploy(d *deployment) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.stopDeployment(ctx, d)
}

// Undeploy stops the deployment id: its consumers stop accepting, their
// buffered messages drain until ctx ends, then its instances are stopped.
func (n *Node) Undeploy(ctx context.Context, id string) error {
	n.mu.Lock()
	var d *deployment
	for i, x := range n.deployments {
		if x.id == id {
			d = x
			n.deployments = append(n.deployments[:i:i], n.deployments[i+1:]...)
			break
		}
	}
	n.mu.Unlock()
	if d == nil {
		return fmt.Errorf("node: no deployment %q", id)
	}
	return n.stopDeployment(ctx, d)
}

func (n *Node) stopDeployment(ctx context.Context, d *deployment) error {
	n.mu.Lock()
	d.stopping = true
	n.mu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, inst := range d.instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := inst.unregisterAll(ctx); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i := len(d.instances) - 1; i >= 0; i-- {
		inst := d.instances[i]
		if inst.startFailed {
			continue
		}
		if err := inst.service.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("instance %d: stop: %w", inst.index, err))
		}
	}
	for _, p := range d.pools {
		if !p.close(ctx) {
			errs = append(errs, fmt.Errorf("handlers still running at the deadline: %w", ctx.Err()))
			break
		}
	}
	if len(errs) > 0 {
		err := fmt.Errorf("node: undeploy %s: %w", d.name, errors.Join(errs...))
		n.logger.Warn("node: undeployed with errors", "deployment", d.name, "id", d.id, "error", err)
		return err
	}
	n.logger.Info("node: undeployed", "deployment", d.name, "id", d.id)
	return nil
}

// Shutdown stops the node gracefully: deployments are undeployed in the
// reverse order of their deployment, each draining its buffered messages
// until ctx ends, then the bus is closed.
func (n *Node) Shutdown(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	deps := n.deployments
	n.deployments = nil
	n.mu.Unlock()
	var errs []error
	for i := len(deps) - 1; i >= 0; i-- {
		if err := n.stopDeployment(ctx, deps[i]); err != nil {
			errs = append(errs, err)
		}
	}
	close(n.stopChecker)
	<-n.checkerDone
	if err := n.ops.close(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.bus.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if n.tracer != nil {
		if err := n.tracer.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Status is a deployment's health.
type Status string

// Health statuses.
const (
	StatusUp   Status = "UP"
	StatusDown Status = "DOWN"
)

// DeploymentHealth describes one deployment.
type DeploymentHealth struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Status    Status    `json:"status"`
	Instances int       `json:"instances"`
	Mode      string    `json:"mode"`
	Deployed  time.Time `json:"deployed"`
	// Error says why the deployment is DOWN.
	Error string `json:"error,omitempty"`
	// Messages handled and refused by the deployment's consumers.
	Handled    uint64 `json:"handled"`
	Overflowed uint64 `json:"overflowed"`
	Rejected   uint64 `json:"rejected"`
	Pending    int    `json:"pending"`
}

// Health reports every deployment, in order of deployment. Services that
// implement HealthChecker are asked (bounded by ctx).
func (n *Node) Health(ctx context.Context) []DeploymentHealth {
	n.mu.Lock()
	deps := append([]*deployment(nil), n.deployments...)
	n.mu.Unlock()
	out := make([]DeploymentHealth, 0, len(deps))
	for _, d := range deps {
		h := DeploymentHealth{ID: d.id, Name: d.name, Status: StatusUp, Instances: len(d.instances), Mode: d.opts.Mode.String(), Deployed: d.deployed}
		n.mu.Lock()
		stopping := d.stopping
		n.mu.Unlock()
		if stopping {
			h.Status, h.Error = StatusDown, "stopping"
		}
		for _, inst := range d.instances {
			st := inst.stats()
			h.Handled += st.Handled
			h.Overflowed += st.Overflowed
			h.Rejected += st.Rejected
			h.Pending += st.Pending
			if hc, ok := inst.service.(HealthChecker); ok && h.Status == StatusUp {
				if err := hc.Health(ctx); err != nil {
					h.Status, h.Error = StatusDown, fmt.Sprintf("instance %d: %v", inst.index, err)
				}
			}
		}
		out = append(out, h)
	}
	return out
}

// checkBlocked is the blocked-thread checker: it warns about event loops
// held longer than the threshold.
func (n *Node) checkBlocked(interval time.Duration) {
	defer close(n.checkerDone)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-n.stopChecker:
			return
		case now := <-tick.C:
			n.mu.Lock()
			deps := append([]*deployment(nil), n.deployments...)
			n.mu.Unlock()
			for _, dep := range deps {
				if dep.opts.Mode != EventLoop {
					continue
				}
				for i, p := range dep.pools {
					if held, blocked := p.runners[0].blockedFor(now, n.threshold); blocked {
						n.logger.Warn("node: event loop blocked: a handler is holding it; move blocking work to a Worker deployment",
							"deployment", dep.name, "instance", i, "blocked_for", held.Round(time.Millisecond), "threshold", n.threshold)
					}
				}
			}
		}
	}
}

// Tracer returns the node's tracer (nil when it does not trace), for
// spans of the application's own: Tracer().TracerProvider().
func (n *Node) Tracer() *tracing.Tracer { return n.tracer }

// servesEnclave reports whether an enclave of this node serves address.
func (n *Node) servesEnclave(address string) bool {
	for _, es := range n.enclaveServices() {
		for _, a := range es.svc.e.Addresses() {
			if a == address {
				return true
			}
		}
	}
	return false
}
