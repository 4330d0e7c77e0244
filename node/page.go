package node

import (
	"context"
	_ "embed"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Paths of the operator's page.
const (
	PathPage  = "/"          // the operator's page (HTML)
	PathState = "/ops/state" // what the page draws (JSON OpsState)
	pageTitle = "Cloister node"
)

// Sampling of the operator's page: a sample every SampleInterval, the
// last HistorySamples of them (five minutes).
const (
	SampleInterval = 2 * time.Second
	HistorySamples = 150
)

//go:embed page.html
var pageHTML []byte

// OpsState is what the operator's page shows: the node's services and
// enclaves, their attestation, the coordinator, readiness, and per-address
// rates over the last minutes.
type OpsState struct {
	Time        time.Time          `json:"time"`
	Ready       Readiness          `json:"ready"`
	Deployments []DeploymentHealth `json:"deployments"`
	Enclaves    []EnclaveState     `json:"enclaves"`
	// Coordinator is the coordinator's status (nodes configured with
	// OpsOptions.Coordinator), nil otherwise or when it does not answer.
	Coordinator *CoordinatorState `json:"coordinator,omitempty"`
	// Interval is the time between two points of a series.
	Interval time.Duration `json:"interval_ns"`
	// Series are per-address rates (per second), oldest point first.
	Series []Series `json:"series"`
}

// EnclaveState is an enclave instance with its attestation as the host
// knows it.
type EnclaveState struct {
	EnclaveInstance
	// Measurement is the image's measurement (hex).
	Measurement string `json:"measurement,omitempty"`
	// Backend is process, inproc or gramine.
	Backend string `json:"backend"`
	// Evidence is "simulated" (process and inproc backends: no protection
	// against the host) or "sgx-dcap" (gramine).
	Evidence string `json:"evidence"`
}

// CoordinatorState is the coordinator's status as the page shows it.
type CoordinatorState struct {
	ManifestHash    string `json:"manifest_hash"`
	ManifestVersion uint64 `json:"manifest_version"`
	Epoch           uint32 `json:"epoch"`
	EvidenceType    string `json:"evidence_type"`
	Measurement     string `json:"measurement"`
	Joins           uint64 `json:"joins"`
	Refusals        uint64 `json:"refusals"`
}

// Series is one rate over time.
type Series struct {
	Address string `json:"address"`
	// Kind is requests, sends, delivered, failures, or rejected:REASON.
	Kind   string    `json:"kind"`
	Points []float64 `json:"points"`
}

// sample is the node's cumulative counts at one time.
type sample struct {
	at     time.Time
	counts map[[2]string]float64 // (address, kind) → count
}

// history keeps the samples of the page.
type history struct {
	mu      sync.Mutex
	samples []sample
}

func (h *history) add(s sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples = append(h.samples, s)
	if len(h.samples) > HistorySamples+1 {
		h.samples = append(h.samples[:0], h.samples[len(h.samples)-HistorySamples-1:]...)
	}
}

// series turns the samples into rates: one point per pair of samples.
func (h *history) series() []Series {
	h.mu.Lock()
	defer h.mu.Unlock()
	keys := map[[2]string]bool{}
	for _, s := range h.samples {
		for k := range s.counts {
			keys[k] = true
		}
	}
	out := make([]Series, 0, len(keys))
	for k := range keys {
		sr := Series{Address: k[0], Kind: k[1], Points: make([]float64, 0, len(h.samples))}
		for i := 1; i < len(h.samples); i++ {
			prev, cur := h.samples[i-1], h.samples[i]
			d := cur.counts[k] - prev.counts[k]
			if d < 0 { // a counter that started over (an enclave restarted)
				d = cur.counts[k]
			}
			sr.Points = append(sr.Points, d/cur.at.Sub(prev.at).Seconds())
		}
		out = append(out, sr)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Address != out[j].Address {
			return out[i].Address < out[j].Address
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}

// sampleLoop samples the node's counts until stop is closed.
func (o *ops) sampleLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(SampleInterval)
	defer tick.Stop()
	o.hist.add(o.takeSample())
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			o.hist.add(o.takeSample())
		}
	}
}

// takeSample reads the bus counters, the consumers' and the enclaves'
// rejections.
func (o *ops) takeSample() sample {
	s := sample{at: time.Now(), counts: map[[2]string]float64{}}
	ch := make(chan prometheus.Metric, 64)
	go func() {
		o.messages.Collect(ch)
		o.failures.Collect(ch)
		close(ch)
	}()
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil || d.Counter == nil {
			continue
		}
		labels := map[string]string{}
		for _, lp := range d.Label {
			labels[lp.GetName()] = lp.GetValue()
		}
		kind := ""
		switch {
		case labels["failure"] != "":
			kind = "failures"
		case labels["op"] == "request":
			kind = "requests"
		case labels["op"] == "send" || labels["op"] == "publish":
			kind = "sends"
		default:
			continue
		}
		s.counts[[2]string{labels["address"], kind}] += d.Counter.GetValue()
	}
	for _, c := range o.n.bus.Consumers() {
		s.counts[[2]string{c.Address(), "delivered"}] += float64(c.Stats().Handled)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.opts.CheckTimeout)
	defer cancel()
	for _, es := range o.n.enclaveServices() {
		e := es.svc.e
		if e.State().String() != "up" {
			continue
		}
		rej, err := e.Rejections(ctx)
		if err != nil {
			continue
		}
		serving := map[string]bool{}
		for _, a := range e.Addresses() {
			serving[a] = true
		}
		for a, byReason := range rej {
			if !serving[a] {
				a = OtherAddress
			}
			for reason, n := range byReason {
				if len(reason) > 40 {
					reason = "other"
				}
				s.counts[[2]string{a, "rejected:" + reason}] += float64(n)
			}
		}
	}
	return s
}

// state gathers what the page shows.
func (o *ops) state(ctx context.Context) OpsState {
	n := o.n
	st := OpsState{Time: time.Now(), Ready: n.Readiness(ctx), Deployments: n.Health(ctx), Interval: SampleInterval, Series: o.hist.series()}
	byInstance := map[string]EnclaveInstance{}
	for _, ei := range n.Enclaves() {
		byInstance[ei.DeploymentID+"/"+strconv.Itoa(ei.Instance)] = ei
	}
	for _, es := range n.enclaveServices() {
		s := EnclaveState{EnclaveInstance: byInstance[es.deploymentID+"/"+strconv.Itoa(es.index)],
			Backend: es.svc.cfg.Backend.Name(), Evidence: "simulated"}
		if img := es.svc.cfg.Image; img != nil {
			s.Measurement = img.Measurement.String()
		}
		if s.Backend == BackendGramine {
			s.Evidence = "sgx-dcap"
		}
		st.Enclaves = append(st.Enclaves, s)
	}
	if o.opts.Coordinator {
		if cs, err := n.coordinatorStatus(ctx); err == nil {
			st.Coordinator = &CoordinatorState{ManifestHash: cs.ManifestHash, ManifestVersion: cs.ManifestVersion, Epoch: cs.Epoch,
				EvidenceType: cs.EvidenceType, Measurement: cs.Measurement, Joins: cs.Joins, Refusals: cs.Refusals}
		}
	}
	return st
}

// OpsState returns what the operator's page shows; the zero OpsState when
// the node serves no operations endpoint.
func (n *Node) OpsState(ctx context.Context) OpsState {
	if n.ops == nil {
		return OpsState{}
	}
	return n.ops.state(ctx)
}

// pageRoutes serves the page and its state.
func (o *ops) pageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathPage+"{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
		_, _ = w.Write(pageHTML)
	})
	mux.HandleFunc("GET "+PathState, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(o.state(r.Context()))
	})
}
