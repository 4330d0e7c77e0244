package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/provision"
)

// Paths of the operations endpoint.
const (
	PathMetrics = "/metrics" // Prometheus text exposition
	PathHealthz = "/healthz" // alive: 200 while the node runs
	PathReadyz  = "/readyz"  // ready: 200 or 503 with a JSON Readiness
)

// Defaults of OpsOptions.
const (
	DefaultMaxAddressLabels = 256
	DefaultCheckTimeout     = 2 * time.Second
)

// OtherAddress is the address label of traffic to addresses that may not
// label metrics (neither consumed on the node nor allowed by
// OpsOptions.Addresses) or beyond OpsOptions.MaxAddressLabels. It is not a
// valid bus address, so it never collides with one.
const OtherAddress = "(other)"

// OpsOptions configure a node's operations endpoint: Prometheus metrics,
// liveness and readiness over HTTP. The zero value serves nothing and
// counts nothing.
type OpsOptions struct {
	// Listen is the host:port of the HTTP listener serving /metrics,
	// /healthz and /readyz. Empty (the default) serves nothing. The host
	// is required: 127.0.0.1 for this machine only (recommended; put a
	// proxy with authentication in front for remote scrapes), 0.0.0.0 for
	// every interface. Port 0 picks a free port; see Node.OpsAddr.
	Listen string
	// Addresses are address patterns ("*" one segment, a final ">" the
	// rest) whose traffic is labelled by address although no consumer of
	// this node serves them, such as the addresses of services on other
	// nodes this node sends to. Addresses consumed on the node always
	// label their traffic.
	Addresses []string
	// MaxAddressLabels bounds the distinct address labels of the bus
	// metrics (default DefaultMaxAddressLabels); traffic to further
	// addresses is counted under OtherAddress.
	MaxAddressLabels int
	// Coordinator makes the node ask the coordinator for its status (over
	// the bus, at each scrape and readiness check): its joins, refusals,
	// manifest and epoch become metrics, and the node is ready only while
	// the coordinator answers and holds a manifest.
	Coordinator bool
	// CheckTimeout bounds what a scrape or readiness check asks of
	// enclaves, the broker and the coordinator (default
	// DefaultCheckTimeout).
	CheckTimeout time.Duration
}

func (o *OpsOptions) check() error {
	if o.Listen != "" {
		if err := cluster.CheckListenAddress("ops listen address", o.Listen); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	for _, p := range o.Addresses {
		if err := bus.ValidatePattern(p); err != nil {
			return fmt.Errorf("node: ops addresses: %w", err)
		}
	}
	if o.MaxAddressLabels < 0 || o.CheckTimeout < 0 {
		return errors.New("node: ops: negative MaxAddressLabels or CheckTimeout")
	}
	if o.MaxAddressLabels == 0 {
		o.MaxAddressLabels = DefaultMaxAddressLabels
	}
	if o.CheckTimeout == 0 {
		o.CheckTimeout = DefaultCheckTimeout
	}
	return nil
}

// ops is a node's operations endpoint.
type ops struct {
	n        *Node
	opts     OpsOptions
	registry *prometheus.Registry
	labels   *addressLabels

	messages *prometheus.CounterVec
	failures *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	joins    *prometheus.CounterVec

	ln     net.Listener
	srv    *http.Server
	served chan struct{}

	hist       history
	stopSample chan struct{}
	sampleDone chan struct{}

	cmu    sync.Mutex
	checks []ReadinessCheck
}

// ReadinessCheck is a named condition of a node's readiness, added with
// Node.AddReadinessCheck.
type ReadinessCheck struct {
	// Name names the condition in the /readyz body.
	Name string
	// Check returns nil when the condition holds, or why not. It is
	// bounded by its context (OpsOptions.CheckTimeout).
	Check func(ctx context.Context) error
}

// startOps builds the registry, installs the bus observer and starts the
// listener; it does nothing when the endpoint is off.
func startOps(n *Node, opts OpsOptions) (*ops, error) {
	if opts.Listen == "" {
		return nil, nil
	}
	o := &ops{n: n, opts: opts, registry: prometheus.NewRegistry(), served: make(chan struct{})}
	o.labels = &addressLabels{bus: n.bus, patterns: opts.Addresses, max: opts.MaxAddressLabels}
	o.messages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloister_bus_messages_total",
		Help: "Messages this node's bus sent (op=send, publish, request, reply), successful or not, by address.",
	}, []string{"op", "address"})
	o.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloister_bus_failures_total",
		Help: "Operations of this node's bus that failed, by op, address and failure kind (timeout, no-handlers, recipient-failure, overflow, error).",
	}, []string{"op", "address", "failure"})
	o.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cloister_bus_request_duration_seconds",
		Help:    "Time from a request to its answer (reply or failure), by address.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"address"})
	o.joins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cloister_coordinator_join_replies_total",
		Help: "Answers a coordinator hosted on this node gave to joins, by result (granted, refused) and reason of a refusal (not-allowed, unknown-service, no-manifest, busy, bad-request, internal, other).",
	}, []string{"result", "reason"})
	o.registry.MustRegister(o.messages, o.failures, o.latency, o.joins, &nodeCollector{o: o},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.bus.AddObserver(o.observe)

	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("node: ops listener %s: %w", opts.Listen, err)
	}
	o.ln = ln
	mux := http.NewServeMux()
	mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(o.registry, promhttp.HandlerOpts{
		ErrorLog: slogPromLogger{n.logger}, ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET "+PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"alive"}` + "\n"))
	})
	mux.HandleFunc("GET "+PathReadyz, func(w http.ResponseWriter, r *http.Request) {
		rd := n.Readiness(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !rd.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rd)
	})
	o.pageRoutes(mux)
	o.stopSample, o.sampleDone = make(chan struct{}), make(chan struct{})
	go o.sampleLoop(o.stopSample, o.sampleDone)
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(o.served)
		if err := o.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.logger.Error("node: ops endpoint stopped", "error", err)
		}
	}()
	n.logger.Info("node: ops endpoint serving", "addr", ln.Addr().String(), "paths", []string{PathPage, PathMetrics, PathHealthz, PathReadyz, PathState})
	return o, nil
}

func (o *ops) close(ctx context.Context) error {
	if o == nil {
		return nil
	}
	close(o.stopSample)
	<-o.sampleDone
	err := o.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("node: ops endpoint: %w", err), o.srv.Close())
	}
	<-o.served
	return err
}

// observe is the bus observer counting the node's traffic.
func (o *ops) observe(out bus.Outcome) {
	addr := o.labels.label(out.Address)
	op := out.Op.String()
	o.messages.WithLabelValues(op, addr).Inc()
	if out.Err != nil {
		o.failures.WithLabelValues(op, addr, bus.FailureOf(out.Err).String()).Inc()
	}
	if out.Op == bus.OpRequest {
		o.latency.WithLabelValues(addr).Observe(out.Elapsed.Seconds())
	}
	if out.Op == bus.OpReply && out.Address == provision.AddressJoin && out.Err == nil {
		// The coordinator (an enclave of this node) answered a join: its
		// failure code, read from the reply's headers, is the reason.
		if out.Headers[bus.HeaderFailure] == "" {
			o.joins.WithLabelValues("granted", "").Inc()
		} else {
			o.joins.WithLabelValues("refused", joinRefusal(out.Headers[bus.HeaderFailureCode])).Inc()
		}
	}
}

// joinRefusal names the reason of a coordinator's refusal code.
func joinRefusal(code string) string {
	switch code {
	case strconv.Itoa(provision.CodeRefused):
		return "not-allowed"
	case strconv.Itoa(provision.CodeNotFound):
		return "unknown-service"
	case strconv.Itoa(provision.CodeNoManifest):
		return "no-manifest"
	case strconv.Itoa(provision.CodeTooMany):
		return "busy"
	case strconv.Itoa(provision.CodeBadRequest):
		return "bad-request"
	case strconv.Itoa(provision.CodeInternal):
		return "internal"
	}
	return "other"
}

// addressLabels decides which addresses may label metrics: those consumed
// on the node, those the options allow, up to a maximum. Addresses come
// from the code that sends (or the consumer registered), never from
// message contents, and their number is bounded all the same.
type addressLabels struct {
	bus      *bus.Bus
	patterns []string
	max      int
	known    sync.Map // address → struct{}: admitted labels
	mu       sync.Mutex
	n        int
}

func (l *addressLabels) label(address string) string {
	if _, ok := l.known.Load(address); ok {
		return address
	}
	if !l.allowed(address) {
		return OtherAddress
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.known.Load(address); ok {
		return address
	}
	if l.n >= l.max {
		return OtherAddress
	}
	l.n++
	l.known.Store(address, struct{}{})
	return address
}

func (l *addressLabels) allowed(address string) bool {
	for _, p := range l.patterns {
		if bus.MatchAddress(p, address) {
			return true
		}
	}
	for _, c := range l.bus.Consumers() {
		if c.Address() == address {
			return true
		}
	}
	return false
}

// slogPromLogger passes the metrics handler's errors to the node's logger.
type slogPromLogger struct{ l *slog.Logger }

func (s slogPromLogger) Println(v ...any) { s.l.Warn("node: metrics: " + fmt.Sprint(v...)) }

// OpsAddr returns the address the operations endpoint listens on
// (host:port, with the port chosen when OpsOptions.Listen asked for 0), or
// "" when the node serves none.
func (n *Node) OpsAddr() string {
	if n.ops == nil {
		return ""
	}
	return n.ops.ln.Addr().String()
}

// Registry returns the node's Prometheus registry, served at /metrics, for
// callers that add metrics of their own; nil when the node serves no
// operations endpoint. Each node has its own registry: nothing is
// registered with the global default registerer.
func (n *Node) Registry() *prometheus.Registry {
	if n.ops == nil {
		return nil
	}
	return n.ops.registry
}

// AddReadinessCheck adds a condition of the node's readiness (see
// Node.Readiness). It is asked whether or not the node serves an
// operations endpoint.
func (n *Node) AddReadinessCheck(c ReadinessCheck) {
	n.cmu.Lock()
	defer n.cmu.Unlock()
	n.checks = append(n.checks, c)
}

// Readiness is the answer of /readyz.
type Readiness struct {
	// Ready is true when every condition holds.
	Ready bool `json:"ready"`
	// NotReady names each condition that does not hold and why, such as
	// {"enclave analytics/0", "restarting: ..."}; empty when ready.
	NotReady []NotReady `json:"not_ready,omitempty"`
	// Checked lists the conditions checked.
	Checked []string `json:"checked"`
}

// NotReady is a condition of readiness that does not hold.
type NotReady struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Readiness checks that the node is ready to serve: every deployment UP
// (an enclave deployment is DOWN while an instance restarts), every
// enclave instance up, the transport connected to its broker (when it has
// one), the coordinator answering with a manifest set (with
// OpsOptions.Coordinator), and every check added with AddReadinessCheck.
// It is bounded by ctx and OpsOptions.CheckTimeout.
func (n *Node) Readiness(ctx context.Context) Readiness {
	ctx, cancel := context.WithTimeout(ctx, n.opsOpts.CheckTimeout)
	defer cancel()
	rd := Readiness{Checked: []string{}}
	fail := func(name string, err error) {
		rd.NotReady = append(rd.NotReady, NotReady{Name: name, Reason: err.Error()})
	}
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	rd.Checked = append(rd.Checked, "node")
	if closed {
		fail("node", ErrShutdown)
	}
	for _, h := range n.Health(ctx) {
		name := "deployment " + h.Name
		rd.Checked = append(rd.Checked, name)
		if h.Status != StatusUp {
			fail(name, errors.New(h.Error))
		}
	}
	for _, e := range n.Enclaves() {
		name := fmt.Sprintf("enclave %s/%d", e.Name, e.Instance)
		rd.Checked = append(rd.Checked, name)
		if e.State != "up" {
			fail(name, fmt.Errorf("state %s", e.State))
		}
	}
	if cr, ok := n.bus.Transport().(bus.ConnectionReporter); ok {
		rd.Checked = append(rd.Checked, "broker")
		if st := cr.Connection(); !st.Connected {
			fail("broker", fmt.Errorf("NATS connection %s", st.State))
		}
	}
	if n.opsOpts.Coordinator {
		rd.Checked = append(rd.Checked, "coordinator")
		st, err := n.coordinatorStatus(ctx)
		switch {
		case err != nil:
			fail("coordinator", err)
		case !st.ManifestSet:
			fail("coordinator", errors.New("holds no manifest"))
		}
	}
	n.cmu.Lock()
	checks := append([]ReadinessCheck(nil), n.checks...)
	n.cmu.Unlock()
	for _, c := range checks {
		rd.Checked = append(rd.Checked, c.Name)
		if err := c.Check(ctx); err != nil {
			fail(c.Name, err)
		}
	}
	sort.SliceStable(rd.NotReady, func(i, j int) bool { return rd.NotReady[i].Name < rd.NotReady[j].Name })
	rd.Ready = len(rd.NotReady) == 0
	return rd
}
