package secure

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cloister-dev/cloister/wire"
)

func TestOpenerStateSurvivesRestart(t *testing.T) {
	k1 := mustKey(t, addr, 1)
	k2 := mustKey(t, addr, 2)
	s := mustSealer(t, k2)
	other := mustSealer(t, k2)
	var envs [][]byte
	for range 10 {
		env, _ := seal(t, s, wire.KindSend, nil, "x")
		envs = append(envs, env)
	}
	o := mustOpener(t, OpenerOptions{}, k1, k2)
	for _, i := range []int{0, 1, 2, 4} { // 3 is late
		if _, err := o.Open(wire.KindSend, envs[i]); err != nil {
			t.Fatal(err)
		}
	}
	oe, _ := seal(t, other, wire.KindSend, nil, "y")
	if _, err := o.Open(wire.KindSend, oe); err != nil {
		t.Fatal(err)
	}
	state := o.MarshalState()

	// Without the state a restarted receiver accepts what its previous life
	// saw (documented: redelivery or replay, the application decides).
	fresh := mustOpener(t, OpenerOptions{}, k1, k2)
	if _, err := fresh.Open(wire.KindSend, envs[0]); err != nil {
		t.Fatalf("fresh opener: %v", err)
	}

	// With it, those are replays; the late one and new ones still open.
	o2 := mustOpener(t, OpenerOptions{}, k1, k2)
	if err := o2.RestoreState(state); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 2, 4} {
		if _, err := o2.Open(wire.KindSend, envs[i]); !errors.Is(err, ErrReplay) {
			t.Fatalf("envelope %d after restore: %v", i, err)
		}
	}
	if _, err := o2.Open(wire.KindSend, oe); !errors.Is(err, ErrReplay) {
		t.Fatalf("other sender after restore: %v", err)
	}
	got, err := o2.Open(wire.KindSend, envs[3])
	if err != nil || got.FirstFromSender {
		t.Fatalf("late envelope after restore: %+v %v", got, err)
	}
	got, err = o2.Open(wire.KindSend, envs[5])
	if err != nil || got.Skipped.Count() != 0 || got.FirstFromSender {
		t.Fatalf("next envelope after restore: %+v %v", got, err)
	}
	// The state round-trips exactly.
	if st := o2.MarshalState(); bytes.Equal(st, state) {
		t.Fatal("state did not change after more envelopes")
	}
	o3 := mustOpener(t, OpenerOptions{}, k1, k2)
	o3.RestoreState(o2.MarshalState())
	if !bytes.Equal(o3.MarshalState(), o2.MarshalState()) {
		t.Fatal("state does not round-trip")
	}

	// Merging into an opener that already saw newer envelopes keeps both.
	o4 := mustOpener(t, OpenerOptions{}, k1, k2)
	if _, err := o4.Open(wire.KindSend, envs[7]); err != nil {
		t.Fatal(err)
	}
	if err := o4.RestoreState(state); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 4, 7} {
		if _, err := o4.Open(wire.KindSend, envs[i]); !errors.Is(err, ErrReplay) {
			t.Fatalf("envelope %d after merge: %v", i, err)
		}
	}
	for _, i := range []int{3, 5, 6, 8} {
		if _, err := o4.Open(wire.KindSend, envs[i]); err != nil {
			t.Fatalf("envelope %d after merge: %v", i, err)
		}
	}

	// Retired epochs are skipped; a different width is refused; too many
	// senders are refused without change.
	o5 := mustOpener(t, OpenerOptions{}, k1, k2)
	o5.Retire(2)
	if err := o5.RestoreState(state); err != nil {
		t.Fatal(err)
	}
	if err := mustOpener(t, OpenerOptions{Window: 128}, k2).RestoreState(state); err == nil {
		t.Fatal("width mismatch accepted")
	}
	o6 := mustOpener(t, OpenerOptions{MaxSenders: 1}, k2)
	if err := o6.RestoreState(state); !errors.Is(err, ErrTooManySenders) {
		t.Fatalf("too many senders: %v", err)
	}
	if len(o6.MarshalState()) != stateHdrLen+8 {
		t.Fatal("a failed restore changed the opener")
	}
}

func TestOpenerStateStrict(t *testing.T) {
	k := mustKey(t, addr, 1)
	s := mustSealer(t, k)
	o := mustOpener(t, OpenerOptions{Window: 64}, k)
	for range 3 {
		env, _ := seal(t, s, wire.KindSend, nil, "x")
		if _, err := o.Open(wire.KindSend, env); err != nil {
			t.Fatal(err)
		}
	}
	state := o.MarshalState()
	o2 := mustOpener(t, OpenerOptions{Window: 64}, k)
	for n := range len(state) {
		if err := o2.RestoreState(state[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if err := o2.RestoreState(append(bytes.Clone(state), 0)); !errors.Is(err, ErrMalformed) {
		t.Fatal("trailing byte accepted")
	}
	// A window that marks sequence numbers below 1.
	bad := bytes.Clone(state)
	bad[len(bad)-1] |= 0x80 // bit 7 of the first word: distance 7 > max 3
	if err := o2.RestoreState(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("phantom bits: %v", err)
	}
}

func TestWindowMerge(t *testing.T) {
	mk := func(width int, seqs ...uint64) window {
		w := newWindow(width)
		for _, s := range seqs {
			if w.check(s) == nil {
				w.accept(s)
			}
		}
		return w
	}
	a := mk(64, 1, 2, 5, 70)
	b := mk(64, 3, 60, 100)
	a.merge(b)
	want := mk(64, 1, 2, 3, 5, 60, 70, 100)
	if a.max != want.max || !equalWords(a.bits, want.bits) {
		t.Fatalf("merge: %d %x, want %d %x", a.max, a.bits, want.max, want.bits)
	}
}

func equalWords(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
