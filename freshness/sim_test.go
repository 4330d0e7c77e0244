package freshness

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
)

// simSeeds is how many hostile schedules each group size plays:
// FRESHNESS_SEEDS, or 3000 (500 under the race detector).
func simSeeds() uint64 {
	if n, err := strconv.ParseUint(os.Getenv("FRESHNESS_SEEDS"), 10, 64); err == nil {
		return n
	}
	if raceEnabled {
		return 500
	}
	return 3000
}

// The simulation plays a hostile host against the protocol: it runs
// duplicate instances of any slot (a new incarnation while the old one
// still lives), kills instances, delivers requests to any instance at any
// time and in any order, delays answers and drops them. Safety: a read
// issued after a write of subject x completed returns at least that
// write's counter.

type simInst struct {
	r     *Replica
	alive bool
}

type opKind int

const (
	opWrite opKind = iota
	opRead
	opAdmitRead1
	opAdmitWrite
	opAdmitRead2
)

type simOp struct {
	kind    opKind
	version Version
	nonce   uint64
	floor   uint64 // reads: the highest completed write when issued
	acks    []Ack
	answers []Answer
	admit   *simInst
	number  uint64 // admission: the incarnation number it will take
	done    bool
}

type sim struct {
	t         *testing.T
	rng       *rand.Rand
	n         int
	insts     []*simInst
	ops       []*simOp
	nonce     uint64
	counter   uint64 // of the last write issued
	writing   bool
	completed uint64 // highest completed write
	spawns    int
	log       []string
}

func keyHash(slot Slot, i int) [32]byte {
	return sha256.Sum256([]byte(fmt.Sprintf("slot %d key %d", slot, i)))
}

func newSim(t *testing.T, n int, seed uint64, forming bool) *sim {
	s := &sim{t: t, rng: rand.New(rand.NewPCG(seed, 17)), n: n}
	if forming {
		// Only slot 0 starts as a member; every other slot is admitted by
		// the protocol, while writes and reads go on.
		g := NewReplica(0, keyHash(0, 0))
		g.Admit(1)
		s.insts = append(s.insts, &simInst{r: g, alive: true})
		for i := 1; i < n; i++ {
			in := &simInst{r: NewReplica(Slot(i), keyHash(Slot(i), 0)), alive: true}
			s.insts = append(s.insts, in)
			s.ops = append(s.ops, &simOp{kind: opAdmitRead1, nonce: s.newNonce(), admit: in})
		}
		return s
	}
	var hs [][32]byte
	for i := range n {
		hs = append(hs, keyHash(Slot(i), 0))
	}
	for i := range n {
		s.insts = append(s.insts, &simInst{r: NewGenesis(Slot(i), hs), alive: true})
	}
	return s
}

func (s *sim) logf(format string, a ...any) { s.log = append(s.log, fmt.Sprintf(format, a...)) }

func (s *sim) quorum(o *simOp) Quorum {
	q := Quorum{N: s.n, Exclude: -1}
	if o.admit != nil {
		q.Exclude = o.admit.r.Self().Slot
	}
	return q
}

func (s *sim) newNonce() uint64 { s.nonce++; return s.nonce }

func (s *sim) step() {
	switch k := s.rng.IntN(20); {
	case k == 0 && !s.writing:
		s.counter++
		s.writing = true
		v := Version{Counter: s.counter, Digest: sha256.Sum256([]byte(strconv.FormatUint(s.counter, 10)))}
		s.ops = append(s.ops, &simOp{kind: opWrite, version: v})
		s.logf("issue write %d", s.counter)
	case k == 1:
		s.ops = append(s.ops, &simOp{kind: opRead, nonce: s.newNonce(), floor: s.completed})
		s.logf("issue read (floor %d)", s.completed)
	case k == 2 && s.spawns < 6:
		s.spawns++
		slot := Slot(s.rng.IntN(s.n))
		in := &simInst{r: NewReplica(slot, keyHash(slot, s.spawns)), alive: true}
		s.insts = append(s.insts, in)
		s.ops = append(s.ops, &simOp{kind: opAdmitRead1, nonce: s.newNonce(), admit: in})
		s.logf("spawn instance %d of slot %d", len(s.insts)-1, slot)
	case k == 3 && s.rng.IntN(4) == 0:
		i := s.rng.IntN(len(s.insts))
		if s.insts[i].alive {
			s.insts[i].alive = false
			s.logf("kill instance %d (slot %d)", i, s.insts[i].r.Self().Slot)
		}
	case k < 14:
		s.deliver()
	default:
		s.complete()
	}
}

// deliver hands a pending request to some live instance and keeps (or
// drops) its answer.
func (s *sim) deliver() {
	if len(s.ops) == 0 {
		return
	}
	o := s.ops[s.rng.IntN(len(s.ops))]
	i := s.rng.IntN(len(s.insts))
	in := s.insts[i]
	if !in.alive || in == o.admit || o.done {
		return
	}
	drop := s.rng.IntN(5) == 0
	switch o.kind {
	case opWrite, opAdmitWrite:
		subject, v := "x", o.version
		if o.kind == opAdmitWrite {
			subject = MemberSubject(o.admit.r.Self().Slot)
		}
		a, err := in.r.Write(subject, v)
		if err == nil && !drop {
			o.acks = append(o.acks, a)
		}
		s.logf("deliver %s %v to instance %d: %v (drop %v)", subject, v.Counter, i, err, drop)
	default:
		a, err := in.r.Read(o.nonce)
		if err == nil && !drop {
			o.answers = append(o.answers, a)
		}
		s.logf("deliver read %d to instance %d (slot %d inc %d, x=%d): %v (drop %v)", o.nonce, i, in.r.Self().Slot, in.r.Self().Number, a.Holds["x"].Counter, err, drop)
	}
}

// complete lets some operation judge what it collected.
func (s *sim) complete() {
	if len(s.ops) == 0 {
		return
	}
	idx := s.rng.IntN(len(s.ops))
	o := s.ops[idx]
	q := s.quorum(o)
	switch o.kind {
	case opWrite:
		if !q.Acked("x", o.version, o.acks) {
			return
		}
		s.completed = max(s.completed, o.version.Counter)
		s.writing = false
		s.logf("write %d completed", o.version.Counter)
	case opRead:
		latest, err := q.Latest(o.nonce, o.answers)
		if err != nil {
			return
		}
		s.logf("read completed: x=%d (floor %d)", latest["x"].Counter, o.floor)
		if latest["x"].Counter < o.floor {
			s.fail(fmt.Sprintf("read returned x=%d after write %d completed", latest["x"].Counter, o.floor))
		}
	case opAdmitRead1, opAdmitRead2:
		latest, err := q.Latest(o.nonce, o.answers)
		if err != nil {
			return
		}
		o.admit.r.Learn(latest)
		slot := o.admit.r.Self().Slot
		if o.kind == opAdmitRead1 {
			number := latest[MemberSubject(slot)].Counter + 1
			v := Version{Counter: number, Digest: o.admit.r.Self().KeyHash}
			s.ops = append(s.ops, &simOp{kind: opAdmitWrite, version: v, admit: o.admit, number: number})
			s.logf("admission of slot %d: read 1 done, writing incarnation %d", slot, number)
		} else {
			o.admit.r.Admit(o.number)
			s.logf("admission of slot %d incarnation %d done", slot, o.number)
		}
	case opAdmitWrite:
		if !q.Acked(MemberSubject(o.admit.r.Self().Slot), o.version, o.acks) {
			return
		}
		s.ops = append(s.ops, &simOp{kind: opAdmitRead2, nonce: s.newNonce(), admit: o.admit, number: o.number})
		s.logf("admission of slot %d: member write done", o.admit.r.Self().Slot)
	}
	o.done = true
	s.ops = append(s.ops[:idx], s.ops[idx+1:]...)
}

func (s *sim) fail(msg string) {
	s.t.Helper()
	tail := s.log
	if len(tail) > 80 {
		tail = tail[len(tail)-80:]
	}
	for _, l := range tail {
		s.t.Log(l)
	}
	s.t.Fatal(msg)
}

func TestSimulatedHostCannotRollBack(t *testing.T) {
	for _, c := range []struct {
		n       int
		forming bool
	}{{1, false}, {3, false}, {5, false}, {3, true}, {5, true}} {
		t.Run(fmt.Sprintf("N=%d,forming=%v", c.n, c.forming), func(t *testing.T) {
			n := c.n
			for seed := range simSeeds() {
				s := newSim(t, n, seed, c.forming)
				for range 400 {
					s.step()
					if t.Failed() {
						t.Fatalf("seed %d", seed)
					}
				}
			}
		})
	}
}
