package secure

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

// sessionFixture is a service key, its client table and two clients.
type sessionFixture struct {
	key     *ServiceKey
	info    []byte
	clients map[string]ed25519.PublicKey
	creds   map[string]Credential
	now     time.Time
}

func newSessionFixture(t *testing.T, suite Suite) *sessionFixture {
	t.Helper()
	f := &sessionFixture{key: mustServiceKey(t, suite), info: ChannelInfo("analytics", testHash),
		clients: map[string]ed25519.PublicKey{}, creds: map[string]Credential{},
		now: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	for _, n := range []string{"s-001", "s-002"} {
		pub, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		f.clients[n], f.creds[n] = pub, Credential{Name: n, Key: priv}
	}
	return f
}

func (f *sessionFixture) lookup(name string) (ed25519.PublicKey, bool) {
	k, ok := f.clients[name]
	return k, ok
}

func (f *sessionFixture) session(t *testing.T, name string, repeat bool) *ClientSession {
	t.Helper()
	s, err := NewClientSession(f.key.PublicKey(), f.info, f.creds[name], ClientSessionOptions{RepeatHandshake: repeat, Now: f.now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sealIn(t *testing.T, s *ClientSession, pt string) (uint64, []byte) {
	t.Helper()
	seq, msg, err := s.Seal([]byte(pt))
	if err != nil {
		t.Fatal(err)
	}
	return seq, msg
}

func TestSessionRoundTrip(t *testing.T) {
	for _, suite := range []Suite{SuiteHybrid, SuiteX25519} {
		t.Run(suite.String(), func(t *testing.T) {
			f := newSessionFixture(t, suite)
			tab := NewSessionTable(SessionOptions{})
			cs := f.session(t, "s-001", false)
			for i, want := range []string{"first reading", "second", "third"} {
				seq, msg := sealIn(t, cs, want)
				if (i == 0) != bytes.HasPrefix(msg, []byte("CSH")) {
					t.Fatalf("message %d: handshake form %q", i, msg[:3])
				}
				if bytes.Contains(msg, []byte(want)) {
					t.Fatal("plaintext visible in the message")
				}
				m, err := tab.Open(f.key, f.info, f.lookup, msg, f.now)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if m.Client != "s-001" || string(m.Plaintext) != want || m.Seq != seq || m.NewSession != (i == 0) {
					t.Fatalf("message %d opened as %+v", i, m)
				}
				reply, err := m.SealReply([]byte("ok " + want))
				if err != nil {
					t.Fatal(err)
				}
				m.Commit()
				got, err := cs.OpenReply(seq, reply)
				if err != nil || string(got) != "ok "+want {
					t.Fatalf("reply %d: %q %v", i, got, err)
				}
				if _, err := cs.OpenReply(seq+1, reply); !errors.Is(err, ErrWrongRequest) {
					t.Fatalf("reply opened for another message: %v", err)
				}
				// The client can open its own message (to seal it again).
				if n, pt, err := cs.Open(msg); err != nil || n != seq || string(pt) != want {
					t.Fatalf("client opens its own message: %d %q %v", n, pt, err)
				}
			}
			if st := tab.Stats(); st.Handshakes != 1 || st.Messages != 3 || st.Sessions != 1 {
				t.Fatalf("stats %+v: want one KEM for three messages", st)
			}
		})
	}
}

func TestSessionRejections(t *testing.T) {
	f := newSessionFixture(t, SuiteX25519)
	tab := NewSessionTable(SessionOptions{Window: 64})
	cs := f.session(t, "s-001", false)
	_, hs := sealIn(t, cs, "one")
	m, err := tab.Open(f.key, f.info, f.lookup, hs, f.now)
	if err != nil {
		t.Fatal(err)
	}
	// A copy while the first is handled is in progress, not a replay.
	if _, err := tab.Open(f.key, f.info, f.lookup, hs, f.now); !errors.Is(err, ErrInProgress) {
		t.Fatalf("copy in flight: %v", err)
	}
	// A failed handler releases it: the retry is accepted.
	m.Release()
	m, err = tab.Open(f.key, f.info, f.lookup, hs, f.now)
	if err != nil {
		t.Fatalf("retry after release: %v", err)
	}
	m.Commit()
	if _, err := tab.Open(f.key, f.info, f.lookup, hs, f.now); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed handshake: %v", err)
	}

	// Reordering within the window is fine; beyond it is too old.
	var msgs [][]byte
	for range 70 {
		_, b := sealIn(t, cs, "x")
		msgs = append(msgs, b)
	}
	for _, i := range []int{69, 10, 68} {
		m, err := tab.Open(f.key, f.info, f.lookup, msgs[i], f.now)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		m.Commit()
	}
	if _, err := tab.Open(f.key, f.info, f.lookup, msgs[1], f.now); !errors.Is(err, ErrTooOld) {
		t.Fatalf("below the window: %v", err)
	}
	if _, err := tab.Open(f.key, f.info, f.lookup, msgs[69], f.now); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}

	// Every flipped bit of a data message fails authentication or parsing.
	for i := range len(msgs[50]) * 8 {
		b := bytes.Clone(msgs[50])
		b[i/8] ^= 1 << (i % 8)
		_, err := tab.Open(f.key, f.info, f.lookup, b, f.now)
		if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSessionUnknown) {
			t.Fatalf("bit %d flipped: %v", i, err)
		}
	}
	// A message moved into another session does not open there.
	other := f.session(t, "s-002", false)
	_, ohs := sealIn(t, other, "theirs")
	om, err := tab.Open(f.key, f.info, f.lookup, ohs, f.now)
	if err != nil {
		t.Fatal(err)
	}
	om.Commit()
	moved := bytes.Clone(msgs[51])
	id := other.ID()
	copy(moved[4:20], id[:])
	if _, err := tab.Open(f.key, f.info, f.lookup, moved, f.now); !errors.Is(err, ErrAuth) {
		t.Fatalf("cross-session message: %v", err)
	}
	// A session the table never held.
	lone := f.session(t, "s-001", false)
	sealIn(t, lone, "handshake never delivered")
	_, b := sealIn(t, lone, "data")
	if _, err := tab.Open(f.key, f.info, f.lookup, b, f.now); !errors.Is(err, ErrSessionUnknown) {
		t.Fatalf("unknown session: %v", err)
	}
}

func TestSessionAuthentication(t *testing.T) {
	f := newSessionFixture(t, SuiteX25519)
	tab := NewSessionTable(SessionOptions{})
	// A client the application does not know.
	_, stranger, _ := ed25519.GenerateKey(nil)
	s, err := NewClientSession(f.key.PublicKey(), f.info, Credential{Name: "s-999", Key: stranger}, ClientSessionOptions{Now: f.now})
	if err != nil {
		t.Fatal(err)
	}
	_, msg := sealIn(t, s, "forged")
	if _, err := tab.Open(f.key, f.info, f.lookup, msg, f.now); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("unknown client: %v", err)
	}
	// Another client's name with one's own key.
	s, err = NewClientSession(f.key.PublicKey(), f.info, Credential{Name: "s-002", Key: f.creds["s-001"].Key}, ClientSessionOptions{Now: f.now})
	if err != nil {
		t.Fatal(err)
	}
	_, msg = sealIn(t, s, "impersonation")
	if _, err := tab.Open(f.key, f.info, f.lookup, msg, f.now); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("impersonation: %v", err)
	}
	// Another service's or manifest's info.
	s, err = NewClientSession(f.key.PublicKey(), ChannelInfo("billing", testHash), f.creds["s-001"], ClientSessionOptions{Now: f.now})
	if err != nil {
		t.Fatal(err)
	}
	_, msg = sealIn(t, s, "elsewhere")
	if _, err := tab.Open(f.key, f.info, f.lookup, msg, f.now); !errors.Is(err, ErrAuth) {
		t.Fatalf("other info: %v", err)
	}
	// A handshake to a key the service no longer holds: seal it again.
	newKey := mustServiceKey(t, SuiteX25519)
	_, msg = sealIn(t, f.session(t, "s-001", false), "old key")
	if _, err := tab.Open(newKey, f.info, f.lookup, msg, f.now); !errors.Is(err, ErrSessionUnknown) {
		t.Fatalf("stale key: %v", err)
	}
	// Too old, or dated ahead.
	_, msg = sealIn(t, f.session(t, "s-001", false), "late")
	if _, err := tab.Open(f.key, f.info, f.lookup, msg, f.now.Add(DefaultHandshakeAge+time.Second)); !errors.Is(err, ErrSessionUnknown) {
		t.Fatalf("old handshake: %v", err)
	}
	if _, err := tab.Open(f.key, f.info, f.lookup, msg, f.now.Add(-DefaultMaxClockSkew-time.Second)); !errors.Is(err, ErrClockSkew) {
		t.Fatalf("handshake from the future: %v", err)
	}
	if st := tab.Stats(); st.Sessions != 0 || st.Handshakes != 0 {
		t.Fatalf("refused handshakes left state: %+v", st)
	}
}

func TestSessionTableBounds(t *testing.T) {
	f := newSessionFixture(t, SuiteX25519)
	tab := NewSessionTable(SessionOptions{MaxSessions: 2, HandshakesPerClient: 3})
	var hs [][]byte
	var sessions []*ClientSession
	for range 3 {
		s := f.session(t, "s-001", false)
		_, b := sealIn(t, s, "hello")
		m, err := tab.Open(f.key, f.info, f.lookup, b, f.now)
		if err != nil {
			t.Fatal(err)
		}
		m.Commit()
		hs, sessions = append(hs, b), append(sessions, s)
	}
	if st := tab.Stats(); st.Sessions != 2 || st.Evicted != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The evicted session's messages, and its handshake replayed, are
	// unknown: the client seals them again; nothing is handled twice.
	_, b := sealIn(t, sessions[0], "after eviction")
	if _, err := tab.Open(f.key, f.info, f.lookup, b, f.now); !errors.Is(err, ErrSessionUnknown) {
		t.Fatalf("evicted session: %v", err)
	}
	if _, err := tab.Open(f.key, f.info, f.lookup, hs[0], f.now); !errors.Is(err, ErrSessionUnknown) {
		t.Fatalf("evicted session's handshake replayed: %v", err)
	}
	// The fourth handshake of s-001 within the window is refused; s-002 is
	// not affected; later, the old ones age out.
	_, b = sealIn(t, f.session(t, "s-001", false), "fourth")
	if _, err := tab.Open(f.key, f.info, f.lookup, b, f.now); !errors.Is(err, ErrTooManyHandshakes) {
		t.Fatalf("handshake flood: %v", err)
	}
	_, b2 := sealIn(t, f.session(t, "s-002", false), "other client")
	if _, err := tab.Open(f.key, f.info, f.lookup, b2, f.now); err != nil {
		t.Fatalf("another client during a flood: %v", err)
	}
	// The bound over all clients: s-002 cannot open a second session
	// beyond MaxHandshakes either.
	small := NewSessionTable(SessionOptions{MaxHandshakes: 1})
	_, h1 := sealIn(t, f.session(t, "s-001", false), "one")
	if _, err := small.Open(f.key, f.info, f.lookup, h1, f.now); err != nil {
		t.Fatal(err)
	}
	_, h2 := sealIn(t, f.session(t, "s-002", false), "two")
	if _, err := small.Open(f.key, f.info, f.lookup, h2, f.now); !errors.Is(err, ErrTooManyHandshakes) {
		t.Fatalf("past the bound over all clients: %v", err)
	}
	later := f.now.Add(DefaultHandshakeAge + time.Second)
	f.now = later
	_, b = sealIn(t, f.session(t, "s-001", false), "later")
	if _, err := tab.Open(f.key, f.info, f.lookup, b, later); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

// FuzzSessionMessage feeds arbitrary bytes to ParseSessionMessage and to a
// table, seeded with real handshakes and data messages: nothing panics, and
// nothing that was not sealed by a known client opens.
func FuzzSessionMessage(f *testing.F) {
	fx := newSessionFixture(&testing.T{}, SuiteX25519)
	cs, err := NewClientSession(fx.key.PublicKey(), fx.info, fx.creds["s-001"], ClientSessionOptions{Now: fx.now})
	if err != nil {
		f.Fatal(err)
	}
	genuine := map[string]bool{}
	for _, p := range []string{"a", "reading 2", ""} {
		_, b, err := cs.Seal([]byte(p))
		if err != nil {
			f.Fatal(err)
		}
		genuine[string(b)] = true
		f.Add(b)
	}
	f.Add([]byte("CSM\x02"))
	f.Add([]byte("CSH\x02\x00\x20"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, perr := ParseSessionMessage(b)
		tab := NewSessionTable(SessionOptions{})
		m, err := tab.Open(fx.key, fx.info, fx.lookup, b, fx.now)
		if perr != nil && err == nil {
			t.Fatalf("opened what does not parse: %v", perr)
		}
		if err == nil {
			if !h.Handshake || m.Client != "s-001" {
				t.Fatalf("opened %+v", m)
			}
			return
		}
		if genuine[string(b)] && bytes.HasPrefix(b, []byte("CSH")) {
			t.Fatalf("a genuine handshake did not open: %v", err)
		}
	})
}

func TestClientSessionState(t *testing.T) {
	f := newSessionFixture(t, SuiteX25519)
	cs := f.session(t, "s-001", false)
	_, first := sealIn(t, cs, "queued 1")
	_, second := sealIn(t, cs, "queued 2")
	b, err := cs.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalClientSession(b)
	if err != nil {
		t.Fatal(err)
	}
	for want, msg := range map[string][]byte{"queued 1": first, "queued 2": second} {
		if _, pt, err := back.Open(msg); err != nil || string(pt) != want {
			t.Fatalf("restored session opens %q: %q %v", want, pt, err)
		}
	}
	// A restored session never seals: its counter may be behind.
	if _, _, err := back.Seal([]byte("x")); !errors.Is(err, ErrExhausted) {
		t.Fatalf("restored session sealed: %v", err)
	}
	for _, bad := range [][]byte{nil, b[:40], append(bytes.Clone(b), 0), append([]byte{9}, b[1:]...)} {
		if _, err := UnmarshalClientSession(bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("bad state of %d bytes: %v", len(bad), err)
		}
	}
}

// FuzzClientSessionState feeds arbitrary bytes to UnmarshalClientSession,
// seeded with a real saved session: nothing panics, and what parses saves
// back to the same bytes.
func FuzzClientSessionState(f *testing.F) {
	fx := newSessionFixture(&testing.T{}, SuiteX25519)
	cs, err := NewClientSession(fx.key.PublicKey(), fx.info, fx.creds["s-001"], ClientSessionOptions{Now: fx.now})
	if err != nil {
		f.Fatal(err)
	}
	b, _ := cs.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := UnmarshalClientSession(b)
		if err != nil {
			return
		}
		out, _ := s.MarshalBinary()
		if s.created.UnixMilli() >= 0 && !bytes.Equal(out, b) && b[25]&0xc0 == 0 {
			t.Fatalf("round trip changed the state")
		}
	})
}
