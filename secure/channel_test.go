package secure

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func mustServiceKey(t testing.TB, s Suite) *ServiceKey {
	t.Helper()
	k, err := GenerateServiceKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var testHash = [32]byte{1, 2, 3}

func TestDefaultSuiteIsHybrid(t *testing.T) {
	k, err := NewServiceKey()
	if err != nil {
		t.Fatal(err)
	}
	if k.Suite() != SuiteHybrid || k.PublicKey().Suite() != SuiteHybrid {
		t.Fatalf("default suite %s", k.Suite())
	}
	pub, err := ParsePublicKey(k.PublicKeyBytes())
	if err != nil {
		t.Fatal(err)
	}
	_, req, err := SealRequest(pub, ChannelInfo("analytics", testHash), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseRequest(req)
	if err != nil || h.Suite != SuiteHybrid {
		t.Fatalf("%+v %v", h, err)
	}
	// The KEM ID on the wire is X-Wing's.
	if req[4] != 0x64 || req[5] != 0x7a {
		t.Fatalf("KEM ID %x", req[4:6])
	}
}

func TestChannelRoundTrip(t *testing.T) {
	for _, s := range []Suite{SuiteHybrid, SuiteX25519} {
		t.Run(s.String(), func(t *testing.T) {
			k := mustServiceKey(t, s)
			pub, err := ParsePublicKey(k.PublicKeyBytes())
			if err != nil {
				t.Fatal(err)
			}
			if !pub.Equal(k.PublicKey()) {
				t.Fatal("parsed key differs")
			}
			info := ChannelInfo("analytics", testHash)
			ch, req, err := SealRequest(pub, info, []byte("reading MARKER-9"))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(req, []byte("MARKER")) {
				t.Fatal("plaintext visible")
			}
			r, err := k.OpenRequest(info, req)
			if err != nil {
				t.Fatal(err)
			}
			if string(r.Plaintext) != "reading MARKER-9" {
				t.Fatalf("got %q", r.Plaintext)
			}
			rep1, _ := r.SealReply([]byte("ok 1"))
			rep2, _ := r.SealReply([]byte("ok 2"))
			if bytes.Contains(rep1, []byte("ok 1")) {
				t.Fatal("reply plaintext visible")
			}
			got, err := ch.OpenReply(rep1)
			if err != nil || string(got) != "ok 1" {
				t.Fatalf("%q %v", got, err)
			}
			if _, err := ch.OpenReply(rep1); !errors.Is(err, ErrReplay) {
				t.Fatalf("replayed reply: %v", err)
			}
			if got, err := ch.OpenReply(rep2); err != nil || string(got) != "ok 2" {
				t.Fatalf("%q %v", got, err)
			}
			// The private key survives serialization.
			kb, err := k.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			k2, err := ParseServiceKey(kb)
			if err != nil {
				t.Fatal(err)
			}
			if !k2.PublicKey().Equal(k.PublicKey()) {
				t.Fatal("restored key differs")
			}
			_, req2, _ := SealRequest(pub, info, []byte("again"))
			if r2, err := k2.OpenRequest(info, req2); err != nil || string(r2.Plaintext) != "again" {
				t.Fatalf("restored key: %v", err)
			}
		})
	}
}

func TestChannelRejections(t *testing.T) {
	k := mustServiceKey(t, SuiteHybrid)
	other := mustServiceKey(t, SuiteHybrid)
	x := mustServiceKey(t, SuiteX25519)
	info := ChannelInfo("analytics", testHash)
	ch, req, err := SealRequest(k.PublicKey(), info, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.OpenRequest(info, req); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := x.OpenRequest(info, req); !errors.Is(err, ErrAuth) {
		t.Fatalf("key of another suite: %v", err)
	}
	for _, bad := range [][]byte{
		ChannelInfo("ingest", testHash),
		ChannelInfo("analytics", [32]byte{9}),
		nil,
	} {
		if _, err := k.OpenRequest(bad, req); !errors.Is(err, ErrAuth) {
			t.Fatalf("wrong info: %v", err)
		}
	}
	// Every bit of the request matters (sample every 7th bit of the long
	// hybrid encapsulation to keep the test quick, every bit elsewhere).
	for i := 0; i < len(req)*8; i++ {
		if i/8 >= requestHdrLen+64 && i/8 < requestHdrLen+1120 && i%7 != 0 {
			continue
		}
		b := bytes.Clone(req)
		b[i/8] ^= 1 << (i % 8)
		if _, err := k.OpenRequest(info, b); err == nil {
			t.Fatalf("bit %d flipped: opened", i)
		}
	}
	r, err := k.OpenRequest(info, req)
	if err != nil {
		t.Fatal(err)
	}
	rep, _ := r.SealReply([]byte("answer"))
	for i := range len(rep) * 8 {
		b := bytes.Clone(rep)
		b[i/8] ^= 1 << (i % 8)
		if _, err := ch.OpenReply(b); err == nil {
			t.Fatalf("reply bit %d flipped: opened", i)
		}
	}
	// A reply to another client's request does not open.
	ch2, req2, _ := SealRequest(k.PublicKey(), info, []byte("other"))
	r2, _ := k.OpenRequest(info, req2)
	rep2, _ := r2.SealReply([]byte("for client 2"))
	if _, err := ch.OpenReply(rep2); !errors.Is(err, ErrAuth) {
		t.Fatalf("another request's reply: %v", err)
	}
	if _, err := ch2.OpenReply(rep2); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.OpenReply(rep); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{nil, {1}, []byte("CSQ"), req[:40]} {
		if _, err := k.OpenRequest(info, b); !errors.Is(err, ErrMalformed) {
			t.Fatalf("short request: %v", err)
		}
	}
	if _, err := ParsePublicKey([]byte{0x64, 0x7a, 1, 2}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad public key: %v", err)
	}
	if _, err := ParsePublicKey([]byte{0, 0x10}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("P-256 public key: %v", err)
	}
}

func TestReplayCache(t *testing.T) {
	k := mustServiceKey(t, SuiteX25519)
	info := ChannelInfo("analytics", testHash)
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	c := NewReplayCache(time.Minute, 3)
	open := func(at time.Time) *Request {
		t.Helper()
		_, req, err := SealRequestAt(k.PublicKey(), info, []byte("r"), at)
		if err != nil {
			t.Fatal(err)
		}
		r, err := k.OpenRequest(info, req)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Sent.Equal(at.Truncate(time.Millisecond)) {
			t.Fatalf("sent %v, want %v", r.Sent, at)
		}
		return r
	}
	r1 := open(now.Add(-10 * time.Second))
	if err := c.Admit(&r1.RequestHeader, now); err != nil {
		t.Fatal(err)
	}
	if err := c.Admit(&r1.RequestHeader, now); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
	if err := c.Admit(&open(now.Add(-2*time.Minute)).RequestHeader, now); !errors.Is(err, ErrTooOld) {
		t.Fatalf("stale: %v", err)
	}
	if err := c.Admit(&open(now.Add(2*time.Minute)).RequestHeader, now); !errors.Is(err, ErrClockSkew) {
		t.Fatalf("from the future: %v", err)
	}
	for i := range 2 {
		if err := c.Admit(&open(now.Add(time.Duration(i)*time.Second)).RequestHeader, now); err != nil {
			t.Fatal(err)
		}
	}
	if c.Len() != 3 {
		t.Fatalf("len %d", c.Len())
	}
	// Full: a new request is refused, nothing is forgotten early, and the
	// replay of r1 is still caught.
	if err := c.Admit(&open(now.Add(30*time.Second)).RequestHeader, now); !errors.Is(err, ErrTooManyHandshakes) {
		t.Fatalf("request into a full cache: %v", err)
	}
	if err := c.Admit(&r1.RequestHeader, now); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay while full: %v", err)
	}
	// After the window passes, entries go away by themselves.
	later := now.Add(2 * time.Minute)
	if err := c.Admit(&open(later).RequestHeader, later); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 1 {
		t.Fatalf("len after expiry %d", c.Len())
	}
}

func TestSealTo(t *testing.T) {
	for _, s := range []Suite{SuiteHybrid, SuiteX25519} {
		k := mustServiceKey(t, s)
		info := []byte("grant for join nonce 42")
		msg, err := SealTo(k.PublicKey(), info, []byte("address keys"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := k.OpenSealed(info, msg)
		if err != nil || string(got) != "address keys" {
			t.Fatalf("%q %v", got, err)
		}
		if _, err := k.OpenSealed([]byte("other"), msg); !errors.Is(err, ErrAuth) {
			t.Fatalf("wrong info: %v", err)
		}
		if _, err := mustServiceKey(t, s).OpenSealed(info, msg); !errors.Is(err, ErrAuth) {
			t.Fatalf("wrong key: %v", err)
		}
		for i := 0; i < len(msg)*8; i += 5 {
			b := bytes.Clone(msg)
			b[i/8] ^= 1 << (i % 8)
			if _, err := k.OpenSealed(info, b); err == nil {
				t.Fatalf("bit %d flipped: opened", i)
			}
		}
		// A request is not a sealed message and vice versa.
		_, req, _ := SealRequest(k.PublicKey(), info, []byte("x"))
		if _, err := k.OpenSealed(info, req); !errors.Is(err, ErrMalformed) {
			t.Fatalf("request as sealed: %v", err)
		}
		if _, err := k.OpenRequest(info, msg); !errors.Is(err, ErrMalformed) {
			t.Fatalf("sealed as request: %v", err)
		}
	}
}

// Bytes must not damage the key: crypto/hpke returns the hybrid key's own
// seed, so clearing it would make the next call return another key.
func TestServiceKeyBytesTwice(t *testing.T) {
	k, err := NewServiceKey()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := k.Bytes()
	b, _ := k.Bytes()
	if !bytes.Equal(a, b) {
		t.Fatal("the second Bytes differs from the first")
	}
}
