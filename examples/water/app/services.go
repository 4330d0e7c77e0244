package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/client"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/examples/water/monitor"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/wire"
)

// Addresses of the regular services.
const (
	// AddressReadings is the durable address sensors send readings to and
	// ingest consumes (JetStream).
	AddressReadings = "water.readings"
	// AddressRecentAlerts answers with the recent alerts (a JSON list).
	AddressRecentAlerts = "water.alerts.recent"
	// AddressLeak starts a leak on the sensor named in the body.
	AddressLeak = "water.sensors.leak"
	// AddressStopSensors stops the sensors; the reply maps each sensor to
	// the sequence number of its last reading stored in JetStream.
	AddressStopSensors = "water.sensors.stop"
	// AddressMetricsPrefix + service answers with that service's Metrics.
	AddressMetricsPrefix = "water.metrics."
	// AddressReseal asks the sensors to seal again, in a new session, a
	// reading analytics could no longer open (its session is gone: analytics
	// restarted, or its channel key changed). The body is the sealed
	// reading; the reply is the reading sealed anew, or failure 404 when no
	// sensor of this process sealed it.
	AddressReseal = "water.sensors.reseal"
)

// Failure codes of analytics' trusted runtime that ingest decides on.
const (
	codeAlreadyHandled = wire.CodeAlreadyHandled
	codeSessionUnknown = wire.CodeSessionUnknown
)

// Metrics are a regular service's counters.
type Metrics struct {
	Service string            `json:"service"`
	Node    string            `json:"node"`
	Counts  map[string]uint64 `json:"counts"`
	// Messages is the counter the dashboard shows as the service's rate.
	Messages uint64 `json:"messages"`
	Status   string `json:"status,omitempty"`
}

// metricsConsumer answers AddressMetricsPrefix+service with f().
func metricsConsumer(inst *node.Instance, service string, f func() Metrics) error {
	_, err := inst.Consumer(AddressMetricsPrefix+service, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		m.Reply(f())
	}))
	return err
}

// ---- sensors ----

// sensors simulates the sensors: every period each sensor's reading is
// sealed to analytics' attested channel key and sent, durably, to
// water.readings.
type sensors struct {
	cfg         *Config
	nodeName    string
	measurement enclave.Measurement
	logger      *slog.Logger
	onAttest    func(Attestation)
	app         *App
	seqFile     string // where the sensors' last sequence numbers are kept
	// sessionsFile keeps the sensors' recent sessions (keys included, mode
	// 0600, like their credentials), so that after a restart they can still
	// seal again the readings queued under them.
	sessionsFile string
	savedOpened  uint64 // sessions opened when they were last saved

	mu       sync.Mutex
	sims     map[string]*monitor.Sensor
	ids      []string
	sealer   *Sealer                   // security: channel or plain
	clients  map[string]*client.Client // security: coordinator, by sensor
	status   string
	sent     map[string]uint64 // sensor -> last seq stored in JetStream
	total    atomic.Uint64
	failed   atomic.Uint64
	resealed atomic.Uint64
	started  time.Time

	cancel context.CancelFunc
	done   chan struct{}
}

// Start implements node.Service.
func (s *sensors) Start(ctx context.Context, inst *node.Instance) error {
	s.sims = map[string]*monitor.Sensor{}
	s.sent = map[string]uint64{}
	s.ids = s.cfg.SensorIDs()
	for _, id := range s.ids {
		s.sims[id] = monitor.NewSensor(id)
	}
	// A sensor continues its sequence numbers from the previous run (with a
	// kept state_dir, analytics remembers them).
	if b, err := os.ReadFile(s.seqFile); err == nil {
		var last map[string]uint64
		if err := json.Unmarshal(b, &last); err != nil {
			return fmt.Errorf("app: sensors: %s: %w", s.seqFile, err)
		}
		for id, seq := range last {
			if sim := s.sims[id]; sim != nil {
				sim.Resume(seq)
				s.sent[id] = seq
			}
		}
	}
	s.status = "starting"
	if _, err := inst.Consumer(AddressLeak, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		id := string(m.Body())
		if err := s.startLeak(id); err != nil {
			m.Fail(404, err.Error())
			return
		}
		inst.Logger().Info("water: leak injected", "sensor", id)
		m.Reply("leak started on " + id)
	})); err != nil {
		return err
	}
	if err := metricsConsumer(inst, ServiceSensors, s.metrics); err != nil {
		return err
	}
	if _, err := inst.Consumer(AddressReseal, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		go func() { // it may fetch analytics' key: never block the event loop
			out, err := s.reseal(context.WithoutCancel(ctx), m.Body())
			if err != nil {
				m.Fail(404, err.Error())
				return
			}
			s.resealed.Add(1)
			m.Reply(out)
		}()
	})); err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	if _, err := inst.Consumer(AddressStopSensors, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		go func() { // never block the event loop
			s.cancel()
			<-s.done
			s.setStatus("stopped")
			s.mu.Lock()
			last := make(map[string]uint64, len(s.sent))
			for id, n := range s.sent {
				last[id] = n
			}
			s.mu.Unlock()
			m.Reply(last)
		}()
	})); err != nil {
		return err
	}
	go s.run(rctx, inst.Bus())
	return nil
}

func (s *sensors) startLeak(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sim := s.sims[id]
	if sim == nil {
		return fmt.Errorf("no sensor %q (there are %s to %s)", id, s.ids[0], s.ids[len(s.ids)-1])
	}
	sim.StartLeak()
	return nil
}

func (s *sensors) metrics() Metrics {
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	return Metrics{Service: ServiceSensors, Node: s.nodeName, Messages: s.total.Load(), Status: st,
		Counts: map[string]uint64{"sent": s.total.Load(), "failed": s.failed.Load(), "resealed": s.resealed.Load()}}
}

func (s *sensors) setStatus(st string) {
	s.mu.Lock()
	s.status = st
	s.mu.Unlock()
}

func (s *sensors) run(ctx context.Context, b *bus.Bus) {
	defer close(s.done)
	if s.cfg.Security == SecurityCoordinator {
		s.setStatus("verifying the coordinator and fetching analytics' channel key")
		for {
			clients, err := s.coordinatorClients(ctx, b)
			if err == nil {
				s.mu.Lock()
				s.clients = clients
				s.mu.Unlock()
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.logger.Debug("water: sensors: coordinator not ready", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if s.cfg.Security == SecurityChannel {
		s.setStatus("waiting for analytics' attested channel key")
		for {
			pub, att, err := AttestAnalytics(ctx, b, s.measurement, s.app.simKeys())
			if err == nil {
				s.sealer = NewSealer(pub, s.measurement)
				if s.onAttest != nil {
					s.onAttest(att)
				}
				s.logger.Info("water: sensors verified analytics and seal readings to its channel key",
					"measurement", att.Measurement, "evidence", att.EvidenceType, "key", att.ChannelKey)
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.logger.Debug("water: sensors: analytics not attested yet", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	s.setStatus("sending")
	s.started = time.Now()
	tick := time.NewTicker(s.cfg.Sensors.Period)
	defer tick.Stop()
	var saved time.Time
	var leakAt <-chan time.Time
	if l := s.cfg.Sensors.Leak; l.Sensor != "" {
		leakAt = time.After(l.After)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-leakAt:
			if err := s.startLeak(s.cfg.Sensors.Leak.Sensor); err != nil {
				s.logger.Warn("water: scripted leak", "error", err)
			} else {
				s.logger.Info("water: scripted leak started", "sensor", s.cfg.Sensors.Leak.Sensor)
			}
		case now := <-tick.C:
			if now.Sub(saved) >= time.Second {
				if err := s.saveSeqs(); err != nil {
					s.logger.Warn("water: sensors: keeping sequence numbers", "error", err)
				}
				saved = now
			}
			for _, id := range s.ids {
				if ctx.Err() != nil {
					return
				}
				s.mu.Lock()
				r := s.sims[id].Next(now.UnixMilli())
				s.mu.Unlock()
				body, h, err := s.seal(ctx, id, r.Encode())
				if err == nil {
					// A new session is kept before a reading sealed in it
					// can wait in JetStream.
					err = s.saveSessions()
				}
				if err == nil {
					// Not cancelled by a stop: a send either is stored or
					// fails, so the sequence numbers reported stay exact.
					sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err = b.Send(sctx, AddressReadings, body, bus.WithHeaders(h))
					cancel()
				}
				if err != nil {
					// The reading is lost before it reached JetStream (or,
					// after a timeout, maybe not): the sensor's next reading
					// shows the gap.
					s.failed.Add(1)
					s.logger.Warn("water: sensor could not send", "sensor", id, "error", err)
					continue
				}
				s.total.Add(1)
				s.mu.Lock()
				s.sent[id] = r.Seq
				s.mu.Unlock()
			}
		}
	}
}

// coordinatorClients verifies the coordinator, pinning the manifest hash,
// fetches the analytics channel key it signed, and returns a client per
// sensor, each proving its own credential in its sessions with analytics.
func (s *sensors) coordinatorClients(ctx context.Context, b *bus.Bus) (map[string]*client.Client, error) {
	hash := s.app.manifest.Hash()
	cl, att, err := ConnectCoordinator(ctx, b, s.app.coordImg.Measurement, hash, s.app.simKeys(), s.logger)
	if err != nil {
		return nil, err
	}
	pub, err := cl.ServiceKey(ctx, ServiceAnalytics)
	if err != nil {
		return nil, fmt.Errorf("app: analytics' channel key: %w", err)
	}
	att.ChannelKey = fmt.Sprintf("%x", pub.Bytes()[:8])
	if s.onAttest != nil {
		s.onAttest(att)
	}
	saved := map[string][]byte{}
	if b, err := os.ReadFile(s.sessionsFile); err == nil {
		if err := json.Unmarshal(b, &saved); err != nil {
			return nil, fmt.Errorf("app: sensors: %s: %w", s.sessionsFile, err)
		}
	}
	out := make(map[string]*client.Client, len(s.ids))
	for _, id := range s.ids {
		cred, ok := s.app.creds[id]
		if !ok {
			return nil, fmt.Errorf("app: no credential for sensor %s", id)
		}
		out[id] = cl.As(cred)
		if b := saved[id]; b != nil {
			if err := out[id].RestoreSessions(b); err != nil {
				return nil, fmt.Errorf("app: sensors: %s: %w", s.sessionsFile, err)
			}
		}
	}
	s.logger.Info("water: sensors verified the coordinator and seal readings in authenticated sessions to analytics' channel key",
		"coordinator", att.Measurement, "manifest", att.Manifest, "evidence", att.EvidenceType)
	return out, nil
}

// seal seals a reading of sensor id for analytics: in the sensor's session
// (security: coordinator), to analytics' attested key (channel), or not at
// all (plain).
func (s *sensors) seal(ctx context.Context, id string, reading []byte) ([]byte, bus.Headers, error) {
	s.mu.Lock()
	cl := s.clients[id]
	s.mu.Unlock()
	if cl == nil {
		return s.sealer.Seal(reading)
	}
	b, err := cl.Seal(ctx, ServiceAnalytics, reading)
	return b, nil, err
}

// reseal seals again a reading one of the sensors sealed in a session
// analytics no longer holds.
func (s *sensors) reseal(ctx context.Context, msg []byte) ([]byte, error) {
	s.mu.Lock()
	clients := s.clients
	s.mu.Unlock()
	for _, id := range s.ids {
		cl := clients[id]
		if cl == nil {
			continue
		}
		out, err := cl.Reseal(ctx, ServiceAnalytics, msg)
		if errors.Is(err, client.ErrNotMine) {
			continue
		}
		return out, err
	}
	return nil, errors.New("water: no sensor here sealed this reading")
}

// Stop implements node.Service.
func (s *sensors) Stop(ctx context.Context) error {
	if s.cancel != nil {
		s.cancel()
		select {
		case <-s.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.saveSeqs()
}

// saveSessions keeps the sensors' recent sessions for the next run, when
// they opened new ones since the last save.
func (s *sensors) saveSessions() error {
	s.mu.Lock()
	clients := s.clients
	s.mu.Unlock()
	if len(clients) == 0 || s.sessionsFile == "" {
		return nil
	}
	opened := clients[s.ids[0]].SessionsOpened() // counted for all the sensors' clients together
	if opened == s.savedOpened {
		return nil
	}
	saved := make(map[string][]byte, len(clients))
	for id, cl := range clients {
		b, err := cl.MarshalSessions()
		if err != nil {
			return fmt.Errorf("app: sensors: sessions: %w", err)
		}
		saved[id] = b
	}
	b, _ := json.Marshal(saved)
	if err := writeFileAtomic(s.sessionsFile, b); err != nil {
		return fmt.Errorf("app: sensors: %w", err)
	}
	s.savedOpened = opened
	return nil
}

// writeFileAtomic replaces path with b (mode 0600): a temporary file, then
// a rename.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// saveSeqs keeps every sensor's last sequence number for the next run.
func (s *sensors) saveSeqs() error {
	s.mu.Lock()
	last := make(map[string]uint64, len(s.sims))
	for id, sim := range s.sims {
		last[id] = sim.Seq()
	}
	s.mu.Unlock()
	b, _ := json.Marshal(last)
	if err := writeFileAtomic(s.seqFile, b); err != nil {
		return fmt.Errorf("app: sensors: %w", err)
	}
	return s.saveSessions()
}

// ---- ingest ----

// ingest consumes the durable readings address. It cannot read the
// readings (they are sealed to analytics); it hands each one to analytics
// by request and acknowledges the JetStream message only once analytics has
// answered, retrying while analytics is down. When it stops, the readings
// it has not handed over are given back to JetStream (NAK) for the next
// run.
type ingest struct {
	nodeName string
	logger   *slog.Logger

	deadFile string // where refused readings are kept (JSON lines)

	received, forwarded, retries atomic.Uint64
	accepted, duplicates         atomic.Uint64
	rejected, sealedReplies      atomic.Uint64
	resealed, deadLetters        atomic.Uint64
	deadMu                       sync.Mutex
	stop                         chan struct{}
	stopOnce                     sync.Once
}

// Start implements node.Service.
func (g *ingest) Start(ctx context.Context, inst *node.Instance) error {
	g.stop = make(chan struct{})
	if _, err := inst.Consumer(AddressReadings, bus.HandlerFunc(g.handle(inst.Bus()))); err != nil {
		return err
	}
	return metricsConsumer(inst, ServiceIngest, func() Metrics {
		return Metrics{Service: ServiceIngest, Node: g.nodeName, Messages: g.received.Load(), Counts: map[string]uint64{
			"received": g.received.Load(), "forwarded": g.forwarded.Load(), "retries": g.retries.Load(),
			"accepted": g.accepted.Load(), "duplicates": g.duplicates.Load(), "rejected": g.rejected.Load(),
			"sealed_replies": g.sealedReplies.Load(), "resealed": g.resealed.Load(), "dead_letters": g.deadLetters.Load()}}
	})
}

// halt stops retrying: readings not yet handed over go back to JetStream.
func (g *ingest) halt() { g.stopOnce.Do(func() { close(g.stop) }) }

func (g *ingest) stopping() bool {
	select {
	case <-g.stop:
		return true
	default:
		return false
	}
}

// errIngestStopping hands a reading back to JetStream when ingest stops.
var errIngestStopping = errors.New("water: ingest: stopping")

func (g *ingest) handle(b *bus.Bus) func(ctx context.Context, m *bus.Message) {
	return func(ctx context.Context, m *bus.Message) {
		// The bus acknowledges the durable reading only on release: done
		// once analytics answered, handed back (NAK) otherwise.
		release := m.Hold()
		if g.stopping() {
			release(errIngestStopping)
			return
		}
		g.received.Add(1)
		h := bus.Headers{}
		if v := m.Header(monitor.HeaderChannel); v != "" {
			h[monitor.HeaderChannel] = v
		}
		backoff := 50 * time.Millisecond
		body := m.Body()
		reseals := 0
		for {
			reply, err := b.Request(ctx, monitor.AddressAnalytics, body, bus.WithHeaders(h), bus.Timeout(5*time.Second))
			if err == nil {
				var res monitor.Result
				if reply.Header(bus.HeaderCodec) == "" {
					// A client-channel reply, sealed for the sensor:
					// ingest cannot read it either.
					g.sealedReplies.Add(1)
				} else if reply.Decode(&res) == nil {
					switch res.Outcome {
					case monitor.Accepted:
						g.accepted.Add(1)
					case monitor.Duplicate:
						g.duplicates.Add(1)
					default:
						g.rejected.Add(1)
					}
				}
				g.forwarded.Add(1)
				release(nil)
				return
			}
			var re *bus.ReplyError
			switch {
			case errors.As(err, &re) && re.Code == codeAlreadyHandled:
				// A copy of a reading analytics already handled (its
				// answer was lost): nothing to redo.
				g.duplicates.Add(1)
				g.forwarded.Add(1)
				release(nil)
				return
			case errors.As(err, &re) && re.Code == codeSessionUnknown:
				// Analytics no longer holds the sensor's session (it
				// restarted, or its key changed): the sensor seals the
				// same reading again, in a new session.
				out, rerr := b.Request(ctx, AddressReseal, body, bus.Timeout(5*time.Second))
				var rre *bus.ReplyError
				switch {
				case rerr == nil:
					g.resealed.Add(1)
					body = out.Body()
					if reseals++; reseals == 1 {
						continue // at once the first time; later, back off
					}
					err = fmt.Errorf("%w (sealed again %d times)", err, reseals)
				case errors.As(rerr, &rre) && rre.Code == 404:
					// No sensor holds the session any more (the sensors
					// restarted without their saved sessions).
					g.deadLetter(body, re)
					release(nil)
					return
				default:
					err = fmt.Errorf("%w (and the sensors could not seal it again: %w)", err, rerr)
				}
			case errors.As(err, &re) && re.Code >= 400 && re.Code < 500 && re.Code != 429:
				// Refused for good (it does not open, its client is not
				// who it claims, it does not decode): retrying cannot
				// help, and dropping it would lose it silently.
				g.deadLetter(body, re)
				release(nil)
				return
			}
			g.retries.Add(1)
			g.logger.Debug("water: ingest: analytics unavailable, retrying", "error", err, "in", backoff)
			select {
			case <-g.stop:
				release(errIngestStopping)
				return
			case <-ctx.Done():
				release(ctx.Err())
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
	}
}

// deadLetter keeps a reading analytics refused for good in the dead-letter
// file (one JSON object a line: time, code, reason, the sealed reading in
// base64), counts it and logs it.
func (g *ingest) deadLetter(body []byte, re *bus.ReplyError) {
	g.rejected.Add(1)
	g.deadLetters.Add(1)
	g.logger.Warn("water: ingest: analytics refused a reading for good; kept as a dead letter", "code", re.Code, "error", re.Message, "file", g.deadFile)
	if g.deadFile == "" {
		return
	}
	line, _ := json.Marshal(struct {
		Time    time.Time `json:"time"`
		Code    int       `json:"code"`
		Reason  string    `json:"reason"`
		Reading []byte    `json:"reading"`
	}{time.Now().UTC(), re.Code, re.Message, body})
	g.deadMu.Lock()
	defer g.deadMu.Unlock()
	f, err := os.OpenFile(g.deadFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err == nil {
		_, err = f.Write(append(line, '\n'))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		g.logger.Error("water: ingest: could not keep a dead letter", "error", err)
	}
}

// Stop implements node.Service.
func (g *ingest) Stop(ctx context.Context) error {
	g.halt()
	return nil
}

// ---- alerts ----

// MaxRecentAlerts is how many alerts the alerts service keeps.
const MaxRecentAlerts = 100

// alerts receives the declassified alerts and keeps the recent ones.
type alerts struct {
	nodeName string
	mu       sync.Mutex
	recent   []ReceivedAlert
	total    atomic.Uint64
}

// ReceivedAlert is an alert as the alerts service received it.
type ReceivedAlert struct {
	monitor.Alert
	Received time.Time `json:"received"`
}

// Start implements node.Service.
func (a *alerts) Start(ctx context.Context, inst *node.Instance) error {
	if _, err := inst.Consumer(monitor.AddressAlerts, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		var al monitor.Alert
		if err := json.Unmarshal(m.Body(), &al); err != nil {
			inst.Logger().Warn("water: alerts: undecodable alert", "error", err)
			return
		}
		a.total.Add(1)
		a.mu.Lock()
		a.recent = append(a.recent, ReceivedAlert{Alert: al, Received: time.Now()})
		if len(a.recent) > MaxRecentAlerts {
			a.recent = a.recent[len(a.recent)-MaxRecentAlerts:]
		}
		a.mu.Unlock()
		inst.Logger().Info("water: ALERT", "sensor", al.SensorID, "kind", al.Kind, "severity", al.Severity)
	})); err != nil {
		return err
	}
	if _, err := inst.Consumer(AddressRecentAlerts, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		a.mu.Lock()
		out := append([]ReceivedAlert{}, a.recent...)
		a.mu.Unlock()
		m.Reply(out)
	})); err != nil {
		return err
	}
	return metricsConsumer(inst, ServiceAlerts, func() Metrics {
		return Metrics{Service: ServiceAlerts, Node: a.nodeName, Messages: a.total.Load(), Counts: map[string]uint64{"received": a.total.Load()}}
	})
}

// Stop implements node.Service.
func (a *alerts) Stop(ctx context.Context) error { return nil }

// ---- regular analytics (the benchmark's baseline) ----

// RegularAnalytics is the analytics logic as a regular service on Address:
// the same monitor.Analyzer, its state in plain files (the same file store,
// written atomically with fsync, that keeps the enclave's sealed blobs),
// alerts published in the clear. The benchmark compares it with the
// enclave.
type RegularAnalytics struct {
	Address  string
	StateDir string
	// Workers is how many readings are handled at once (default 8, as the
	// enclave's workers).
	Workers int
	a       *monitor.Analyzer
}

// Start implements node.Service.
func (r *RegularAnalytics) Start(ctx context.Context, inst *node.Instance) error {
	store, err := enclave.NewFileStore(r.StateDir)
	if err != nil {
		return err
	}
	r.a = monitor.NewAnalyzer(monitor.DefaultConfig(), store)
	// Like the enclave adapter, hand each reading to one of Workers
	// goroutines and return, so both serve the same number at once.
	workers := r.Workers
	if workers <= 0 {
		workers = 8
	}
	sem := make(chan struct{}, workers)
	_, err = inst.Consumer(r.Address, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			res, al, err := r.a.Handle(ctx, m.Body())
			if err != nil {
				m.Fail(503, err.Error())
				return
			}
			for _, x := range al {
				_ = inst.Bus().Publish(ctx, monitor.AddressAlerts, x)
			}
			m.Reply(res)
		}()
	}))
	return err
}

// Stop implements node.Service.
func (r *RegularAnalytics) Stop(ctx context.Context) error { return nil }
