package monitor

import (
	"hash/fnv"
	"math/rand/v2"
)

// LeakSteps is how many readings a simulated leak takes to develop fully:
// flow ramps up by 60% and pressure falls by 25% over them, then stays.
const LeakSteps = 10

// Sensor simulates one sensor: steady values with ±1% noise, and a leak on
// demand. It is not safe for concurrent use.
type Sensor struct {
	id       string
	rng      *rand.Rand
	base     Sample
	seq      uint64
	lastTime int64
	leak     int // readings since the leak started; 0: no leak
}

// NewSensor returns a simulated sensor whose values depend on its ID only.
func NewSensor(id string) *Sensor {
	h := fnv.New64a()
	h.Write([]byte(id))
	seed := h.Sum64()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &Sensor{id: id, rng: rng, base: Sample{
		P: 3.5 + rng.Float64(),   // bar
		F: 20 + 20*rng.Float64(), // L/s
		L: 60 + 20*rng.Float64(), // %
	}}
}

// Resume continues a sensor's numbering after seq (a sensor restarted with
// its last sequence number kept).
func (s *Sensor) Resume(seq uint64) { s.seq = max(s.seq, seq) }

// Seq returns the sequence number of the sensor's last reading.
func (s *Sensor) Seq() uint64 { return s.seq }

// ID returns the sensor's ID.
func (s *Sensor) ID() string { return s.id }

// StartLeak makes the following readings show a leak developing.
func (s *Sensor) StartLeak() {
	if s.leak == 0 {
		s.leak = 1
	}
}

// Leaking reports whether a leak was started.
func (s *Sensor) Leaking() bool { return s.leak > 0 }

// Next returns the sensor's next reading, stamped nowMillis (or just after
// the previous reading, so timestamps always grow).
func (s *Sensor) Next(nowMillis int64) Reading {
	if nowMillis <= s.lastTime {
		nowMillis = s.lastTime + 1
	}
	s.lastTime = nowMillis
	s.seq++
	noise := func() float64 { return 1 + 0.02*(s.rng.Float64()-0.5) }
	p, f, l := s.base.P, s.base.F, s.base.L
	if s.leak > 0 {
		k := float64(min(s.leak, LeakSteps)) / LeakSteps
		f *= 1 + 0.6*k
		p *= 1 - 0.25*k
		s.leak++
	}
	return Reading{SensorID: s.id, Seq: s.seq, Pressure: p * noise(), Flow: f * noise(), Level: l * noise(), Timestamp: nowMillis}
}
