package monitor

import (
	"context"
	"crypto/sha512"
	"fmt"
	"slices"
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

// StatusRequest asks for the counts of some sensors (loaded from storage
// if analytics has not seen them since it started).
type StatusRequest struct {
	Sensors []string `json:"sensors,omitempty"`
}

// Status is analytics' declassified accounting.
type Status struct {
	Sensors map[string]SensorCounts `json:"sensors"`
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
type Analyzer struct {
	cfg   Config
	store Store

	mu       sync.Mutex
	sensors  map[string]*sensorSlot
	unopened uint64
	alerts   uint64
}

type sensorSlot struct {
	mu    sync.Mutex
	state *SensorState // nil until loaded
}

// NewAnalyzer returns an Analyzer over store.
func NewAnalyzer(cfg Config, store Store) *Analyzer {
	return &Analyzer{cfg: cfg, store: store, sensors: map[string]*sensorSlot{}}
}

func (a *Analyzer) slot(id string) *sensorSlot {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sensors[id]
	if s == nil {
		s = &sensorSlot{}
		a.sensors[id] = s
	}
	return s
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
	r, err := DecodeReading(plaintext)
	if err != nil {
		a.CountUnopened()
		return Result{Outcome: Rejected, Reason: err.Error()}, nil, nil
	}
	s := a.slot(r.SensorID)
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

// Status returns the counts of the sensors seen since start and of those
// asked for (loaded from the store).
func (a *Analyzer) Status(ctx context.Context, req StatusRequest) (Status, error) {
	for _, id := range req.Sensors {
		if ValidSensorID(id) != nil {
			continue
		}
		s := a.slot(id)
		s.mu.Lock()
		_, err := a.load(ctx, id, s)
		s.mu.Unlock()
		if err != nil {
			return Status{}, err
		}
	}
	a.mu.Lock()
	ids := make([]string, 0, len(a.sensors))
	slots := make([]*sensorSlot, 0, len(a.sensors))
	for id, s := range a.sensors {
		ids = append(ids, id)
		slots = append(slots, s)
	}
	st := Status{Sensors: map[string]SensorCounts{}, Unopened: a.unopened, Alerts: a.alerts}
	a.mu.Unlock()
	for i, s := range slots {
		s.mu.Lock()
		if s.state != nil {
			st.Sensors[ids[i]] = s.state.Counts()
		}
		s.mu.Unlock()
	}
	return st, nil
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
