package secure

import (
	"bytes"
	"crypto/cipher"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/wire"
)

const addr = "water.readings"

func mustKey(t testing.TB, address string, epoch uint32) AddressKey {
	t.Helper()
	k, err := NewAddressKey(address, epoch)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSealer(t testing.TB, k AddressKey) *Sealer {
	t.Helper()
	s, err := NewSealer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustOpener(t testing.TB, opts OpenerOptions, keys ...AddressKey) *Opener {
	t.Helper()
	o, err := NewOpener(keys[0].Address, opts, keys...)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func seal(t testing.TB, s *Sealer, kind wire.Kind, h map[string]string, p string) ([]byte, Ref) {
	t.Helper()
	env, ref, err := s.Seal(kind, h, []byte(p))
	if err != nil {
		t.Fatal(err)
	}
	return env, ref
}

func TestRoundTripAllKinds(t *testing.T) {
	k := mustKey(t, addr, 7)
	s := mustSealer(t, k)
	o := mustOpener(t, OpenerOptions{}, k)
	hdr := map[string]string{"b": "2", "a": "1", "content-type": "application/json"}
	for _, kind := range []wire.Kind{wire.KindSend, wire.KindPublish, wire.KindRequest} {
		for _, p := range []string{"", "x", "a longer payload with a marker MARKER-123"} {
			env, ref := seal(t, s, kind, hdr, p)
			if bytes.Contains(env, []byte("MARKER")) {
				t.Fatal("plaintext visible in the envelope")
			}
			got, err := o.Open(kind, env)
			if err != nil {
				t.Fatalf("%s %q: %v", kind, p, err)
			}
			if string(got.Plaintext) != p || got.Kind != kind || got.Epoch != 7 || got.Ref() != ref {
				t.Fatalf("got %+v", got)
			}
			if len(got.Headers) != 3 || got.Headers["a"] != "1" || got.Headers["content-type"] != "application/json" {
				t.Fatalf("headers %v", got.Headers)
			}
		}
	}
	// No headers: nil map, and Overhead is exact.
	env, _ := seal(t, s, wire.KindSend, nil, "hello")
	if len(env) != Overhead+5 {
		t.Fatalf("envelope of %d bytes, want %d", len(env), Overhead+5)
	}
	got, err := o.Open(wire.KindSend, env)
	if err != nil || got.Headers != nil {
		t.Fatalf("%v %v", got, err)
	}
}

func TestEveryBitFlipRejected(t *testing.T) {
	k := mustKey(t, addr, 1)
	s := mustSealer(t, k)
	for _, kind := range []wire.Kind{wire.KindSend, wire.KindRequest} {
		env, ref := seal(t, s, kind, map[string]string{"k": "v"}, "payload")
		reply, _, err := s.SealReply(ref, map[string]string{"r": "1"}, []byte("answer"))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			env  []byte
			open func(o *Opener, b []byte) (*Opened, error)
		}{
			{env, func(o *Opener, b []byte) (*Opened, error) { return o.Open(kind, b) }},
			{reply, func(o *Opener, b []byte) (*Opened, error) { return o.OpenReply(ref, b) }},
		} {
			for i := range len(tc.env) * 8 {
				o := mustOpener(t, OpenerOptions{}, k)
				b := bytes.Clone(tc.env)
				b[i/8] ^= 1 << (i % 8)
				if got, err := tc.open(o, b); err == nil {
					t.Fatalf("bit %d flipped: opened %+v", i, got)
				}
			}
			// The original still opens on a fresh opener: flips changed nothing.
			if _, err := tc.open(mustOpener(t, OpenerOptions{}, k), tc.env); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestTruncationsRejected(t *testing.T) {
	k := mustKey(t, addr, 1)
	s := mustSealer(t, k)
	env, _ := seal(t, s, wire.KindPublish, map[string]string{"k": "v"}, "payload")
	o := mustOpener(t, OpenerOptions{}, k)
	for n := range len(env) {
		if _, err := o.Open(wire.KindPublish, env[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: opened", n)
		}
	}
	if _, err := o.Open(wire.KindPublish, append(bytes.Clone(env), 0)); !errors.Is(err, ErrAuth) {
		t.Fatalf("extended: %v", err)
	}
}

func TestReplayAndReorder(t *testing.T) {
	k := mustKey(t, addr, 1)
	s := mustSealer(t, k)
	o := mustOpener(t, OpenerOptions{}, k)
	var envs [][]byte
	for i := range 10 {
		env, _ := seal(t, s, wire.KindSend, nil, fmt.Sprint(i))
		envs = append(envs, env)
	}
	// Deliver out of order: each accepted once.
	order := []int{2, 0, 1, 5, 3, 4, 9, 8, 6, 7}
	for _, i := range order {
		got, err := o.Open(wire.KindSend, envs[i])
		if err != nil {
			t.Fatalf("envelope %d: %v", i, err)
		}
		if string(got.Plaintext) != fmt.Sprint(i) {
			t.Fatal("wrong payload")
		}
	}
	for _, i := range order {
		if _, err := o.Open(wire.KindSend, envs[i]); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay of %d: %v", i, err)
		}
	}
}

func TestTooOld(t *testing.T) {
	k := mustKey(t, addr, 1)
	s := mustSealer(t, k)
	o := mustOpener(t, OpenerOptions{Window: 64}, k)
	first, _ := seal(t, s, wire.KindSend, nil, "first")
	var last []byte
	for range 64 {
		last, _ = seal(t, s, wire.KindSend, nil, "x")
	}
	if _, err := o.Open(wire.KindSend, last); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Open(wire.KindSend, first); !errors.Is(err, ErrTooOld) {
		t.Fatalf("first after the window moved past it: %v", err)
	}
}

func TestGapsReported(t *testing.T) {
	k := mustKey(t, addr, 1)
	s := mustSealer(t, k)
	o := mustOpener(t, OpenerOptions{Window: 64}, k)
	var envs [][]byte
	for range 200 {
		env, _ := seal(t, s, wire.KindSend, nil, "x")
		envs = append(envs, env)
	}
	open := func(seq int) *Opened {
		t.Helper()
		got, err := o.Open(wire.KindSend, envs[seq-1])
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if got.Seq != uint64(seq) {
			t.Fatalf("seq %d opened as %d", seq, got.Seq)
		}
		return got
	}
	if got := open(1); !got.FirstFromSender || got.Skipped.Count() != 0 || got.Expired != 0 {
		t.Fatalf("first: %+v", got)
	}
	if got := open(2); got.FirstFromSender || got.Skipped.Count() != 0 {
		t.Fatalf("second: %+v", got)
	}
	got := open(6) // 3, 4, 5 dropped (or late)
	if got.Skipped != (SeqRange{3, 5}) || got.Skipped.Count() != 3 || got.Expired != 0 {
		t.Fatalf("jump: %+v", got)
	}
	open(4) // late but within the window
	// Jump far: the window (64) moves from top 6 to top 100, i.e. bottom 37.
	// Unseen and now unacceptable: 3, 5, and 7..36 = 32.
	got = open(100)
	if got.Skipped != (SeqRange{7, 99}) || got.Expired != 32 {
		t.Fatalf("far jump: skipped %+v expired %d", got.Skipped, got.Expired)
	}
	if _, err := o.Open(wire.KindSend, envs[4]); !errors.Is(err, ErrTooOld) {
		t.Fatalf("seq 5 after expiry: %v", err)
	}
	// Jump beyond a full window: 37..99 unseen (63) + 101..136 (36)
	// leave; the new window is 137..200.
	got = open(200)
	if got.Skipped != (SeqRange{101, 199}) || got.Expired != 63+36 {
		t.Fatalf("jump beyond the window: %+v expired %d", got.Skipped, got.Expired)
	}

	// A receiver that hears a sender first at seq 50 reports 1..49.
	o2 := mustOpener(t, OpenerOptions{Window: 64}, k)
	got, err := o2.Open(wire.KindSend, envs[49])
	if err != nil || !got.FirstFromSender || got.Skipped != (SeqRange{1, 49}) || got.Expired != 0 {
		t.Fatalf("late joiner: %+v %v", got, err)
	}
}

func TestWindowMatchesModel(t *testing.T) {
	// Compare the bitmap window against a map-based model on a pseudo-random
	// delivery pattern.
	for _, width := range []int{64, 128, 1024} {
		w := newWindow(width)
		seen := map[uint64]bool{}
		var max uint64
		x := uint64(12345)
		var expiredTotal uint64
		for range 20000 {
			x = x*6364136223846793005 + 1442695040888963407
			var seq uint64
			switch x >> 62 {
			case 0:
				seq = max + 1 + (x>>40)%3
			case 1:
				seq = max + 1 + (x>>30)%uint64(2*width)
			default:
				back := (x >> 20) % uint64(width+20)
				if back >= max {
					continue
				}
				seq = max - back
			}
			if seq == 0 {
				continue
			}
			want := error(nil)
			switch {
			case max >= uint64(width) && seq <= max-uint64(width):
				want = ErrTooOld
			case seen[seq]:
				want = ErrReplay
			}
			if got := w.check(seq); got != want {
				t.Fatalf("width %d seq %d max %d: check %v, want %v", width, seq, max, got, want)
			}
			if want != nil {
				continue
			}
			_, _, exp := w.accept(seq)
			expiredTotal += exp
			seen[seq] = true
			if seq > max {
				max = seq
			}
		}
		// Every number ≥1 below the final bottom, never seen, was reported once.
		var want uint64
		if max >= uint64(width) {
			for s := uint64(1); s <= max-uint64(width); s++ {
				if !seen[s] {
					want++
				}
			}
		}
		if expiredTotal != want {
			t.Fatalf("width %d: expired %d, want %d", width, expiredTotal, want)
		}
	}
}

func TestEpochs(t *testing.T) {
	k1 := mustKey(t, addr, 1)
	k2 := mustKey(t, addr, 2)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := mustOpener(t, OpenerOptions{Now: func() time.Time { return now }}, k1)
	s1 := mustSealer(t, k1)
	old, _ := seal(t, s1, wire.KindSend, nil, "old")
	old2, _ := seal(t, s1, wire.KindSend, nil, "old2")
	s2 := mustSealer(t, k2)
	cur, _ := seal(t, s2, wire.KindSend, nil, "new")
	if _, err := o.Open(wire.KindSend, cur); !errors.Is(err, ErrUnknownEpoch) {
		t.Fatalf("epoch 2 before AddKey: %v", err)
	}
	if err := o.AddKey(k2); err != nil {
		t.Fatal(err)
	}
	if err := o.AddKey(k2); err == nil {
		t.Fatal("AddKey twice")
	}
	if err := o.AddKey(mustKey(t, "other", 3)); err == nil {
		t.Fatal("AddKey of another address")
	}
	o.RetireAfter(1, now.Add(time.Minute))
	if _, err := o.Open(wire.KindSend, old); err != nil {
		t.Fatalf("old epoch within grace: %v", err)
	}
	if _, err := o.Open(wire.KindSend, cur); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if _, err := o.Open(wire.KindSend, old2); !errors.Is(err, ErrEpochRetired) {
		t.Fatalf("old epoch after grace: %v", err)
	}
	if got := o.Epochs(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("epochs %v", got)
	}
	if err := o.AddKey(k1); err == nil {
		t.Fatal("re-adding a retired epoch")
	}
	o.Retire(2)
	if _, err := o.Open(wire.KindSend, cur); !errors.Is(err, ErrEpochRetired) {
		t.Fatalf("after Retire: %v", err)
	}
}

func TestWrongAddressKindSenderHeaders(t *testing.T) {
	k := mustKey(t, addr, 1)
	s := mustSealer(t, k)
	o := mustOpener(t, OpenerOptions{}, k)

	// Same key bytes, another address: authentication fails.
	other := k
	other.Address = "water.alerts"
	oOther := mustOpener(t, OpenerOptions{}, other)
	env, _ := seal(t, s, wire.KindSend, map[string]string{"h": "v"}, "p")
	if _, err := oOther.Open(wire.KindSend, env); !errors.Is(err, ErrAuth) {
		t.Fatalf("other address: %v", err)
	}
	// Another key for the same address and epoch.
	if _, err := mustOpener(t, OpenerOptions{}, mustKey(t, addr, 1)).Open(wire.KindSend, env); !errors.Is(err, ErrAuth) {
		t.Fatalf("other key: %v", err)
	}
	// Delivered as another kind.
	if _, err := o.Open(wire.KindPublish, env); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("wrong kind: %v", err)
	}
	// Relabelled kind byte: authentication fails.
	b := bytes.Clone(env)
	b[4] = byte(wire.KindPublish)
	if _, err := o.Open(wire.KindPublish, b); !errors.Is(err, ErrAuth) {
		t.Fatalf("relabelled kind: %v", err)
	}
	// Another sender ID in the header.
	b = bytes.Clone(env)
	b[9] ^= 0xff
	if _, err := o.Open(wire.KindSend, b); !errors.Is(err, ErrAuth) {
		t.Fatalf("other sender: %v", err)
	}
	// Headers changed, re-encoded canonically (a different value of equal length).
	e, err := ParseEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := encodeHeaders(nil, map[string]string{"h": "w"})
	b = bytes.Clone(env)
	copy(b[len(e.header)-len(hb):], hb)
	if _, err := o.Open(wire.KindSend, b); !errors.Is(err, ErrAuth) {
		t.Fatalf("headers changed: %v", err)
	}
	// Headers removed entirely.
	b = append(append(append([]byte{}, env[:fixedLen]...), 0, 0, 0, 0), e.ciphertext...)
	if _, err := o.Open(wire.KindSend, b); !errors.Is(err, ErrAuth) {
		t.Fatalf("headers removed: %v", err)
	}
	// Finally the genuine one opens.
	if _, err := o.Open(wire.KindSend, env); err != nil {
		t.Fatal(err)
	}
}

func TestReplyBoundToRequest(t *testing.T) {
	k := mustKey(t, addr, 1)
	client := mustSealer(t, k)
	service := mustSealer(t, k)
	svc := mustOpener(t, OpenerOptions{}, k)
	cli := mustOpener(t, OpenerOptions{}, k)

	req1, ref1 := seal(t, client, wire.KindRequest, nil, "q1")
	req2, ref2 := seal(t, client, wire.KindRequest, nil, "q2")
	o1, err := svc.Open(wire.KindRequest, req1)
	if err != nil {
		t.Fatal(err)
	}
	o2, err := svc.Open(wire.KindRequest, req2)
	if err != nil {
		t.Fatal(err)
	}
	if o1.Ref() != ref1 || o2.Ref() != ref2 {
		t.Fatal("refs differ")
	}
	rep1, _, err := service.SealReply(o1.Ref(), nil, []byte("a1"))
	if err != nil {
		t.Fatal(err)
	}
	rep2, _, err := service.SealReply(o2.Ref(), nil, []byte("a2"))
	if err != nil {
		t.Fatal(err)
	}
	// Swapped: each reply is refused for the other request.
	if _, err := cli.OpenReply(ref1, rep2); !errors.Is(err, ErrWrongRequest) {
		t.Fatalf("swapped reply: %v", err)
	}
	// Rewriting the request reference in the reply breaks authentication.
	b := bytes.Clone(rep2)
	copy(b[fixedLen:], ref1.Sender[:])
	b[fixedLen+SenderIDSize+7] = byte(ref1.Seq)
	if _, err := cli.OpenReply(ref1, b); !errors.Is(err, ErrAuth) {
		t.Fatalf("rewritten reference: %v", err)
	}
	got, err := cli.OpenReply(ref1, rep1)
	if err != nil || string(got.Plaintext) != "a1" || got.ReplyTo != ref1 {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := cli.OpenReply(ref2, rep2); err != nil {
		t.Fatal(err)
	}
	// A reply delivered as a send, a send opened as a reply.
	if _, err := cli.Open(wire.KindSend, rep1); err == nil {
		t.Fatal("reply opened as a send")
	}
	if _, err := cli.OpenReply(ref1, req1); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("request opened as a reply: %v", err)
	}
	if _, _, err := service.Seal(wire.KindReply, nil, nil); err == nil {
		t.Fatal("Seal(wire.KindReply)")
	}
}

// TestNonceUniqueness checks that two senders sharing an address key, and a
// sender made after a simulated restart, use different subkeys, so equal
// sequence numbers never reuse a (key, nonce) pair.
func TestNonceUniqueness(t *testing.T) {
	k := mustKey(t, addr, 1)
	a := mustSealer(t, k)
	b := mustSealer(t, k)
	restarted := mustSealer(t, k) // what a restarted enclave makes: a new Sealer
	if a.SenderID() == b.SenderID() || a.SenderID() == restarted.SenderID() {
		t.Fatal("sender IDs repeat")
	}
	ea, _ := seal(t, a, wire.KindSend, nil, "same plaintext")
	eb, _ := seal(t, b, wire.KindSend, nil, "same plaintext")
	er, _ := seal(t, restarted, wire.KindSend, nil, "same plaintext")
	// All have sequence number 1, yet the ciphertexts differ: different subkeys.
	pa, _ := ParseEnvelope(ea)
	pb, _ := ParseEnvelope(eb)
	pr, _ := ParseEnvelope(er)
	if pa.Seq != 1 || pb.Seq != 1 || pr.Seq != 1 {
		t.Fatal("sequence numbers do not start at 1")
	}
	if bytes.Equal(pa.ciphertext, pb.ciphertext) || bytes.Equal(pa.ciphertext, pr.ciphertext) {
		t.Fatal("equal ciphertexts: subkey reused")
	}
	// The subkeys themselves differ: sealing under one does not open under another.
	ka, _ := deriveSubkey(&k, a.SenderID())
	kb, _ := deriveSubkey(&k, b.SenderID())
	var n [nonceLen]byte
	ct := ka.Seal(nil, counterNonce(&n, 1), []byte("x"), nil)
	if _, err := kb.Open(nil, counterNonce(&n, 1), ct, nil); err == nil {
		t.Fatal("subkeys equal")
	}
	// Within one sender: strictly increasing, distinct sequence numbers even
	// under concurrency.
	var mu sync.Mutex
	seqs := map[uint64]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				_, ref, err := a.Seal(wire.KindSend, nil, nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seqs[ref.Seq] {
					t.Errorf("sequence number %d used twice", ref.Seq)
				}
				seqs[ref.Seq] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// And the receiver accepts both senders independently (separate windows).
	o := mustOpener(t, OpenerOptions{}, k)
	for _, e := range [][]byte{ea, eb, er} {
		if _, err := o.Open(wire.KindSend, e); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSealerExhausted(t *testing.T) {
	s := mustSealer(t, mustKey(t, addr, 1))
	s.seq.Store(1<<64 - 3)
	if _, ref, err := s.Seal(wire.KindSend, nil, nil); err != nil || ref.Seq != 1<<64-2 {
		t.Fatalf("%v %v", ref, err)
	}
	for range 3 {
		if _, _, err := s.Seal(wire.KindSend, nil, nil); !errors.Is(err, ErrExhausted) {
			t.Fatalf("past the end: %v", err)
		}
	}
}

func TestTooManySenders(t *testing.T) {
	k := mustKey(t, addr, 1)
	o := mustOpener(t, OpenerOptions{MaxSenders: 2}, k)
	for i := range 3 {
		env, _ := seal(t, mustSealer(t, k), wire.KindSend, nil, "x")
		_, err := o.Open(wire.KindSend, env)
		if i < 2 && err != nil {
			t.Fatal(err)
		}
		if i == 2 && !errors.Is(err, ErrTooManySenders) {
			t.Fatalf("third sender: %v", err)
		}
	}
}

func TestConcurrentOpenAcceptsOnce(t *testing.T) {
	k := mustKey(t, addr, 1)
	s := mustSealer(t, k)
	o := mustOpener(t, OpenerOptions{}, k)
	var envs [][]byte
	for range 100 {
		env, _ := seal(t, s, wire.KindSend, nil, "x")
		envs = append(envs, env)
	}
	var mu sync.Mutex
	accepted := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for _, e := range envs {
				if _, err := o.Open(wire.KindSend, e); err == nil {
					mu.Lock()
					accepted++
					mu.Unlock()
				} else if !errors.Is(err, ErrReplay) {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if accepted != len(envs) {
		t.Fatalf("accepted %d of %d", accepted, len(envs))
	}
}

func TestParseEnvelopeStrict(t *testing.T) {
	k := mustKey(t, addr, 1)
	s := mustSealer(t, k)
	env, _ := seal(t, s, wire.KindSend, map[string]string{"a": "1", "b": "2"}, "p")
	e, err := ParseEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	hb := env[fixedLen+4 : len(e.header)]
	cases := map[string][]byte{
		"bad magic":   append([]byte("XSE"), env[3:]...),
		"bad version": append(append([]byte{}, env[:3]...), append([]byte{2}, env[4:]...)...),
		"bad kind":    append(append([]byte{}, env[:4]...), append([]byte{9}, env[5:]...)...),
	}
	// Unsorted headers: swap the two entries (each 2+1+2+1 bytes).
	unsorted := bytes.Clone(env)
	copy(unsorted[fixedLen+4+2:], hb[8:14])
	copy(unsorted[fixedLen+4+8:], hb[2:8])
	cases["unsorted headers"] = unsorted
	zero := bytes.Clone(env)
	for i := 25; i < 33; i++ {
		zero[i] = 0
	}
	cases["seq 0"] = zero
	for name, b := range cases {
		if _, err := ParseEnvelope(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := decodeHeaders([]byte{0, 0}); !errors.Is(err, ErrMalformed) {
		t.Error("zero-count header block accepted")
	}
	if _, err := encodeHeaders(nil, map[string]string{"": "x"}); err == nil {
		t.Error("empty header key accepted")
	}
}

// TestCipherIsAESGCM pins the AEAD: a 16-byte tag and 12-byte nonce.
func TestCipherIsAESGCM(t *testing.T) {
	g, err := deriveSubkey(&AddressKey{Address: addr}, SenderID{})
	if err != nil {
		t.Fatal(err)
	}
	var _ cipher.AEAD = g
	if g.NonceSize() != 12 || g.Overhead() != 16 {
		t.Fatalf("nonce %d overhead %d", g.NonceSize(), g.Overhead())
	}
}
