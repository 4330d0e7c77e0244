package monitor

import (
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
)

// Addresses of the analytics service.
const (
	// AddressAnalytics takes one reading per request (plain JSON, or an
	// HPKE client-channel request when HeaderChannel says so) and answers
	// with a Result.
	AddressAnalytics = "water.analytics"
	// AddressAttest answers a 32-byte nonce with an AttestResponse.
	AddressAttest = "water.analytics.attest"
	// AddressStatus answers a StatusRequest with a Status.
	AddressStatus = "water.analytics.status"
	// AddressAlerts is where analytics publishes declassified alerts.
	AddressAlerts = "water.alerts"
)

// HeaderChannel marks a reading sealed with the HPKE client channel
// (value ChannelHPKE).
const (
	HeaderChannel = "Water-Channel"
	ChannelHPKE   = "hpke"
)

// ChannelService names the analytics service in the HPKE channel info.
const ChannelService = "analytics"

// ChannelReportData is what analytics binds into its evidence when it
// attests its channel key: SHA-512 over a label, the public key and the
// verifier's nonce.
func ChannelReportData(publicKey, nonce []byte) [64]byte {
	h := sha512.New()
	h.Write([]byte("cloister water channel key v1\x00"))
	var n [2]byte
	n[0], n[1] = byte(len(publicKey)>>8), byte(len(publicKey))
	h.Write(n[:])
	h.Write(publicKey)
	h.Write(nonce)
	var out [64]byte
	copy(out[:], h.Sum(nil))
	return out
}

// AttestResponse is analytics' answer on AddressAttest.
type AttestResponse struct {
	// PublicKey is the channel key (secure.PublicKey bytes).
	PublicKey []byte `json:"public_key"`
	// EvidenceType is "simulated" or "sgx-dcap".
	EvidenceType string `json:"evidence_type"`
	// Quote is the evidence binding ChannelReportData(PublicKey, nonce).
	Quote []byte `json:"quote"`
}

// Bounds of the analyzer's tables. Anyone who can reach analytics can name
// sensors, so neither the sensors held in memory nor a status request nor
// its answer grows with what a requester asks for.
const (
	// MaxStatusSensors bounds the sensors a StatusRequest may name and the
	// sensors a Status lists: 1,000 sensors' counts take about 150 KB, well
	// under NATS's 1 MiB maximum payload.
	MaxStatusSensors = 1000
	// DefaultMaxSensors is the default of Config.MaxSensors.
	DefaultMaxSensors = 4096
)

// ErrStatusRequest is wrapped by a StatusRequest that is refused (too many
// sensors named): the requester's mistake, not analytics' failure.
var ErrStatusRequest = errors.New("monitor: bad status request")

// StatusRequest asks for the counts of some sensors (read from storage if
// analytics does not hold them in memory). At most MaxStatusSensors may be
// named.
type StatusRequest struct {
	Sensors []string `json:"sensors,omitempty"`
}

// Status is analytics' declassified accounting.
type Status struct {
	// Sensors holds the counts of the sensors asked for that analytics
	// knows (sensors it never accepted a reading of are absent), or, when
	// none were named, of the sensors it holds in memory, at most
	// MaxStatusSensors of them (the first by ID; Truncated says so).
	Sensors map[string]SensorCounts `json:"sensors"`
	// Truncated is set when sensors were left out of Sensors because
	// there were more than MaxStatusSensors.
	Truncated bool `json:"truncated,omitempty"`
	// Unopened counts readings that did not decrypt or decode.
	Unopened uint64 `json:"unopened"`
	// Alerts counts alerts raised since this instance started.
	Alerts uint64 `json:"alerts"`
}

// Store is where an Analyzer keeps sensor states: protected storage in
// the enclave, a plain map or file elsewhere.
type Store interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Put(ctx context.Context, key string, value []byte) error
}

// Analyzer applies readings to per-sensor states kept in a Store. Readings
// of different sensors may be handled concurrently; those of one sensor
// are handled one at a time.
//
// It holds at most Config.MaxSensors sensors' states in memory. A reading
// of a sensor it does not hold, when it holds that many, drops an idle
// sensor's state from memory (one no reading is being applied to, chosen
// arbitrarily): nothing is lost, the state is in the Store and is read
// back on that sensor's next reading. (While every held sensor has a
// reading in progress the table holds one more per reading in progress,
// and drops back to the bound as they finish.) Only readings create
// entries; status requests never do.
type Analyzer struct {
	cfg   Config
	store Store
	max   int

	mu       sync.Mutex
	sensors  map[string]*sensorSlot
	unopened uint64
	alerts   uint64
}

type sensorSlot struct {
	users int // goroutines holding the slot (under Analyzer.mu)

	mu    sync.Mutex
	state *SensorState // nil until loaded
}

// NewAnalyzer returns an Analyzer over store.
func NewAnalyzer(cfg Config, store Store) *Analyzer {
	max := cfg.MaxSensors
	if max <= 0 {
		max = DefaultMaxSensors
	}
	return &Analyzer{cfg: cfg, store: store, max: max, sensors: map[string]*sensorSlot{}}
}

// acquire returns id's slot, creating it (and, at the bound, dropping an
// idle one) if needed; release it when done.
func (a *Analyzer) acquire(id string) *sensorSlot {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sensors[id]
	if s == nil {
		if len(a.sensors) >= a.max {
			for k, idle := range a.sensors {
				if idle.users == 0 {
					delete(a.sensors, k)
					break
				}
			}
			// If every slot is busy the table exceeds the bound by at most
			// the readings being applied at this moment, and shrinks back
			// as they finish (release).
		}
		s = &sensorSlot{}
		a.sensors[id] = s
	}
	s.users++
	return s
}

// release gives back id's slot s; the last user of a slot over the bound
// drops it (its state is in the store).
func (a *Analyzer) release(id string, s *sensorSlot) {
	a.mu.Lock()
	s.users--
	if s.users == 0 && len(a.sensors) > a.max && a.sensors[id] == s {
		delete(a.sensors, id)
	}
	a.mu.Unlock()
}

// Sensors returns how many sensors' states the analyzer holds in memory.
func (a *Analyzer) Sensors() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.sensors)
}

func stateKey(id string) string { return "sensor/" + id }

// load returns the slot's state, reading it from the store on first use.
// The caller holds s.mu.
func (a *Analyzer) load(ctx context.Context, id string, s *sensorSlot) (*SensorState, error) {
	if s.state != nil {
		return s.state, nil
	}
	b, found, err := a.store.Get(ctx, stateKey(id))
	if err != nil {
		return nil, fmt.Errorf("monitor: load sensor %s: %w", id, err)
	}
	st := &SensorState{}
	if found {
		if st, err = UnmarshalState(b); err != nil {
			return nil, err
		}
	}
	s.state = st
	return st, nil
}

// CountUnopened records a reading that could not be opened or decoded.
func (a *Analyzer) CountUnopened() {
	a.mu.Lock()
	a.unopened++
	a.mu.Unlock()
}

// Handle applies one plaintext reading: decode, validate, update and store
// the sensor's state, detect. It returns the declassified result and the
// alerts to publish. An error means the state could not be loaded or
// stored: the reading was not taken into account and may be retried.
func (a *Analyzer) Handle(ctx context.Context, plaintext []byte) (Result, []Alert, error) {
	return a.HandleFrom(ctx, "", plaintext)
}

// ErrWrongSensor: a reading names another sensor than the client that sent
// it (see HandleFrom).
var ErrWrongSensor = errors.New("monitor: a sensor may report only its own readings")

// HandleFrom is Handle for a reading an authenticated client sent: unless
// client is empty, a reading of another sensor than client is refused with
// ErrWrongSensor (counted as unopened) and changes nothing.
func (a *Analyzer) HandleFrom(ctx context.Context, client string, plaintext []byte) (Result, []Alert, error) {
	r, err := DecodeReading(plaintext)
	if err != nil {
		a.CountUnopened()
		return Result{Outcome: Rejected, Reason: err.Error()}, nil, nil
	}
	if client != "" && r.SensorID != client {
		a.CountUnopened()
		return Result{}, nil, ErrWrongSensor
	}
	s := a.acquire(r.SensorID)
	defer a.release(r.SensorID, s)
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := a.load(ctx, r.SensorID, s)
	if err != nil {
		return Result{}, nil, err
	}
	next := *st
	next.Recent = slices.Clone(st.Recent)
	next.Active = slices.Clone(st.Active)
	next.Missing = slices.Clone(st.Missing)
	out, alerts, why := next.Apply(r, a.cfg)
	if err := a.store.Put(ctx, stateKey(r.SensorID), next.MarshalState()); err != nil {
		return Result{}, nil, fmt.Errorf("monitor: store sensor %s: %w", r.SensorID, err)
	}
	*st = next
	res := Result{Outcome: out, Alerts: len(alerts)}
	if why != nil {
		res.Reason = why.Error()
	}
	if len(alerts) > 0 {
		a.mu.Lock()
		a.alerts += uint64(len(alerts))
		a.mu.Unlock()
	}
	return res, alerts, nil
}

// Status returns the counts of the sensors named in req (at most
// MaxStatusSensors, else an error wrapping ErrStatusRequest; invalid IDs
// and sensors never seen are left out), or, when req names none, of the
// sensors held in memory (at most MaxStatusSensors). It never creates
// state: a sensor named but not held is read from the store and left
// there.
func (a *Analyzer) Status(ctx context.Context, req StatusRequest) (Status, error) {
	if len(req.Sensors) > MaxStatusSensors {
		return Status{}, fmt.Errorf("%w: %d sensors named, at most %d", ErrStatusRequest, len(req.Sensors), MaxStatusSensors)
	}
	a.mu.Lock()
	st := Status{Sensors: map[string]SensorCounts{}, Unopened: a.unopened, Alerts: a.alerts}
	ids := req.Sensors
	if len(ids) == 0 {
		ids = make([]string, 0, len(a.sensors))
		for id := range a.sensors {
			ids = append(ids, id)
		}
		if len(ids) > MaxStatusSensors {
			sort.Strings(ids)
			ids, st.Truncated = ids[:MaxStatusSensors], true
		}
	}
	a.mu.Unlock()
	for _, id := range ids {
		if ValidSensorID(id) != nil {
			continue
		}
		if _, done := st.Sensors[id]; done {
			continue
		}
		c, found, err := a.counts(ctx, id)
		if err != nil {
			return Status{}, err
		}
		if found {
			st.Sensors[id] = c
		}
	}
	return st, nil
}

// counts returns id's counts from memory, or else from the store.
func (a *Analyzer) counts(ctx context.Context, id string) (SensorCounts, bool, error) {
	a.mu.Lock()
	s := a.sensors[id]
	if s != nil {
		s.users++
	}
	a.mu.Unlock()
	if s != nil {
		defer a.release(id, s)
		s.mu.Lock()
		st := s.state
		var c SensorCounts
		if st != nil {
			c = st.Counts()
		}
		s.mu.Unlock()
		if st != nil {
			return c, true, nil
		}
	}
	b, found, err := a.store.Get(ctx, stateKey(id))
	if err != nil || !found {
		if err != nil {
			err = fmt.Errorf("monitor: load sensor %s: %w", id, err)
		}
		return SensorCounts{}, false, err
	}
	st, err := UnmarshalState(b)
	if err != nil {
		return SensorCounts{}, false, err
	}
	return st.Counts(), true, nil
}

// MapStore is a Store in memory, safe for concurrent use.
type MapStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

// Get implements Store.
func (s *MapStore) Get(_ context.Context, key string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return v, ok, nil
}

// Put implements Store.
func (s *MapStore) Put(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[key] = slices.Clone(value)
	return nil
}
