// Package monitor is the pure logic of the water-network application: the
// sensor reading and its strict decoder, range validation, the per-sensor
// state (sequence numbers, timestamps, rolling statistics) and anomaly
// detection. It imports only the standard library, because the analytics
// enclave image is built from it (and so is the regular analytics service
// of the benchmark).
//
// # Detection
//
// Each sensor has a baseline: the mean of its first [Config.WarmUp]
// readings, then an exponentially weighted moving average (weight
// [Config.Alpha]) that is frozen while an anomaly is active. Every accepted
// reading is checked for
//
//   - thresholds: pressure below PressureLow or above PressureHigh, flow
//     above FlowHigh, level below LevelLow (kinds pressure_low,
//     pressure_high, flow_high, level_low);
//   - rates of change: pressure changing by more than RateLimit (relative)
//     between two consecutive readings (kind pressure_transient);
//   - a leak: the mean of the last three readings has flow at least
//     LeakFlowRise above the baseline while pressure is at least
//     LeakPressureFall below it (kind leak; severity critical when flow is
//     50% up or pressure 25% down).
//
// An alert is raised when a kind becomes active for a sensor and not again
// until it has cleared (with hysteresis), so a lasting condition gives one
// alert.
package monitor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
)

// Reading is one measurement of a sensor.
type Reading struct {
	// SensorID names the sensor: 1 to 64 characters of A-Z a-z 0-9 '-' '_'.
	SensorID string `json:"sensor_id"`
	// Seq numbers the sensor's readings from 1, without gaps.
	Seq uint64 `json:"seq"`
	// Pressure in bar.
	Pressure float64 `json:"pressure"`
	// Flow in litres per second.
	Flow float64 `json:"flow"`
	// Level of the reservoir the sensor watches, in percent.
	Level float64 `json:"level"`
	// Timestamp is the sensor's clock, Unix milliseconds.
	Timestamp int64 `json:"timestamp"`
	// Extra is opaque diagnostic data (the benchmark pads readings with it).
	Extra string `json:"extra,omitempty"`
}

// MaxReadingSize bounds an encoded reading.
const MaxReadingSize = 1 << 20

// Errors of DecodeReading and Validate; errors.Is tells them apart.
var (
	ErrMalformed  = errors.New("malformed reading")
	ErrOutOfRange = errors.New("reading out of range")
)

// DecodeReading decodes one JSON reading strictly: one object, no unknown
// fields, every required field present, a valid sensor ID and finite
// numbers. It does not check ranges (see Validate).
func DecodeReading(b []byte) (Reading, error) {
	var r Reading
	if len(b) > MaxReadingSize {
		return r, fmt.Errorf("%w: %d bytes (at most %d)", ErrMalformed, len(b), MaxReadingSize)
	}
	var raw struct {
		SensorID  *string  `json:"sensor_id"`
		Seq       *uint64  `json:"seq"`
		Pressure  *float64 `json:"pressure"`
		Flow      *float64 `json:"flow"`
		Level     *float64 `json:"level"`
		Timestamp *int64   `json:"timestamp"`
		Extra     string   `json:"extra"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return r, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return r, fmt.Errorf("%w: trailing data after the object", ErrMalformed)
	}
	switch {
	case raw.SensorID == nil:
		return r, fmt.Errorf("%w: sensor_id missing", ErrMalformed)
	case raw.Seq == nil:
		return r, fmt.Errorf("%w: seq missing", ErrMalformed)
	case raw.Pressure == nil:
		return r, fmt.Errorf("%w: pressure missing", ErrMalformed)
	case raw.Flow == nil:
		return r, fmt.Errorf("%w: flow missing", ErrMalformed)
	case raw.Level == nil:
		return r, fmt.Errorf("%w: level missing", ErrMalformed)
	case raw.Timestamp == nil:
		return r, fmt.Errorf("%w: timestamp missing", ErrMalformed)
	}
	if err := ValidSensorID(*raw.SensorID); err != nil {
		return r, err
	}
	r = Reading{SensorID: *raw.SensorID, Seq: *raw.Seq, Pressure: *raw.Pressure, Flow: *raw.Flow,
		Level: *raw.Level, Timestamp: *raw.Timestamp, Extra: raw.Extra}
	if r.Seq == 0 {
		return r, fmt.Errorf("%w: seq starts at 1", ErrMalformed)
	}
	return r, nil
}

// ValidSensorID checks a sensor ID: 1 to 64 characters of A-Z a-z 0-9 '-' '_'.
func ValidSensorID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("%w: sensor_id of %d characters (want 1 to 64)", ErrMalformed, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: sensor_id has the character %q (want A-Z a-z 0-9 - _)", ErrMalformed, c)
		}
	}
	return nil
}

// Encode returns the reading as JSON.
func (r Reading) Encode() []byte {
	b, _ := json.Marshal(r) // a Reading of finite numbers always encodes
	return b
}

// Validate checks that the values are physically plausible (the ranges of
// cfg); a sensor reporting outside them is broken or forged.
func (r Reading) Validate(cfg Config) error {
	check := func(name string, v, lo, hi float64) error {
		if math.IsNaN(v) || v < lo || v > hi {
			return fmt.Errorf("%w: %s %g outside [%g, %g]", ErrOutOfRange, name, v, lo, hi)
		}
		return nil
	}
	return errors.Join(
		check("pressure", r.Pressure, 0, cfg.MaxPressure),
		check("flow", r.Flow, 0, cfg.MaxFlow),
		check("level", r.Level, 0, 100),
	)
}

// Alert is what the analytics service may tell the operator: declassified,
// it carries no measurement.
type Alert struct {
	SensorID string `json:"sensor_id"`
	Kind     string `json:"kind"`
	Severity string `json:"severity"`
	// Time is the timestamp (Unix ms) of the reading that raised it.
	Time int64 `json:"time"`
}

// Alert kinds and severities.
const (
	KindLeak              = "leak"
	KindPressureLow       = "pressure_low"
	KindPressureHigh      = "pressure_high"
	KindFlowHigh          = "flow_high"
	KindLevelLow          = "level_low"
	KindPressureTransient = "pressure_transient"

	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Config holds the validation ranges and detection thresholds.
type Config struct {
	MaxPressure, MaxFlow float64 // plausible ranges (level is 0..100)
	PressureLow          float64 // bar
	PressureHigh         float64 // bar
	FlowHigh             float64 // L/s
	LevelLow             float64 // percent
	RateLimit            float64 // relative pressure change between readings
	LeakFlowRise         float64 // relative flow rise over the baseline
	LeakPressureFall     float64 // relative pressure fall under the baseline
	WarmUp               int     // readings before detection starts
	Alpha                float64 // EWMA weight of the baseline
	// MaxSensors bounds the sensors whose state an Analyzer holds in
	// memory (0 means DefaultMaxSensors); see Analyzer.
	MaxSensors int
}

// DefaultConfig is the configuration of the example network.
func DefaultConfig() Config {
	return Config{
		MaxPressure: 25, MaxFlow: 1000,
		PressureLow: 1.5, PressureHigh: 8, FlowHigh: 200, LevelLow: 10,
		RateLimit: 0.3, LeakFlowRise: 0.2, LeakPressureFall: 0.1,
		WarmUp: 10, Alpha: 0.02,
	}
}

// Outcome says what became of a reading.
type Outcome string

// Outcomes.
const (
	Accepted  Outcome = "accepted"
	Duplicate Outcome = "duplicate" // seq already seen: a redelivery or a replay
	Rejected  Outcome = "rejected"  // invalid: out of range, time going backwards
)

// Sample is pressure, flow and level: one point of a sensor's statistics.
type Sample struct{ P, F, L float64 }

// MaxMissing bounds how many skipped sequence numbers a sensor's state
// remembers; older ones count as lost for good.
const MaxMissing = 4096

// SensorState is everything analytics keeps about one sensor (in
// protected storage). Its JSON encoding is stable.
type SensorState struct {
	LastSeq    uint64 `json:"last_seq"`
	LastTime   int64  `json:"last_time"`
	Accepted   uint64 `json:"accepted"`
	Duplicates uint64 `json:"duplicates"`
	Rejected   uint64 `json:"rejected"`
	// Late counts readings accepted after later ones (an at-least-once
	// redelivery overtaken by newer readings).
	Late uint64 `json:"late"`
	// Missing are the sequence numbers below LastSeq not seen yet, in
	// increasing order (at most MaxMissing); Lost counts those forgotten.
	Missing  []uint64 `json:"missing,omitempty"`
	Lost     uint64   `json:"lost"`
	Baseline Sample   `json:"baseline"`
	N        int      `json:"n"` // readings in the baseline
	Recent   []Sample `json:"recent"`
	Active   []string `json:"active,omitempty"` // active anomaly kinds, sorted
}

// skipTo records the sequence numbers between LastSeq and seq as missing.
func (s *SensorState) skipTo(seq uint64) {
	from := s.LastSeq + 1
	if seq-from > MaxMissing {
		s.Lost += seq - from - MaxMissing
		from = seq - MaxMissing
	}
	for n := from; n < seq; n++ {
		s.Missing = append(s.Missing, n)
	}
	if over := len(s.Missing) - MaxMissing; over > 0 {
		s.Lost += uint64(over)
		s.Missing = slices.Delete(s.Missing, 0, over)
	}
	s.LastSeq = seq
}

// Apply checks r against the sensor's state, updates the state and returns
// the outcome, the alerts it raises, and why a reading was a duplicate or
// rejected. A reading older than the last one is accepted (and counted
// late) only if its sequence number was skipped; it is too old for the
// detectors, which see readings in time order.
func (s *SensorState) Apply(r Reading, cfg Config) (Outcome, []Alert, error) {
	if r.Seq <= s.LastSeq {
		i, missing := slices.BinarySearch(s.Missing, r.Seq)
		if !missing {
			s.Duplicates++
			return Duplicate, nil, fmt.Errorf("seq %d already seen (last %d)", r.Seq, s.LastSeq)
		}
		s.Missing = slices.Delete(s.Missing, i, i+1)
		if err := r.Validate(cfg); err != nil {
			s.Rejected++
			return Rejected, nil, err
		}
		s.Accepted++
		s.Late++
		return Accepted, nil, nil
	}
	if err := r.Validate(cfg); err != nil {
		s.Rejected++
		s.skipTo(r.Seq) // it was received: not a gap
		return Rejected, nil, err
	}
	if s.LastSeq > 0 && r.Timestamp <= s.LastTime {
		s.Rejected++
		s.skipTo(r.Seq)
		return Rejected, nil, fmt.Errorf("%w: timestamp %d not after the previous %d", ErrOutOfRange, r.Timestamp, s.LastTime)
	}
	s.skipTo(r.Seq)
	s.LastTime = r.Timestamp
	s.Accepted++
	cur := Sample{r.Pressure, r.Flow, r.Level}
	var prev *Sample
	if n := len(s.Recent); n > 0 {
		p := s.Recent[n-1]
		prev = &p
	}
	s.Recent = append(s.Recent, cur)
	if len(s.Recent) > 3 {
		s.Recent = slices.Delete(s.Recent, 0, len(s.Recent)-3)
	}

	active := map[string]string{} // kind -> severity
	clear := map[string]bool{}
	threshold := func(kind string, bad bool, critical bool, cleared bool) {
		switch {
		case bad && critical:
			active[kind] = SeverityCritical
		case bad:
			active[kind] = SeverityWarning
		case cleared:
			clear[kind] = true
		}
	}
	threshold(KindPressureLow, r.Pressure < cfg.PressureLow, r.Pressure < cfg.PressureLow/2, r.Pressure > cfg.PressureLow*1.05)
	threshold(KindPressureHigh, r.Pressure > cfg.PressureHigh, r.Pressure > cfg.PressureHigh*1.25, r.Pressure < cfg.PressureHigh*0.95)
	threshold(KindFlowHigh, r.Flow > cfg.FlowHigh, r.Flow > cfg.FlowHigh*1.5, r.Flow < cfg.FlowHigh*0.95)
	threshold(KindLevelLow, r.Level < cfg.LevelLow, r.Level < cfg.LevelLow/2, r.Level > cfg.LevelLow*1.1)
	if prev != nil && prev.P > 0 {
		change := math.Abs(cur.P-prev.P) / prev.P
		threshold(KindPressureTransient, change > cfg.RateLimit, change > 2*cfg.RateLimit, change < cfg.RateLimit/2)
	}
	if s.N >= cfg.WarmUp && len(s.Recent) == 3 && s.Baseline.P > 0 && s.Baseline.F > 0 {
		var m Sample
		for _, x := range s.Recent {
			m.P += x.P / 3
			m.F += x.F / 3
		}
		rise := m.F/s.Baseline.F - 1
		fall := 1 - m.P/s.Baseline.P
		threshold(KindLeak, rise >= cfg.LeakFlowRise && fall >= cfg.LeakPressureFall,
			rise >= 0.5 || fall >= 0.25, rise < cfg.LeakFlowRise/2 || fall < cfg.LeakPressureFall/2)
	}

	var alerts []Alert
	for _, kind := range sortedKeys(active) {
		if !slices.Contains(s.Active, kind) {
			s.Active = append(s.Active, kind)
			alerts = append(alerts, Alert{SensorID: r.SensorID, Kind: kind, Severity: active[kind], Time: r.Timestamp})
		}
	}
	s.Active = slices.DeleteFunc(s.Active, func(k string) bool { return clear[k] })
	slices.Sort(s.Active)

	// The baseline learns only from normal readings.
	if len(s.Active) == 0 {
		if s.N < cfg.WarmUp {
			n := float64(s.N)
			s.Baseline = Sample{(s.Baseline.P*n + cur.P) / (n + 1), (s.Baseline.F*n + cur.F) / (n + 1), (s.Baseline.L*n + cur.L) / (n + 1)}
			s.N++
		} else {
			a := cfg.Alpha
			s.Baseline = Sample{s.Baseline.P + a*(cur.P-s.Baseline.P), s.Baseline.F + a*(cur.F-s.Baseline.F), s.Baseline.L + a*(cur.L-s.Baseline.L)}
			s.N++
		}
	}
	return Accepted, alerts, nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// MarshalState encodes s for storage.
func (s *SensorState) MarshalState() []byte {
	b, _ := json.Marshal(s)
	return b
}

// UnmarshalState decodes a state written by MarshalState.
func UnmarshalState(b []byte) (*SensorState, error) {
	var s SensorState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("monitor: sensor state: %w", err)
	}
	return &s, nil
}

// Result is analytics' answer to one reading: declassified (no
// measurement), so the host and ingest may read it.
type Result struct {
	Outcome Outcome `json:"outcome"`
	Reason  string  `json:"reason,omitempty"`
	Alerts  int     `json:"alerts,omitempty"`
}

// SensorCounts is the declassified accounting of one sensor.
type SensorCounts struct {
	LastSeq    uint64 `json:"last_seq"`
	Accepted   uint64 `json:"accepted"`
	Duplicates uint64 `json:"duplicates"`
	Rejected   uint64 `json:"rejected"`
	Late       uint64 `json:"late"`
	// Gaps counts the readings never seen (missing and lost).
	Gaps uint64 `json:"gaps"`
}

// Counts returns the declassified counters of s.
func (s *SensorState) Counts() SensorCounts {
	return SensorCounts{LastSeq: s.LastSeq, Accepted: s.Accepted, Duplicates: s.Duplicates, Rejected: s.Rejected,
		Late: s.Late, Gaps: uint64(len(s.Missing)) + s.Lost}
}
