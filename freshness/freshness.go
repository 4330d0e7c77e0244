package freshness

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
)

// Version is what the group remembers of one subject: a counter that only
// grows, and the digest of the state it counts.
type Version struct {
	Counter uint64
	Digest  [32]byte
}

// Slot numbers a replica place, 0…N−1.
type Slot int

// Incarnation names one running instance of a slot: the slot, its
// incarnation number, and the hash of its key (which signs its answers).
type Incarnation struct {
	Slot    Slot
	Number  uint64
	KeyHash [32]byte
}

// MemberSubject is the subject under which the group remembers slot s's
// current incarnation.
func MemberSubject(s Slot) string { return "member/" + strconv.Itoa(int(s)) }

// Errors a replica answers a write with.
var (
	// ErrStale: the write's counter is below what the replica holds — a
	// rollback attempt.
	ErrStale = errors.New("freshness: stale version")
	// ErrFork: same counter, another digest — two instances wrote from the
	// same state.
	ErrFork = errors.New("freshness: forked version")
	// ErrRecovering: the replica has not finished its admission and answers
	// nothing.
	ErrRecovering = errors.New("freshness: replica is recovering")
	// ErrNoQuorum: the answers do not come from a quorum of current
	// incarnations.
	ErrNoQuorum = errors.New("freshness: no quorum")
)

// Ack is a replica's acceptance of a write.
type Ack struct {
	From    Incarnation
	Subject string
	Version Version
	// Members is the replica's view of every slot's incarnation.
	Members map[Slot]uint64
}

// Answer is a replica's answer to a read: all it holds, with the reader's
// nonce.
type Answer struct {
	From    Incarnation
	Nonce   uint64
	Holds   map[string]Version
	Members map[Slot]uint64
}

// Replica is one incarnation's memory. Its zero value is not usable; see
// NewReplica.
type Replica struct {
	self Incarnation
	live bool
	regs map[string]Version
}

// NewReplica starts an incarnation of slot with the given key hash; it is
// recovering until Admit.
func NewReplica(slot Slot, keyHash [32]byte) *Replica {
	return &Replica{self: Incarnation{Slot: slot, KeyHash: keyHash}, regs: map[string]Version{}}
}

// NewGenesis starts the first incarnation of every slot of a new group:
// live at once, incarnation 1, with the members registered.
func NewGenesis(slot Slot, keyHashes []([32]byte)) *Replica {
	r := NewReplica(slot, keyHashes[slot])
	for s, h := range keyHashes {
		r.regs[MemberSubject(Slot(s))] = Version{Counter: 1, Digest: h}
	}
	r.self.Number = 1
	r.live = true
	return r
}

// Self is the incarnation this replica speaks as.
func (r *Replica) Self() Incarnation { return r.self }

// Live says whether the replica answers.
func (r *Replica) Live() bool { return r.live }

// Members is the replica's view of every admitted slot's current
// incarnation number.
func (r *Replica) Members() map[Slot]uint64 { return r.members() }

// Holds returns a copy of every register the replica holds.
func (r *Replica) Holds() map[string]Version { return maps.Clone(r.regs) }

func (r *Replica) members() map[Slot]uint64 {
	m := map[Slot]uint64{}
	for subj, v := range r.regs {
		var s int
		if _, err := fmt.Sscanf(subj, "member/%d", &s); err == nil {
			m[Slot(s)] = v.Counter
		}
	}
	return m
}

// Write accepts v for subject if it is not older than what the replica
// holds.
func (r *Replica) Write(subject string, v Version) (Ack, error) {
	if !r.live {
		return Ack{}, ErrRecovering
	}
	cur, ok := r.regs[subject]
	switch {
	case !ok || v.Counter > cur.Counter:
		r.regs[subject] = v
	case v.Counter < cur.Counter:
		return Ack{}, fmt.Errorf("%w: %s at %d, write of %d", ErrStale, subject, cur.Counter, v.Counter)
	case v.Digest != cur.Digest:
		return Ack{}, fmt.Errorf("%w: %s at %d", ErrFork, subject, v.Counter)
	}
	return Ack{From: r.self, Subject: subject, Version: v, Members: r.members()}, nil
}

// Read answers everything the replica holds.
func (r *Replica) Read(nonce uint64) (Answer, error) {
	if !r.live {
		return Answer{}, ErrRecovering
	}
	return Answer{From: r.self, Nonce: nonce, Holds: maps.Clone(r.regs), Members: r.members()}, nil
}

// Learn merges what a quorum answered (the result of Quorum.Latest) into
// the replica's memory, keeping the higher version of each subject.
func (r *Replica) Learn(latest map[string]Version) {
	for s, v := range latest {
		if cur, ok := r.regs[s]; !ok || v.Counter > cur.Counter {
			r.regs[s] = v
		}
	}
}

// Admit makes the replica live as incarnation number, once its member
// write was acked and it learned from a second quorum read.
func (r *Replica) Admit(number uint64) {
	r.self.Number = number
	r.regs[MemberSubject(r.self.Slot)] = Version{Counter: number, Digest: r.self.KeyHash}
	r.live = true
}

// Quorum judges sets of acks and answers for a group of N slots.
type Quorum struct {
	N int
	// Exclude is a slot whose answers do not count (the slot being
	// admitted), or -1.
	Exclude Slot
}

// Size is the number of slots that make a quorum.
func (q Quorum) Size() int { return q.N/2 + 1 }

// current keeps, of the given incarnations, those that no view in the set
// reports superseded, one per slot.
func (q Quorum) current(from []Incarnation, views []map[Slot]uint64) map[Slot]int {
	newest := map[Slot]uint64{}
	for _, v := range views {
		for s, n := range v {
			newest[s] = max(newest[s], n)
		}
	}
	for _, f := range from {
		newest[f.Slot] = max(newest[f.Slot], f.Number)
	}
	counted := map[Slot]int{}
	for i, f := range from {
		if f.Slot == q.Exclude || f.Slot < 0 || int(f.Slot) >= q.N || f.Number != newest[f.Slot] {
			continue
		}
		if _, dup := counted[f.Slot]; !dup {
			counted[f.Slot] = i
		}
	}
	return counted
}

// Acked reports whether acks for (subject, v) come from a quorum of
// current incarnations.
func (q Quorum) Acked(subject string, v Version, acks []Ack) bool {
	var from []Incarnation
	var views []map[Slot]uint64
	for _, a := range acks {
		if a.Subject != subject || a.Version != v {
			continue
		}
		from = append(from, a.From)
		views = append(views, a.Members)
	}
	return q.enough(q.current(from, views), from, views)
}

// enough decides whether the counted slots make a quorum. Once every one
// of the N slots has been admitted (the views and the answering
// incarnations name N members), a quorum is a majority of N, Exclude
// never counting. While the group is still forming (fewer members), it is
// every member but Exclude, and at least one: each write then reached
// every member, so any member's memory is complete.
func (q Quorum) enough(counted map[Slot]int, from []Incarnation, views []map[Slot]uint64) bool {
	members := map[Slot]bool{}
	for _, v := range views {
		for s, n := range v {
			if n > 0 && s >= 0 && int(s) < q.N {
				members[s] = true
			}
		}
	}
	for _, f := range from {
		if f.Number > 0 && f.Slot >= 0 && int(f.Slot) < q.N {
			members[f.Slot] = true
		}
	}
	if len(members) >= q.N {
		return len(counted) >= q.Size()
	}
	need := 0
	for s := range members {
		if s == q.Exclude {
			continue
		}
		need++
		if _, ok := counted[s]; !ok {
			return false
		}
	}
	return need > 0
}

// Latest is the highest version of each subject over answers to nonce from
// a quorum of current incarnations; ErrNoQuorum if they are too few.
func (q Quorum) Latest(nonce uint64, answers []Answer) (map[string]Version, error) {
	var from []Incarnation
	var views []map[Slot]uint64
	var kept []Answer
	for _, a := range answers {
		if a.Nonce != nonce {
			continue
		}
		from = append(from, a.From)
		views = append(views, a.Members)
		kept = append(kept, a)
	}
	counted := q.current(from, views)
	if !q.enough(counted, from, views) {
		return nil, fmt.Errorf("%w: %d current slots answered (a majority of %d, or every member while the group forms)", ErrNoQuorum, len(counted), q.N)
	}
	latest := map[string]Version{}
	for _, i := range counted {
		for s, v := range kept[i].Holds {
			if cur, ok := latest[s]; !ok || v.Counter > cur.Counter {
				latest[s] = v
			}
		}
	}
	return latest, nil
}
