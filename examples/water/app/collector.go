package app

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/examples/water/monitor"
)

// State is the application as the dashboard shows it (GET /api/state).
type State struct {
	Time     time.Time `json:"time"`
	App      string    `json:"app"`
	Security string    `json:"security"`
	Sensors  int       `json:"sensors"`
	Period   string    `json:"period"`
	// Services are the regular services and analytics, with their rates.
	Services []ServiceState `json:"services"`
	// Alerts are the recent alerts, newest first.
	Alerts      []ReceivedAlert `json:"alerts"`
	AlertsTotal int             `json:"alerts_total"`
	// Attestation is each trusted service's attestation as verified by
	// this process.
	Attestation []Attestation `json:"attestation"`
	// Enclaves are the enclave instances this process hosts.
	Enclaves []EnclaveState `json:"enclaves"`
	// Analytics is analytics' declassified accounting, summed over sensors.
	Analytics  monitor.SensorCounts `json:"analytics"`
	Unopened   uint64               `json:"unopened"`
	Guarantees []string             `json:"guarantees"`
}

// ServiceState is one service's row on the dashboard.
type ServiceState struct {
	Name    string            `json:"name"`
	Node    string            `json:"node,omitempty"`
	Trusted bool              `json:"trusted"`
	Rate    float64           `json:"rate"` // messages per second
	Total   uint64            `json:"total"`
	Status  string            `json:"status,omitempty"`
	Counts  map[string]uint64 `json:"counts,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// EnclaveState is one enclave instance hosted here.
type EnclaveState struct {
	Name     string `json:"name"`
	Instance int    `json:"instance"`
	PID      int    `json:"pid"`
	State    string `json:"state"`
	Restarts int    `json:"restarts"`
}

// Summary is the one-line summary cloister run prints.
func (s State) Summary() string {
	rate := func(name string) float64 {
		for _, x := range s.Services {
			if x.Name == name {
				return x.Rate
			}
		}
		return 0
	}
	var enc []string
	for _, e := range s.Enclaves {
		enc = append(enc, fmt.Sprintf("%s/%d %s pid %d restarts %d", e.Name, e.Instance, e.State, e.PID, e.Restarts))
	}
	if len(enc) == 0 {
		enc = append(enc, "analytics on another node")
	}
	var atts []string
	for _, a := range s.Attestation {
		switch {
		case a.Verified:
			atts = append(atts, a.Service+" attested ("+a.EvidenceType+")")
		case a.Error != "":
			atts = append(atts, a.Service+" attestation failed")
		default:
			atts = append(atts, a.Service+" not attested")
		}
	}
	att := strings.Join(atts, ", ")
	return fmt.Sprintf("%s  readings/s sent %.0f analysed %.0f | accepted %d dup %d rejected %d gaps %d | alerts %d | enclave %s, %s",
		s.Time.Format("15:04:05"), rate(ServiceSensors), rate(ServiceAnalytics), s.Analytics.Accepted, s.Analytics.Duplicates,
		s.Analytics.Rejected, s.Analytics.Gaps, s.AlertsTotal, strings.Join(enc, "; "), att)
}

type collector struct {
	a *App

	mu       sync.Mutex
	state    State
	atts     map[string]Attestation // by service
	prev     map[string]uint64
	prevTime time.Time
}

func newCollector(a *App) *collector {
	return &collector{a: a, prev: map[string]uint64{}, atts: map[string]Attestation{}}
}

func (c *collector) get() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

func (c *collector) setAttestation(att Attestation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.atts[att.Service] = att
}

func (c *collector) run(ctx context.Context) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		c.collect(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (c *collector) collect(ctx context.Context) {
	a := c.a
	b := a.Bus()
	now := time.Now()
	st := State{Time: now, App: a.cfg.Name, Security: a.cfg.Security, Sensors: a.cfg.Sensors.Count,
		Period: a.cfg.Sensors.Period.String(), Guarantees: a.guarantees()}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	totals := map[string]uint64{}
	for _, name := range []string{ServiceSensors, ServiceIngest} {
		s := ServiceState{Name: name, Node: a.cfg.NodeOf(name)}
		var m Metrics
		reply, err := b.Request(rctx, AddressMetricsPrefix+name, nil, bus.Timeout(time.Second))
		if err == nil {
			err = reply.Decode(&m)
		}
		if err != nil {
			s.Error = err.Error()
		} else {
			s.Total, s.Counts, s.Status = m.Messages, m.Counts, m.Status
		}
		totals[name] = s.Total
		st.Services = append(st.Services, s)
	}
	// Analytics: its declassified counts.
	an := ServiceState{Name: ServiceAnalytics, Node: a.cfg.NodeOf(ServiceAnalytics), Trusted: true}
	if status, err := a.AnalyticsStatus(rctx, a.cfg.SensorIDs()); err != nil {
		an.Error = err.Error()
	} else {
		for _, x := range status.Sensors {
			st.Analytics.Accepted += x.Accepted
			st.Analytics.Duplicates += x.Duplicates
			st.Analytics.Rejected += x.Rejected
			st.Analytics.Gaps += x.Gaps
		}
		st.Unopened = status.Unopened
		an.Total = st.Analytics.Accepted + st.Analytics.Duplicates + st.Analytics.Rejected + status.Unopened
		an.Counts = map[string]uint64{"accepted": st.Analytics.Accepted, "duplicates": st.Analytics.Duplicates,
			"rejected": st.Analytics.Rejected, "gaps": st.Analytics.Gaps, "unopened": status.Unopened, "alerts": status.Alerts}
	}
	totals[ServiceAnalytics] = an.Total
	st.Services = append(st.Services, an)
	// Alerts.
	al := ServiceState{Name: ServiceAlerts, Node: a.cfg.NodeOf(ServiceAlerts)}
	var recent []ReceivedAlert
	reply, err := b.Request(rctx, AddressRecentAlerts, nil, bus.Timeout(time.Second))
	if err == nil {
		err = reply.Decode(&recent)
	}
	if err != nil {
		al.Error = err.Error()
	}
	var m Metrics
	if reply, err := b.Request(rctx, AddressMetricsPrefix+ServiceAlerts, nil, bus.Timeout(time.Second)); err == nil && reply.Decode(&m) == nil {
		al.Total, al.Counts = m.Messages, m.Counts
	}
	totals[ServiceAlerts] = al.Total
	st.Services = append(st.Services, al)
	slices.Reverse(recent)
	st.Alerts = recent
	st.AlertsTotal = int(al.Total)

	for _, e := range a.Enclaves() {
		st.Enclaves = append(st.Enclaves, EnclaveState{Name: e.Name, Instance: e.Instance, PID: e.PID, State: e.State, Restarts: e.Restarts})
	}

	// Re-verify the trusted services every 10 s (and until it works).
	services := []string{ServiceAnalytics}
	if a.cfg.Security == SecurityCoordinator {
		services = []string{ServiceCoordinator, ServiceAnalytics}
	}
	quiet := slog.New(slog.DiscardHandler)
	for _, svc := range services {
		c.mu.Lock()
		att, ok := c.atts[svc]
		c.mu.Unlock()
		if !ok || !att.Verified || now.Sub(att.Checked) > 10*time.Second {
			if svc == ServiceCoordinator {
				var cl *client.Client
				cl, att, _ = ConnectCoordinator(rctx, b, a.coordImg.Measurement, a.manifest.Hash(), a.simKeys(), quiet) // the sensors already warned
				if cl != nil {
					if pub, err := cl.ServiceKey(rctx, ServiceAnalytics); err == nil {
						att.ChannelKey = fmt.Sprintf("analytics %x", pub.Bytes()[:8])
					}
				}
			} else {
				_, att, _ = AttestAnalytics(rctx, b, a.img.Measurement, a.simKeys())
				if a.cfg.Security == SecurityCoordinator && att.Verified {
					// Its evidence binds the key of water.analytics.attest;
					// the readings' key came in the coordinator's grant.
					att.ChannelKey = "attest key " + att.ChannelKey + " (the readings' key: the coordinator's grant)"
				}
			}
			c.setAttestation(att)
		}
		st.Attestation = append(st.Attestation, att)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	dt := now.Sub(c.prevTime).Seconds()
	for i := range st.Services {
		s := &st.Services[i]
		if p, ok := c.prev[s.Name]; ok && dt > 0 && s.Total >= p {
			s.Rate = float64(s.Total-p) / dt
		}
	}
	c.prev, c.prevTime = totals, now
	c.state = st
}
