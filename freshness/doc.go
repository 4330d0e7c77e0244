// Package freshness is the quorum memory that lets Cloister refuse
// rolled-back sealed state: a group of N coordinator replicas keeps, in
// enclave memory only, the latest version (a counter and a digest) of every
// subject — the coordinator's own state, each service instance's state,
// and each replica slot's current incarnation — and answers only with
// signed, current-incarnation answers that a quorum of slots must agree
// on.
//
// Package coordinator carries these messages between replicas over the
// bus and documents the wire format; this package holds the rules, so
// that a simulation of a hostile host can check them (sim_test.go:
// duplicate instances of a slot, kills, reordered, delayed and dropped
// messages, a group that forms while it serves; FRESHNESS_SEEDS sets how
// many schedules).
//
// # Protocol
//
// Slots 0…N−1; a quorum is ⌊N/2⌋+1 distinct slots once all N have been
// admitted. While the group forms (fewer members registered than N), a
// quorum is every member but the one being admitted: each write then
// reached every member. Every start of a
// replica is a new incarnation of its slot with a fresh key; the register
// member/<slot> holds (incarnation number, SHA-256 of its key). A replica
// answers only when live.
//
// Write(s, v): every live replica accepts v if v.Counter is above what it
// holds for s or v equals it; it refuses a lower counter (ErrStale) and an
// equal counter with another digest (ErrFork). The writer is done when
// [Quorum.Acked] holds for the acks it collected.
//
// Read(nonce): every live replica answers everything it holds, with the
// nonce. [Quorum.Latest] takes the highest version of each subject over a
// quorum of answers.
//
// An answer or an ack counts only if it comes from the incarnation of its
// slot that no other answer in the same set reports superseded.
//
// Admission of a new incarnation of slot k (its memory is empty):
//
//  1. Read from a quorum of the other slots and learn;
//  2. Write member/k = (highest incarnation seen + 1, hash of its key) to a
//     quorum of the other slots;
//  3. Read from a quorum of the other slots again and learn; then live.
package freshness
