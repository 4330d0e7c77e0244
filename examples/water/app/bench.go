package app

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/application"
	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/coordinator"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/examples/water/monitor"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/provision"
)

// Benchmark modes: how analytics runs and how readings travel.
const (
	ModeRegular        = "regular"         // a regular service, plain JSON readings
	ModeTrustedPlain   = "trusted"         // the enclave, plain JSON readings
	ModeTrustedSecured = "trusted+secured" // the enclave, readings sealed with the HPKE client channel
)

// BenchModes lists the modes in the order they are measured.
func BenchModes() []string { return []string{ModeRegular, ModeTrustedPlain, ModeTrustedSecured} }

// securedAnalytics names the deployment of the analytics that joins the
// coordinator.
const securedAnalytics = "analytics-secured"

// Where the benchmark's three analytics listen.
const (
	addressRegular = "bench.regular"
	addressTrusted = "bench.trusted"
	addressSecured = "bench.secured"
)

// benchManifest is the benchmark's manifest: the secured analytics' address
// is open to the benchmark's sensors (creds). With checkpoint other than
// FreshnessOff it declares freshness with that interval and replicas
// coordinator replicas, owned by owner.
func benchManifest(coordinator, analytics enclave.Measurement, creds Credentials, checkpoint time.Duration, replicas int, owner ed25519.PrivateKey) ([]byte, *manifest.Manifest, error) {
	d := &application.Config{
		Name:     "bench",
		Images:   map[string]application.Image{ServiceAnalytics: {Backend: node.BackendProcess}},
		Services: map[string]application.Service{"bench": {}},
		Addresses: map[string]application.Address{
			addressSecured:             {Clients: true, Consume: []string{ServiceAnalytics}, Send: []string{"bench"}},
			addressSecured + ".attest": {Consume: []string{ServiceAnalytics}, Send: []string{"bench"}},
			addressSecured + ".status": {Consume: []string{ServiceAnalytics}, Send: []string{"bench"}},
			monitor.AddressAlerts:      {Publish: []string{ServiceAnalytics}},
		},
	}
	var ownerKey ed25519.PublicKey
	if checkpoint != FreshnessOff {
		d.Coordinator = application.Coordinator{Freshness: true, Replicas: replicas, Checkpoint: &checkpoint}
		ownerKey = owner.Public().(ed25519.PublicKey)
	}
	raw, m, err := d.Manifest(application.Measurements{Coordinator: coordinator, Images: map[string]enclave.Measurement{ServiceAnalytics: analytics}}, creds.publicKeys(), ownerKey)
	if err != nil {
		return nil, nil, fmt.Errorf("app: bench manifest: %w", err)
	}
	return raw, m, nil
}

// BenchOptions configure RunBench.
type BenchOptions struct {
	Sizes       []int         // reading sizes in bytes (padded JSON)
	Concurrency []int         // requests in flight
	Nodes       []int         // 1 and/or 3
	Duration    time.Duration // measured time per cell
	Warmup      time.Duration // unmeasured time before each cell
	// Image is a prebuilt analytics image; empty: built into a temporary
	// directory.
	Image string
	// Transport is how frames cross to the enclaves: "" or "shm" (shared
	// memory, the default) or "pipe" (see node.EnclaveConfig.Transport).
	Transport string
	// Repeat runs every cell this many times, interleaved (default 1);
	// each result is the median of its rounds.
	Repeat int
	// Checkpoints are the freshness settings measured, in order:
	// FreshnessOff (the coordinator without freshness) or a checkpoint
	// interval (0 registers every write). Empty: FreshnessOff only. Every
	// mode runs without freshness (when FreshnessOff is listed); with it,
	// trusted+secured runs again per interval (the other modes do not
	// join the coordinator, so freshness does not touch them), against
	// one coordinator replica on one node and three on three nodes.
	Checkpoints []time.Duration
	// Progress, if set, is called before each cell and when all are done.
	Progress func(done, total int, cell string)
	Logger   *slog.Logger
}

// FreshnessOff, among BenchOptions.Checkpoints, measures without freshness.
const FreshnessOff time.Duration = -1

// CheckpointLabel names a BenchOptions.Checkpoints entry as BenchResult
// does: "" for FreshnessOff, else the interval ("0s", "100ms", "1s").
func CheckpointLabel(d time.Duration) string {
	if d == FreshnessOff {
		return ""
	}
	return d.String()
}

// BenchResult is one cell: one mode at one size, concurrency and topology.
type BenchResult struct {
	Nodes int    `json:"nodes"`
	Mode  string `json:"mode"`
	// Checkpoint is the freshness checkpoint interval of the manifest the
	// cell ran under ("" without freshness).
	Checkpoint  string  `json:"checkpoint,omitempty"`
	Size        int     `json:"size"`
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	Throughput  float64 `json:"throughput"` // requests per second
	P50         float64 `json:"p50_us"`
	P99         float64 `json:"p99_us"`
	// KEMsPerRequest is the HPKE encapsulations per request (sessions the
	// client SDK opened over the cell, warm-up included); trusted+secured
	// only.
	KEMsPerRequest float64 `json:"kems_per_request"`
	// Rounds is how many times the cell ran (BenchOptions.Repeat): the
	// rates and latencies are the medians of the rounds'.
	Rounds int `json:"rounds,omitempty"`
	// CrossingsPerRequest is the boundary frames the enclave took in per
	// request (the delivery and every OCALL result it waited for), over
	// the cell, warm-up included; trusted modes only.
	CrossingsPerRequest float64 `json:"crossings_per_request"`
}

// BenchReport is a whole run.
type BenchReport struct {
	Started     time.Time     `json:"started"`
	Measurement string        `json:"measurement"`
	Duration    string        `json:"duration_per_cell"`
	Results     []BenchResult `json:"results"`
	Notes       []string      `json:"notes"`
}

// Find returns the result of a cell without freshness.
func (r *BenchReport) Find(nodes int, mode string, size, conc int) (BenchResult, bool) {
	return r.FindCheckpoint(nodes, mode, size, conc, "")
}

// FindCheckpoint returns the result of a cell run with the freshness
// checkpoint interval checkpoint (a CheckpointLabel; "": without).
func (r *BenchReport) FindCheckpoint(nodes int, mode string, size, conc int, checkpoint string) (BenchResult, bool) {
	for _, x := range r.Results {
		if x.Nodes == nodes && x.Mode == mode && x.Size == size && x.Concurrency == conc && x.Checkpoint == checkpoint {
			return x, true
		}
	}
	return BenchResult{}, false
}

// BenchNotes says what the benchmark measures.
func BenchNotes() []string {
	return []string{
		"each request is one sensor reading sent by request-reply to analytics, which decodes and validates it, updates the sensor's rolling statistics, stores them (the state directory's journal, appended and synced before the reply: one sync per write for regular, one per batch of the enclave's writes through the host's group commit; on tmpfs when /dev/shm exists, so no disk latency) and replies; every in-flight slot is its own sensor, so readings of a sensor are in order",
		"regular: analytics as a regular service, plain JSON, its state in plain files",
		"trusted: the analytics enclave (process backend: a child process behind the boundary protocol), plain JSON readings, its state cached in the enclave and sealed (AES-GCM) before the host writes it; one boundary crossing per reading (the host holds the reply until the write is durable)",
		"trusted+secured: the same image joined to a coordinator (manifest: a clients: true address and a credential per sensor); each sensor opens one authenticated session with the client SDK (HPKE X-Wing: ML-KEM-768 + X25519, one encapsulation per session, signed with the sensor's Ed25519 key) to the channel key the coordinator signed, then seals each reading with AES-256-GCM under the session's keys; the enclave's runtime opens it and seals the reply, the client opens the reply; latency includes all of it",
		"1 node: client and analytics on one node (in-process NATS connection); 3 nodes: three routed embedded NATS servers, the client on n1 and analytics on n3 (loopback TCP)",
		"simulation: no SGX here; real enclave transitions would add their own cost (8,200–17,000 cycles per ECALL or OCALL on SGX hardware, about 0.6–0.9 µs with switchless designs)",
	}
}

// benchCluster is the nodes of one topology.
type benchCluster struct {
	clusters []*cluster.Node
	nodes    []*node.Node
	client   *bus.Bus
}

func (c *benchCluster) close(ctx context.Context) {
	for i := len(c.nodes) - 1; i >= 0; i-- {
		_ = c.nodes[i].Shutdown(ctx)
		_ = c.clusters[i].Close()
	}
}

// benchImages are the images of a benchmark run, the simulation root of
// its nodes and the manifest owner's key (in memory: nothing of a run
// outlives it).
type benchImages struct {
	analytics, coordinator *enclave.Image
	creds                  Credentials
	sim                    *attest.SimulationRoot
	owner                  ed25519.PrivateKey
}

// newBenchImages loads the analytics image (or builds it into dir when
// image is empty) and builds the coordinator's, with a new simulation root
// and owner key.
func newBenchImages(ctx context.Context, dir, image string) (*benchImages, error) {
	imgs := &benchImages{}
	var err error
	if imgs.sim, err = attest.NewEphemeralSimulationRoot(); err != nil {
		return nil, err
	}
	if _, imgs.owner, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, err
	}
	if image != "" {
		imgs.analytics, err = enclave.Load(image)
	} else {
		imgs.analytics, err = BuildImage(ctx, filepath.Join(dir, "analytics.img"))
	}
	if err != nil {
		return nil, err
	}
	if imgs.coordinator, err = enclave.BuildPackage(ctx, CoordinatorPackage, filepath.Join(dir, "coordinator.img"), enclave.BuildOptions{}, nil); err != nil {
		return nil, fmt.Errorf("app: bench: build the coordinator image: %w", err)
	}
	return imgs, nil
}

// manifest is the run's manifest with freshness checkpoint (or
// FreshnessOff), for a cluster of n nodes: one coordinator replica per
// node.
func (imgs *benchImages) manifest(checkpoint time.Duration, n int) (*manifest.Manifest, error) {
	_, m, err := benchManifest(imgs.coordinator.Measurement, imgs.analytics.Measurement, imgs.creds, checkpoint, n, imgs.owner)
	return m, err
}

// startBenchCluster starts n nodes (named name-nK) with the coordinator,
// the manifest m and the analytics; restartBackoff is the supervisor's
// delay before it restarts the coordinator and the joined analytics (0:
// the default).
func startBenchCluster(ctx context.Context, n int, name string, imgs *benchImages, m *manifest.Manifest, dir, transport string, logger *slog.Logger, restartBackoff time.Duration) (*benchCluster, error) {
	c := &benchCluster{}
	for i := range n {
		opts := cluster.Options{Name: fmt.Sprintf("%s-n%d", name, i+1), Logger: logger}
		if n > 1 {
			opts.ClusterListen = "127.0.0.1:-1"
			if i > 0 {
				opts.Routes = []string{c.clusters[0].ClusterURL()}
			}
		}
		cn, err := cluster.Start(ctx, opts)
		if err != nil {
			c.close(ctx)
			return nil, err
		}
		b, err := bus.New(bus.WithTransport(cn.Transport()), bus.WithLogger(logger))
		if err != nil {
			cn.Close()
			c.close(ctx)
			return nil, err
		}
		nd, err := node.New(node.Options{Bus: b, Logger: logger, Simulation: imgs.sim})
		if err != nil {
			b.Close(ctx)
			cn.Close()
			c.close(ctx)
			return nil, err
		}
		c.clusters = append(c.clusters, cn)
		c.nodes = append(c.nodes, nd)
	}
	c.client = c.nodes[0].Bus()
	host := c.nodes[n-1]
	fail := func(err error) (*benchCluster, error) {
		c.close(context.Background())
		return nil, err
	}
	// The coordinator (with freshness: one replica per node), with the
	// manifest.
	if err := deployBenchCoordinator(ctx, c, imgs, m, dir, transport, restartBackoff); err != nil {
		return fail(err)
	}
	// Trusted on plain addresses: an enclave that does not join.
	if _, err := host.DeployEnclave(ctx, node.EnclaveConfig{
		Name: "analytics-plain", Image: imgs.analytics.Path, Transport: transport, Addresses: []string{addressTrusted, addressTrusted + ".*"},
		StateDir: filepath.Join(dir, "trusted"), InitConfig: []byte(`{"allow_plain":true}`),
		Env: []string{"WATER_ANALYTICS_ADDRESS=" + addressTrusted},
	}); err != nil {
		return fail(err)
	}
	// Trusted and secured: the same image, joined; its runtime opens the
	// client channel.
	if _, err := host.DeployEnclave(ctx, node.EnclaveConfig{
		Name: securedAnalytics, Image: imgs.analytics.Path, Transport: transport,
		Addresses: []string{addressSecured, addressSecured + ".*", provision.AddressEpoch},
		StateDir:  filepath.Join(dir, "secured"),
		Env:       []string{"WATER_ANALYTICS_ADDRESS=" + addressSecured}, Service: ServiceAnalytics,
		RestartBackoff: restartBackoff, MaxRestartBackoff: restartBackoff,
	}); err != nil {
		return fail(err)
	}
	if _, err := host.Deploy(ctx, func() node.Service {
		return &RegularAnalytics{Address: addressRegular, StateDir: filepath.Join(dir, "regular")}
	}, node.DeployOptions{Name: "regular-analytics"}); err != nil {
		return fail(err)
	}
	// Routes carry interest asynchronously: wait until the client reaches both.
	deadline := time.Now().Add(20 * time.Second)
	for _, addr := range []string{addressTrusted + ".status", addressRegular, provision.AddressStatus} {
		for {
			_, err := c.client.Request(ctx, addr, []byte(`{}`), bus.Timeout(2*time.Second))
			var re *bus.ReplyError
			if err == nil || errors.As(err, &re) && re.Code > 0 {
				break
			}
			if time.Now().After(deadline) {
				c.close(ctx)
				return nil, fmt.Errorf("app: bench: %s unreachable from the client node: %w", addr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c, nil
}

// deployBenchCoordinator deploys the coordinator on the last node of c, or
// with freshness replica k on node k (all on the only node), and sets m.
func deployBenchCoordinator(ctx context.Context, c *benchCluster, imgs *benchImages, m *manifest.Manifest, dir, transport string, restartBackoff time.Duration) error {
	n := len(c.nodes)
	slots := []*node.Node{c.nodes[n-1]}
	if m.Freshness != nil {
		slots = slots[:0]
		for k := range m.Freshness.Replicas {
			slots = append(slots, c.nodes[k%n])
		}
	}
	replicas := 0
	if m.Freshness != nil {
		replicas = m.Freshness.Replicas
	}
	for k, host := range slots {
		init, err := application.ReplicaInit(imgs.sim, k, replicas)
		if err != nil {
			return err
		}
		ec := node.EnclaveConfig{
			Name: ServiceCoordinator, Image: imgs.coordinator.Path, Transport: transport, StateDir: filepath.Join(dir, "coordinator", strconv.Itoa(k)),
			InitConfig: init, RestartBackoff: restartBackoff, MaxRestartBackoff: restartBackoff,
		}
		if m.Freshness != nil {
			ec.Name, ec.Addresses = application.ReplicaDeployment(k), coordinator.ReplicaAddresses(k)
		}
		if _, err := host.DeployEnclave(ctx, ec); err != nil {
			return err
		}
	}
	st, err := application.SetManifest(ctx, c.nodes[n-1].Bus(), m, time.Minute)
	if err != nil {
		return fmt.Errorf("app: bench: set the manifest: %w", err)
	}
	if st.ManifestHash != m.HashHex() {
		return fmt.Errorf("app: bench: the coordinator holds manifest %s, not %s", st.ManifestHash, m.HashHex())
	}
	return nil
}

// RunBench measures the three modes side by side, cell by cell.
func RunBench(ctx context.Context, opts BenchOptions) (*BenchReport, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Duration <= 0 {
		opts.Duration = time.Second
	}
	// State on tmpfs when there is one: a disk's fsync (milliseconds)
	// would drown what the benchmark compares, in both columns alike.
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	tmp, err := os.MkdirTemp(base, "cloister-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	imgs, err := newBenchImages(ctx, tmp, opts.Image)
	if err != nil {
		return nil, err
	}
	// Every in-flight slot of every cell is its own sensor, with its own
	// credential in the manifest.
	checkpoints := opts.Checkpoints
	if len(checkpoints) == 0 {
		checkpoints = []time.Duration{FreshnessOff}
	}
	var ids []string
	if opts.Repeat <= 0 {
		opts.Repeat = 1
	}
	for i := range opts.Repeat * len(opts.Nodes) * len(opts.Sizes) * (len(BenchModes()) + len(checkpoints)) * sumOf(opts.Concurrency) {
		ids = append(ids, fmt.Sprintf("b%d", i+1))
	}
	if imgs.creds, err = LoadOrCreateCredentials(tmp, ids); err != nil {
		return nil, err
	}
	img := imgs.analytics
	transport := "shared memory (pipes for the handshake)"
	if opts.Transport == "pipe" {
		transport = "pipes only"
	}
	notes := append(BenchNotes(), "frames cross to the enclaves over "+transport)
	rep := &BenchReport{Started: time.Now(), Measurement: img.Measurement.String(), Duration: opts.Duration.String(), Notes: notes}
	modesAt := func(checkpoint time.Duration) []string {
		if checkpoint == FreshnessOff {
			return BenchModes()
		}
		return []string{ModeTrustedSecured}
	}
	total := 0
	for _, cp := range checkpoints {
		total += opts.Repeat * len(opts.Nodes) * len(opts.Sizes) * len(opts.Concurrency) * len(modesAt(cp))
	}
	fresh := slices.ContainsFunc(checkpoints, func(d time.Duration) bool { return d != FreshnessOff })
	words := func(label string) string {
		if !fresh {
			return ""
		}
		return " " + freshnessWords(label)
	}
	if fresh {
		rep.Notes = append(rep.Notes, "freshness: the same image and sensors under a manifest that declares freshness with the checkpoint interval shown, against one coordinator replica on one node and three (one per node) on three nodes; only trusted+secured joins the coordinator, so only it is run again; its overhead is against trusted+secured without freshness, in the same run")
	}
	done, cell := 0, 0
	var seq atomic.Uint64 // sensor IDs unique over the run
	for _, n := range opts.Nodes {
		// One cluster per freshness setting, all up at once, so that their
		// cells interleave: a comparison of settings is not one of moments.
		var runs []*benchRun
		closeAll := func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, r := range runs {
				r.c.close(cctx)
			}
		}
		for i, cp := range checkpoints {
			label := CheckpointLabel(cp)
			if opts.Progress != nil {
				opts.Progress(done, total, fmt.Sprintf("starting %d node(s)%s", n, words(label)))
			}
			r, err := startBenchRun(ctx, n, fmt.Sprintf("bench%d-%d", n, i), imgs, cp, filepath.Join(tmp, fmt.Sprintf("nodes%d-%s", n, cmp.Or(label, "off"))), opts)
			if err != nil {
				closeAll()
				return nil, err
			}
			runs = append(runs, r)
		}
		var measured []BenchResult
		for round := range opts.Repeat {
			for _, size := range opts.Sizes {
				for _, conc := range opts.Concurrency {
					// Rotate which cell runs first from cell to cell, so that no
					// mode or setting always gets the warmest (or coldest)
					// machine.
					type cellOf struct {
						run  *benchRun
						mode string
					}
					var cells []cellOf
					for _, r := range runs {
						for _, mode := range modesAt(r.checkpoint) {
							cells = append(cells, cellOf{r, mode})
						}
					}
					cell++
					k := cell % len(cells)
					cells = append(cells[k:], cells[:k]...)
					for _, c := range cells {
						label := CheckpointLabel(c.run.checkpoint)
						if opts.Progress != nil {
							opts.Progress(done, total, fmt.Sprintf("%d node(s), %s, %d B, %d in flight%s%s", n, c.mode, size, conc, words(label), roundWords(round, opts.Repeat)))
						}
						r, err := benchCell(ctx, c.run.c.client, c.run.c.nodes[n-1], c.run.cl, imgs.creds, c.mode, size, conc, opts, &seq)
						if err != nil {
							closeAll()
							return nil, err
						}
						r.Nodes, r.Checkpoint = n, label
						measured = append(measured, r)
						done++
					}
				}
			}
		}
		closeAll()
		rep.Results = append(rep.Results, medians(measured)...)
	}
	if opts.Progress != nil {
		opts.Progress(done, total, "done")
	}
	return rep, nil
}

// benchRun is one cluster of a topology with its freshness setting, and
// its verified client.
type benchRun struct {
	checkpoint time.Duration
	c          *benchCluster
	cl         *client.Client
}

// startBenchRun starts a cluster of n nodes (named name-nK) whose manifest
// has freshness checkpoint (or FreshnessOff), and connects a client.
func startBenchRun(ctx context.Context, n int, name string, imgs *benchImages, checkpoint time.Duration, dir string, opts BenchOptions) (*benchRun, error) {
	m, err := imgs.manifest(checkpoint, n)
	if err != nil {
		return nil, err
	}
	c, err := startBenchCluster(ctx, n, name, imgs, m, dir, opts.Transport, opts.Logger, 0)
	if err != nil {
		return nil, fmt.Errorf("app: bench: %d nodes %s: %w", n, freshnessWords(CheckpointLabel(checkpoint)), err)
	}
	cl, _, err := ConnectCoordinator(ctx, c.client, imgs.coordinator.Measurement, m.Hash(),
		[]*ecdsa.PublicKey{imgs.sim.PlatformPublicKey()}, opts.Logger)
	if err == nil {
		_, err = cl.ServiceKey(ctx, ServiceAnalytics) // fetched once, cached
	}
	if err != nil {
		c.close(context.Background())
		return nil, err
	}
	return &benchRun{checkpoint: checkpoint, c: c, cl: cl}, nil
}

// roundWords says which round of repeat runs, in a progress line.
func roundWords(round, repeat int) string {
	if repeat <= 1 {
		return ""
	}
	return fmt.Sprintf(" (round %d of %d)", round+1, repeat)
}

// medians reduces the rounds of each cell to one result: requests and
// errors summed, every rate and latency the median of the rounds'.
func medians(rs []BenchResult) []BenchResult {
	type key struct {
		nodes, size, conc int
		mode, checkpoint  string
	}
	var order []key
	by := map[key][]BenchResult{}
	for _, r := range rs {
		k := key{r.Nodes, r.Size, r.Concurrency, r.Mode, r.Checkpoint}
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], r)
	}
	out := make([]BenchResult, 0, len(order))
	for _, k := range order {
		rounds := by[k]
		m := rounds[0]
		m.Requests, m.Errors = 0, 0
		for _, r := range rounds {
			m.Requests += r.Requests
			m.Errors += r.Errors
		}
		of := func(f func(BenchResult) float64) float64 {
			xs := make([]float64, len(rounds))
			for i, r := range rounds {
				xs[i] = f(r)
			}
			return Median(xs)
		}
		m.Throughput = of(func(r BenchResult) float64 { return r.Throughput })
		m.P50 = of(func(r BenchResult) float64 { return r.P50 })
		m.P99 = of(func(r BenchResult) float64 { return r.P99 })
		m.KEMsPerRequest = of(func(r BenchResult) float64 { return r.KEMsPerRequest })
		m.CrossingsPerRequest = of(func(r BenchResult) float64 { return r.CrossingsPerRequest })
		m.Rounds = len(rounds)
		out = append(out, m)
	}
	return out
}

// freshnessWords says a CheckpointLabel in a progress line.
func freshnessWords(label string) string {
	if label == "" {
		return "without freshness"
	}
	return "with freshness, checkpoint " + label
}

func sumOf(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// enclaveFramesIn returns the frames the named enclave took in so far.
func enclaveFramesIn(host *node.Node, name string) uint64 {
	var n uint64
	for _, e := range host.Enclaves() {
		if e.Name == name {
			n += e.FramesIn
		}
	}
	return n
}

func benchCell(ctx context.Context, b *bus.Bus, host *node.Node, cl *client.Client, creds Credentials, mode string, size, conc int, opts BenchOptions, seq *atomic.Uint64) (BenchResult, error) {
	res := BenchResult{Mode: mode, Size: size, Concurrency: conc}
	enclaveName := map[string]string{ModeTrustedPlain: "analytics-plain", ModeTrustedSecured: securedAnalytics}[mode]
	frames0, kems0 := enclaveFramesIn(host, enclaveName), cl.SessionsOpened()
	var all atomic.Int64 // requests over the cell, warm-up included
	request := func(cl *client.Client, body []byte) error {
		var err error
		switch mode {
		case ModeRegular:
			_, err = b.Request(ctx, addressRegular, body, bus.Timeout(10*time.Second))
		case ModeTrustedPlain:
			_, err = b.Request(ctx, addressTrusted, body, bus.Timeout(10*time.Second))
		default:
			// Sealed by the client SDK, opened by the enclave's runtime;
			// the reply is sealed back and opened here.
			_, err = cl.Request(ctx, addressSecured, ServiceAnalytics, body, bus.Timeout(10*time.Second))
		}
		return err
	}
	var (
		mu       sync.Mutex
		lat      []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	measureFrom := start.Add(opts.Warmup)
	end := measureFrom.Add(opts.Duration)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("b%d", seq.Add(1))
			sim := monitor.NewSensor(id)
			sensor := cl.As(creds[id]) // its own credential and session
			var local []time.Duration
			lerrs := 0
			var lerr error
			for {
				now := time.Now()
				if now.After(end) || ctx.Err() != nil {
					break
				}
				r := sim.Next(now.UnixMilli())
				body := padded(r, size)
				t0 := time.Now()
				err := request(sensor, body)
				d := time.Since(t0)
				all.Add(1)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					lerrs++
					lerr = err
					continue
				}
				local = append(local, d)
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += lerrs
			if firstErr == nil {
				firstErr = lerr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if len(lat) == 0 {
		return res, fmt.Errorf("app: bench: %s %d B: no request succeeded: %w", mode, size, firstErr)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := int(p * float64(len(lat)-1))
		return float64(lat[i].Nanoseconds()) / 1e3
	}
	if n := float64(all.Load()); n > 0 {
		if enclaveName != "" {
			res.CrossingsPerRequest = float64(enclaveFramesIn(host, enclaveName)-frames0) / n
		}
		if mode == ModeTrustedSecured {
			res.KEMsPerRequest = float64(cl.SessionsOpened()-kems0) / n
		}
	}
	res.Requests, res.Errors = len(lat), errs
	res.Throughput = float64(len(lat)) / opts.Duration.Seconds()
	res.P50, res.P99 = pct(0.50), pct(0.99)
	return res, nil
}

// padded encodes r padded with Extra to about size bytes.
func padded(r monitor.Reading, size int) []byte {
	b := r.Encode()
	if n := size - len(b) - len(`,"extra":""`); n > 0 {
		r.Extra = strings.Repeat("x", n)
		b = r.Encode()
	}
	return b
}

// MarshalReport encodes a report as indented JSON.
func MarshalReport(r *BenchReport) []byte {
	b, _ := json.MarshalIndent(r, "", "  ")
	return append(b, '\n')
}
