package monitor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestDecodeReading(t *testing.T) {
	good := `{"sensor_id":"s-001","seq":3,"pressure":3.5,"flow":20,"level":70,"timestamp":1700000000000}`
	r, err := DecodeReading([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if r.SensorID != "s-001" || r.Seq != 3 || r.Pressure != 3.5 || r.Timestamp != 1700000000000 {
		t.Fatalf("decoded %+v", r)
	}
	if back, err := DecodeReading(r.Encode()); err != nil || back != r {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	for name, in := range map[string]string{
		"unknown field":  `{"sensor_id":"s","seq":1,"pressure":1,"flow":1,"level":1,"timestamp":1,"x":1}`,
		"missing seq":    `{"sensor_id":"s","pressure":1,"flow":1,"level":1,"timestamp":1}`,
		"missing flow":   `{"sensor_id":"s","seq":1,"pressure":1,"level":1,"timestamp":1}`,
		"zero seq":       `{"sensor_id":"s","seq":0,"pressure":1,"flow":1,"level":1,"timestamp":1}`,
		"bad sensor id":  `{"sensor_id":"s 1","seq":1,"pressure":1,"flow":1,"level":1,"timestamp":1}`,
		"empty id":       `{"sensor_id":"","seq":1,"pressure":1,"flow":1,"level":1,"timestamp":1}`,
		"trailing data":  `{"sensor_id":"s","seq":1,"pressure":1,"flow":1,"level":1,"timestamp":1} {}`,
		"string number":  `{"sensor_id":"s","seq":"1","pressure":1,"flow":1,"level":1,"timestamp":1}`,
		"not an object":  `[1,2]`,
		"empty":          ``,
		"negative seq":   `{"sensor_id":"s","seq":-1,"pressure":1,"flow":1,"level":1,"timestamp":1}`,
		"float time":     `{"sensor_id":"s","seq":1,"pressure":1,"flow":1,"level":1,"timestamp":1.5}`,
		"huge id":        `{"sensor_id":"` + strings.Repeat("a", 65) + `","seq":1,"pressure":1,"flow":1,"level":1,"timestamp":1}`,
		"number too big": `{"sensor_id":"s","seq":1,"pressure":1e999,"flow":1,"level":1,"timestamp":1}`,
	} {
		if _, err := DecodeReading([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

func TestValidate(t *testing.T) {
	cfg := DefaultConfig()
	ok := Reading{SensorID: "s", Seq: 1, Pressure: 3, Flow: 20, Level: 50, Timestamp: 1}
	if err := ok.Validate(cfg); err != nil {
		t.Fatal(err)
	}
	for _, r := range []Reading{
		{Pressure: -1, Flow: 1, Level: 1},
		{Pressure: 1, Flow: 1e9, Level: 1},
		{Pressure: 1, Flow: 1, Level: 101},
	} {
		if err := r.Validate(cfg); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("%+v: got %v", r, err)
		}
	}
}

// feed runs n readings of sensor through st and returns the alerts.
func feed(t *testing.T, st *SensorState, s *Sensor, n int, now *int64) []Alert {
	t.Helper()
	var all []Alert
	for range n {
		*now += 100
		out, alerts, err := st.Apply(s.Next(*now), DefaultConfig())
		if out != Accepted {
			t.Fatalf("outcome %s: %v", out, err)
		}
		all = append(all, alerts...)
	}
	return all
}

func TestNoAlertsInNormalOperation(t *testing.T) {
	for i := range 50 {
		s := NewSensor(fmt.Sprintf("s-%03d", i))
		var st SensorState
		now := int64(1_700_000_000_000)
		if a := feed(t, &st, s, 500, &now); len(a) != 0 {
			t.Fatalf("%s: alerts without a leak: %+v", s.ID(), a)
		}
	}
}

func TestLeakRaisesExactlyOneAlert(t *testing.T) {
	for i := range 50 {
		s := NewSensor(fmt.Sprintf("s-%03d", i))
		var st SensorState
		now := int64(1_700_000_000_000)
		feed(t, &st, s, 30, &now)
		s.StartLeak()
		alerts := feed(t, &st, s, 200, &now)
		if len(alerts) != 1 {
			t.Fatalf("%s: want one alert, got %+v", s.ID(), alerts)
		}
		a := alerts[0]
		if a.SensorID != s.ID() || a.Kind != KindLeak || a.Severity != SeverityWarning || a.Time <= 0 {
			t.Fatalf("alert %+v", a)
		}
		// The state survives storage and keeps the leak active.
		back, err := UnmarshalState(st.MarshalState())
		if err != nil {
			t.Fatal(err)
		}
		if more := feed(t, back, s, 10, &now); len(more) != 0 {
			t.Fatalf("alerts after restoring the state: %+v", more)
		}
	}
}

func TestThresholdsAndRates(t *testing.T) {
	cfg := DefaultConfig()
	var st SensorState
	apply := func(seq uint64, p, f, l float64) []Alert {
		_, a, err := st.Apply(Reading{SensorID: "x", Seq: seq, Pressure: p, Flow: f, Level: l, Timestamp: int64(seq)}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	apply(1, 4, 20, 50)
	if a := apply(2, 1.0, 20, 50); len(a) != 2 || a[0].Kind != KindPressureLow || a[1].Kind != KindPressureTransient {
		t.Fatalf("pressure drop: %+v", a)
	}
	if a := apply(3, 1.0, 20, 50); len(a) != 0 {
		t.Fatalf("a lasting condition alerts again: %+v", a)
	}
	// Pressure jumping back is a transient too (the last one cleared at seq 3).
	if a := apply(4, 4, 500, 4); len(a) != 3 || a[0].Kind != KindFlowHigh || a[0].Severity != SeverityCritical || a[1].Kind != KindLevelLow || a[2].Kind != KindPressureTransient {
		t.Fatalf("flow and level: %+v", a)
	}
}

func TestSequenceAndTime(t *testing.T) {
	cfg := DefaultConfig()
	var st SensorState
	r := Reading{SensorID: "x", Seq: 1, Pressure: 4, Flow: 20, Level: 50, Timestamp: 10}
	if out, _, _ := st.Apply(r, cfg); out != Accepted {
		t.Fatal(out)
	}
	if out, _, err := st.Apply(r, cfg); out != Duplicate || err == nil {
		t.Fatalf("replay: %s %v", out, err)
	}
	r.Seq, r.Timestamp = 2, 10
	if out, _, err := st.Apply(r, cfg); out != Rejected || !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("time standing still: %s %v", out, err)
	}
	r.Seq, r.Timestamp = 5, 20
	if out, _, _ := st.Apply(r, cfg); out != Accepted {
		t.Fatal(out)
	}
	r.Seq, r.Timestamp, r.Pressure = 6, 30, 99
	if out, _, err := st.Apply(r, cfg); out != Rejected || !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("out of range: %s %v", out, err)
	}
	want := SensorCounts{LastSeq: 6, Accepted: 2, Duplicates: 1, Rejected: 2, Gaps: 2}
	if got := st.Counts(); got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
	// A skipped reading arriving late is accepted once, then a duplicate.
	r.Seq, r.Timestamp, r.Pressure = 3, 15, 4
	if out, _, err := st.Apply(r, cfg); out != Accepted || err != nil {
		t.Fatalf("late: %s %v", out, err)
	}
	if out, _, _ := st.Apply(r, cfg); out != Duplicate {
		t.Fatalf("late twice: %s", out)
	}
	want = SensorCounts{LastSeq: 6, Accepted: 3, Duplicates: 2, Rejected: 2, Late: 1, Gaps: 1}
	if got := st.Counts(); got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
	// A forged jump far ahead does not make the state grow without bound.
	r.Seq, r.Timestamp = 1<<62, 100
	st.Apply(r, cfg)
	if len(st.Missing) != MaxMissing || st.Counts().Gaps != (1<<62)-7+1 {
		t.Fatalf("after a jump: %d missing, counts %+v", len(st.Missing), st.Counts())
	}
}

func FuzzDecodeReading(f *testing.F) {
	f.Add([]byte(`{"sensor_id":"s-001","seq":3,"pressure":3.5,"flow":20,"level":70,"timestamp":1700000000000}`))
	f.Add([]byte(`{"sensor_id":"s","seq":1,"pressure":1,"flow":1,"level":1,"timestamp":1,"extra":"xx"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"sensor_id":"a","seq":18446744073709551615,"pressure":-0,"flow":1e308,"level":1,"timestamp":-9223372036854775808}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeReading(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if ValidSensorID(r.SensorID) != nil || r.Seq == 0 {
			t.Fatalf("accepted %+v", r)
		}
		back, err := DecodeReading(r.Encode())
		if err != nil || back != r {
			t.Fatalf("re-encoding %+v: %+v %v", r, back, err)
		}
		var st SensorState
		_, _, _ = st.Apply(r, DefaultConfig()) // never panics
	})
}

func TestAnalyzer(t *testing.T) {
	ctx := t.Context()
	store := &MapStore{}
	a := NewAnalyzer(DefaultConfig(), store)
	s := NewSensor("s-1")
	now := int64(1000)
	var alerts []Alert
	for i := range 60 {
		if i == 20 {
			s.StartLeak()
		}
		now += 10
		res, al, err := a.Handle(ctx, s.Next(now).Encode())
		if err != nil || res.Outcome != Accepted {
			t.Fatalf("%+v %v", res, err)
		}
		alerts = append(alerts, al...)
	}
	if len(alerts) != 1 || alerts[0].Kind != KindLeak {
		t.Fatalf("alerts %+v", alerts)
	}
	// A new analyzer over the same store (a restarted enclave) knows the sensor.
	b := NewAnalyzer(DefaultConfig(), store)
	st, err := b.Status(ctx, StatusRequest{Sensors: []string{"s-1", "bad id"}})
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Sensors["s-1"]; c.LastSeq != 60 || c.Accepted != 60 || len(st.Sensors) != 1 {
		t.Fatalf("status %+v", st)
	}
	if res, _, _ := b.Handle(ctx, []byte("garbage")); res.Outcome != Rejected {
		t.Fatalf("garbage: %+v", res)
	}
}

// countingStore is a MapStore that counts reads.
type countingStore struct {
	MapStore
	mu   sync.Mutex
	gets int
}

func (s *countingStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	s.mu.Lock()
	s.gets++
	s.mu.Unlock()
	return s.MapStore.Get(ctx, key)
}

func TestStatusCreatesNoStateAndIsBounded(t *testing.T) {
	ctx := t.Context()
	store := &countingStore{}
	a := NewAnalyzer(DefaultConfig(), store)
	s := NewSensor("s-1")
	for i := range 3 {
		if res, _, err := a.Handle(ctx, s.Next(int64(1000+10*i)).Encode()); err != nil || res.Outcome != Accepted {
			t.Fatalf("%+v %v", res, err)
		}
	}
	// Naming many sensors that do not exist creates nothing.
	ids := make([]string, MaxStatusSensors)
	for i := range ids {
		ids[i] = fmt.Sprintf("ghost-%d", i)
	}
	ids[0] = "s-1"
	st, err := a.Status(ctx, StatusRequest{Sensors: ids})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Sensors) != 1 || st.Sensors["s-1"].Accepted != 3 {
		t.Fatalf("status %+v", st)
	}
	if n := a.Sensors(); n != 1 {
		t.Fatalf("%d sensors held after a status request naming %d", n, len(ids))
	}
	// The answer to a later request without names is as small as before.
	if st, err = a.Status(ctx, StatusRequest{}); err != nil || len(st.Sensors) != 1 {
		t.Fatalf("status %+v %v", st, err)
	}
	// One name more than the bound is refused, naming the bound.
	_, err = a.Status(ctx, StatusRequest{Sensors: append(ids, "one-more")})
	if !errors.Is(err, ErrStatusRequest) || !strings.Contains(err.Error(), fmt.Sprint(MaxStatusSensors)) {
		t.Fatalf("oversized request: %v", err)
	}
	// The store is not even read for the refused request.
	store.mu.Lock()
	before := store.gets
	store.mu.Unlock()
	a.Status(ctx, StatusRequest{Sensors: append(ids, "one-more")})
	store.mu.Lock()
	after := store.gets
	store.mu.Unlock()
	if after != before {
		t.Fatalf("refused request read the store %d times", after-before)
	}
}

func TestAnalyzerSensorBound(t *testing.T) {
	ctx := t.Context()
	store := &MapStore{}
	cfg := DefaultConfig()
	cfg.MaxSensors = 8
	a := NewAnalyzer(cfg, store)
	// s-0 gets two readings, then 20 other sensors one each: the table
	// never exceeds its bound.
	first := NewSensor("s-0")
	for i := range 2 {
		if _, _, err := a.Handle(ctx, first.Next(int64(1000+10*i)).Encode()); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 20; i++ {
		s := NewSensor(fmt.Sprintf("s-%d", i))
		if res, _, err := a.Handle(ctx, s.Next(2000).Encode()); err != nil || res.Outcome != Accepted {
			t.Fatalf("%+v %v", res, err)
		}
		if n := a.Sensors(); n > cfg.MaxSensors {
			t.Fatalf("%d sensors held, bound %d", n, cfg.MaxSensors)
		}
	}
	// Status without names lists at most the sensors held.
	st, err := a.Status(ctx, StatusRequest{})
	if err != nil || len(st.Sensors) > cfg.MaxSensors {
		t.Fatalf("status %d sensors, %v", len(st.Sensors), err)
	}
	// What was dropped from memory was not lost: s-0 continues at seq 3
	// (not a duplicate, not a gap), and its counts are all there.
	res, _, err := a.Handle(ctx, first.Next(3000).Encode())
	if err != nil || res.Outcome != Accepted {
		t.Fatalf("s-0 after eviction: %+v %v", res, err)
	}
	st, err = a.Status(ctx, StatusRequest{Sensors: []string{"s-0", "s-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Sensors["s-0"]; c.LastSeq != 3 || c.Accepted != 3 || c.Gaps != 0 || c.Duplicates != 0 {
		t.Fatalf("s-0 counts %+v", c)
	}
	if c := st.Sensors["s-1"]; c.Accepted != 1 {
		t.Fatalf("s-1 counts %+v", c)
	}
}

// TestAnalyzerSensorBoundConcurrent: many sensors at once over a small
// bound, with status requests in between: every reading is applied once
// (sensors dropped from memory are read back from the store).
func TestAnalyzerSensorBoundConcurrent(t *testing.T) {
	ctx := t.Context()
	cfg := DefaultConfig()
	cfg.MaxSensors = 3
	a := NewAnalyzer(cfg, &MapStore{})
	const sensors, readings = 12, 40
	var wg sync.WaitGroup
	errs := make(chan error, sensors+1)
	for i := range sensors {
		wg.Go(func() {
			s := NewSensor(fmt.Sprintf("s-%d", i))
			for j := range readings {
				res, _, err := a.Handle(ctx, s.Next(int64(1000+10*j)).Encode())
				if err != nil || res.Outcome != Accepted {
					errs <- fmt.Errorf("sensor %d reading %d: %+v %v", i, j, res, err)
					return
				}
			}
		})
	}
	stop := make(chan struct{})
	var sw sync.WaitGroup
	sw.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := a.Status(ctx, StatusRequest{Sensors: []string{"s-0", "s-5", "s-11"}}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(stop)
	sw.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ids := make([]string, sensors)
	for i := range ids {
		ids[i] = fmt.Sprintf("s-%d", i)
	}
	st, err := a.Status(ctx, StatusRequest{Sensors: ids})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if c := st.Sensors[id]; c.Accepted != readings || c.LastSeq != readings || c.Duplicates != 0 || c.Gaps != 0 {
			t.Errorf("%s: %+v", id, c)
		}
	}
	if n := a.Sensors(); n > cfg.MaxSensors {
		t.Errorf("%d sensors held, bound %d", n, cfg.MaxSensors)
	}
}

// A client may report only its own sensor's readings: another sensor's is
// refused, counted, and changes nothing.
func TestHandleFromRefusesAnotherSensor(t *testing.T) {
	ctx := t.Context()
	a := NewAnalyzer(DefaultConfig(), &MapStore{})
	r := NewSensor("s-002").Next(1000)
	if _, _, err := a.HandleFrom(ctx, "s-001", r.Encode()); !errors.Is(err, ErrWrongSensor) {
		t.Fatalf("s-001 reporting for s-002: %v", err)
	}
	st, err := a.Status(ctx, StatusRequest{Sensors: []string{"s-002"}})
	if err != nil || len(st.Sensors) != 0 || st.Unopened != 1 {
		t.Fatalf("after the refusal: %+v %v", st, err)
	}
	if res, _, err := a.HandleFrom(ctx, "s-002", r.Encode()); err != nil || res.Outcome != Accepted {
		t.Fatalf("s-002's own reading: %+v %v", res, err)
	}
}
