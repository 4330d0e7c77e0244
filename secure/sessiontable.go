package secure

import (
	"container/list"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of [SessionOptions].
const (
	DefaultMaxSessions        = 4096
	DefaultSessionLifetime    = time.Hour
	DefaultSessionMessages    = 1 << 32
	DefaultHandshakeAge       = 10 * time.Minute
	DefaultMaxClockSkew       = time.Minute
	DefaultHandshakesInWindow = 1024
	DefaultMaxHandshakes      = 1 << 16
)

// ClientKeys returns the Ed25519 public key of the client named name, and
// whether the application knows such a client.
type ClientKeys func(name string) (ed25519.PublicKey, bool)

// SessionOptions bound a [SessionTable]. Zero fields take the defaults.
type SessionOptions struct {
	// MaxSessions is how many sessions the table holds; the least recently
	// used is forgotten to make room (default DefaultMaxSessions).
	MaxSessions int
	// Lifetime is how long a session lives after its handshake's client
	// time (default DefaultSessionLifetime).
	Lifetime time.Duration
	// MaxMessages is how many messages a session carries (default
	// DefaultSessionMessages).
	MaxMessages uint64
	// HandshakeAge is how old a handshake may be when it opens a session
	// (default DefaultHandshakeAge). Older ones fail with ErrSessionUnknown,
	// so the client seals the message again in a new session.
	HandshakeAge time.Duration
	// MaxClockSkew is how far ahead of the service's clock a handshake may
	// be dated (default DefaultMaxClockSkew); further is ErrClockSkew.
	MaxClockSkew time.Duration
	// HandshakesPerClient is how many handshakes of one client the table
	// remembers within HandshakeAge (default DefaultHandshakesInWindow);
	// more fail with ErrTooManyHandshakes until older ones age out.
	HandshakesPerClient int
	// MaxHandshakes bounds the handshakes remembered for all clients
	// together (default the larger of 16 × MaxSessions and
	// DefaultMaxHandshakes, about 4 MiB of memory at most); beyond it new
	// sessions fail with ErrTooManyHandshakes until older handshakes age
	// out.
	MaxHandshakes int
	// Window is the replay window of a session, in sequence numbers
	// (default DefaultWindow).
	Window int
}

func (o *SessionOptions) defaults() {
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.Lifetime <= 0 {
		o.Lifetime = DefaultSessionLifetime
	}
	if o.MaxMessages == 0 {
		o.MaxMessages = DefaultSessionMessages
	}
	if o.HandshakeAge <= 0 {
		o.HandshakeAge = DefaultHandshakeAge
	}
	if o.MaxClockSkew <= 0 {
		o.MaxClockSkew = DefaultMaxClockSkew
	}
	if o.HandshakesPerClient <= 0 {
		o.HandshakesPerClient = DefaultHandshakesInWindow
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.MaxHandshakes <= 0 {
		o.MaxHandshakes = max(16*o.MaxSessions, DefaultMaxHandshakes)
	}
}

// SessionStats are a table's counters.
type SessionStats struct {
	// Sessions is how many sessions the table holds now.
	Sessions int
	// Handshakes counts sessions opened: one HPKE decapsulation each.
	Handshakes uint64
	// Messages counts messages admitted (handshakes included).
	Messages uint64
	// Evicted counts sessions forgotten to make room.
	Evicted uint64
}

// SessionTable is the service's side of client sessions: it opens
// handshakes and data messages, authenticates clients, and keeps each
// session's keys and replay window, within the bounds of its options. It is
// safe for concurrent use.
type SessionTable struct {
	opts SessionOptions

	mu      sync.Mutex
	byID    map[SessionID]*list.Element // of *serverSession
	lru     *list.List                  // most recently used first
	clients map[string]map[SessionID]time.Time
	hsCount int // handshakes remembered, all clients together

	handshakes, messages, evicted atomic.Uint64
}

// NewSessionTable returns an empty table.
func NewSessionTable(opts SessionOptions) *SessionTable {
	opts.defaults()
	return &SessionTable{opts: opts, byID: map[SessionID]*list.Element{}, lru: list.New(),
		clients: map[string]map[SessionID]time.Time{}}
}

// Stats returns the table's counters.
func (t *SessionTable) Stats() SessionStats {
	t.mu.Lock()
	n := len(t.byID)
	t.mu.Unlock()
	return SessionStats{Sessions: n, Handshakes: t.handshakes.Load(), Messages: t.messages.Load(), Evicted: t.evicted.Load()}
}

// Clear forgets every session (the channel key changed).
func (t *SessionTable) Clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.byID)
	t.lru.Init()
}

// serverSession is one session the table holds.
type serverSession struct {
	id       SessionID
	client   string
	expires  time.Time
	c2s, s2c cipher.AEAD

	mu       sync.Mutex
	win      window
	inflight map[uint64]struct{}
	admitted uint64
}

// SessionMessage is a message the table opened: who sent it, its place in
// the session and its plaintext. It is reserved, not yet admitted: call
// [SessionMessage.Commit] once it was handled (a copy that arrives later is
// then a replay) or [SessionMessage.Release] if handling failed (a retry of
// the same bytes is then accepted). Until one of them, a copy is refused
// with ErrInProgress.
type SessionMessage struct {
	// Client is the authenticated client's name.
	Client string
	// Session and Seq place the message.
	Session SessionID
	Seq     uint64
	// Plaintext is the client's payload.
	Plaintext []byte
	// NewSession is set when this message opened the session (a KEM).
	NewSession bool

	s    *serverSession
	t    *SessionTable
	done atomic.Bool
}

// Open opens msg, a handshake or data message of a client session sealed
// to key under info (see [ChannelInfo]); clients names the clients the
// application knows. It never changes state for a message that does not
// authenticate. Errors wrap ErrMalformed, ErrAuth, ErrUnauthenticated
// (unknown client, bad credential), ErrSessionUnknown (the client must seal
// the message again in a new session: the session is unknown, expired or
// under another channel key, or the handshake is too old), ErrClockSkew,
// ErrTooManyHandshakes, ErrReplay, ErrTooOld or ErrInProgress.
func (t *SessionTable) Open(key *ServiceKey, info []byte, clients ClientKeys, msg []byte, now time.Time) (*SessionMessage, error) {
	p, err := ParseSessionMessage(msg)
	if err != nil {
		return nil, err
	}
	if s := t.lookup(p.Session, now); s != nil {
		pt, err := openData(s.c2s, p.Session, p.Seq, p.data)
		if err != nil {
			return nil, err
		}
		return t.reserve(s, p.Seq, pt, false)
	}
	if !p.Handshake {
		return nil, fmt.Errorf("%w: session %s is not held here (restarted, evicted or expired)", ErrSessionUnknown, p.Session)
	}
	if kid := key.PublicKey().ID(); p.Key != kid {
		return nil, fmt.Errorf("%w: the handshake is sealed to channel key %x; this service holds %x", ErrSessionUnknown, p.Key[:], kid[:])
	}
	switch age := now.Sub(p.Sent); {
	case age > t.opts.HandshakeAge:
		return nil, fmt.Errorf("%w: handshake of session %s is %s old (at most %s)", ErrSessionUnknown, p.Session, age.Round(time.Millisecond), t.opts.HandshakeAge)
	case -age > t.opts.MaxClockSkew:
		return nil, fmt.Errorf("%w: handshake dated %s ahead of this service's clock (at most %s)", ErrClockSkew, (-age).Round(time.Millisecond), t.opts.MaxClockSkew)
	}
	r, err := hpke.NewRecipient(p.enc, key.priv, kdf(), aead(), info)
	if err != nil {
		return nil, fmt.Errorf("%w: handshake: %v", ErrAuth, err)
	}
	auth, err := r.Open(p.fixed, p.authCT)
	if err != nil {
		return nil, fmt.Errorf("%w: handshake (wrong key, wrong info or tampered)", ErrAuth)
	}
	name, sig, err := parseAuth(auth)
	if err != nil {
		return nil, err
	}
	pub, ok := clients(name)
	if !ok {
		return nil, fmt.Errorf("%w: client %q is not in the manifest", ErrUnauthenticated, name)
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, authMessage(info, p.fixed, p.enc), sig) {
		return nil, fmt.Errorf("%w: the handshake's signature is not client %q's", ErrUnauthenticated, name)
	}
	c2s, s2c, err := sessionKeys(r.Export)
	if err != nil {
		return nil, err
	}
	pt, err := openData(c2s, p.Session, p.Seq, p.data)
	if err != nil {
		return nil, err
	}
	s, isNew, err := t.insert(&serverSession{id: p.Session, client: name, expires: p.Sent.Add(t.opts.Lifetime),
		c2s: c2s, s2c: s2c, win: newWindow(t.opts.Window), inflight: map[uint64]struct{}{}}, p.Sent, now)
	if err != nil {
		return nil, err
	}
	return t.reserve(s, p.Seq, pt, isNew)
}

// parseAuth splits a handshake's credential block: u8 name length, name,
// Ed25519 signature.
func parseAuth(b []byte) (string, []byte, error) {
	if len(b) < authBlockBase+1 {
		return "", nil, fmt.Errorf("%w: credential block of %d bytes", ErrUnauthenticated, len(b))
	}
	n := int(b[0])
	if n == 0 || n > MaxClientName || len(b) != 1+n+ed25519.SignatureSize {
		return "", nil, fmt.Errorf("%w: credential block: name of %d bytes in %d", ErrUnauthenticated, n, len(b))
	}
	return string(b[1 : 1+n]), b[1+n:], nil
}

// lookup returns the live session id (nil if none), most recently used.
func (t *SessionTable) lookup(id SessionID, now time.Time) *serverSession {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[id]
	if e == nil {
		return nil
	}
	s := e.Value.(*serverSession)
	if now.After(s.expires) {
		t.lru.Remove(e)
		delete(t.byID, id)
		return nil
	}
	t.lru.MoveToFront(e)
	return s
}

// insert adds a session whose handshake authenticated, unless another
// message of it got there first (then that one is returned). A handshake
// remembered from before, whose session is gone, is refused: it can only be
// a copy, and the client seals its message again.
func (t *SessionTable) insert(s *serverSession, sent, now time.Time) (*serverSession, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.byID[s.id]; e != nil {
		t.lru.MoveToFront(e)
		return e.Value.(*serverSession), false, nil
	}
	seen := t.clients[s.client]
	if seen == nil {
		seen = map[SessionID]time.Time{}
		t.clients[s.client] = seen
	}
	if _, ok := seen[s.id]; ok {
		return nil, false, fmt.Errorf("%w: session %s was opened before and is no longer held", ErrSessionUnknown, s.id)
	}
	if len(seen) >= t.opts.HandshakesPerClient {
		t.forgetExpired(seen, now)
		if len(seen) >= t.opts.HandshakesPerClient {
			return nil, false, fmt.Errorf("%w: the client opened %d sessions within %s", ErrTooManyHandshakes, len(seen), t.opts.HandshakeAge)
		}
	}
	if t.hsCount >= t.opts.MaxHandshakes {
		for _, m := range t.clients {
			t.forgetExpired(m, now)
		}
		if t.hsCount >= t.opts.MaxHandshakes {
			return nil, false, fmt.Errorf("%w: %d sessions opened within %s", ErrTooManyHandshakes, t.hsCount, t.opts.HandshakeAge)
		}
	}
	// Remembered until the handshake could no longer open a session.
	seen[s.id] = sent.Add(t.opts.HandshakeAge)
	t.hsCount++
	t.byID[s.id] = t.lru.PushFront(s)
	t.handshakes.Add(1)
	for t.lru.Len() > t.opts.MaxSessions {
		e := t.lru.Back()
		t.lru.Remove(e)
		delete(t.byID, e.Value.(*serverSession).id)
		t.evicted.Add(1)
	}
	return s, true, nil
}

// forgetExpired drops the handshakes of seen that could no longer open a
// session. Called with t.mu held.
func (t *SessionTable) forgetExpired(seen map[SessionID]time.Time, now time.Time) {
	for id, until := range seen {
		if now.After(until) {
			delete(seen, id)
			t.hsCount--
		}
	}
}

// reserve checks seq against the session's window and marks it in flight.
func (t *SessionTable) reserve(s *serverSession, seq uint64, pt []byte, isNew bool) (*SessionMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.admitted >= t.opts.MaxMessages {
		return nil, fmt.Errorf("%w: session %s carried its %d messages", ErrSessionUnknown, s.id, t.opts.MaxMessages)
	}
	if err := s.win.check(seq); err != nil {
		return nil, fmt.Errorf("%w: message %d of session %s", err, seq, s.id)
	}
	if _, ok := s.inflight[seq]; ok || len(s.inflight) >= int(s.win.width()) {
		return nil, fmt.Errorf("%w: message %d of session %s", ErrInProgress, seq, s.id)
	}
	s.inflight[seq] = struct{}{}
	return &SessionMessage{Client: s.client, Session: s.id, Seq: seq, Plaintext: pt, NewSession: isNew, s: s, t: t}, nil
}

// Commit admits the message: it was handled, and a copy is now a replay.
// Commit and Release take effect once, whichever comes first.
func (m *SessionMessage) Commit() {
	if !m.done.CompareAndSwap(false, true) {
		return
	}
	s := m.s
	s.mu.Lock()
	delete(s.inflight, m.Seq)
	if s.win.check(m.Seq) == nil {
		s.win.accept(m.Seq)
		s.admitted++
	}
	s.mu.Unlock()
	m.t.messages.Add(1)
}

// Release gives the message back: it was not handled, and the same bytes
// may be delivered again.
func (m *SessionMessage) Release() {
	if !m.done.CompareAndSwap(false, true) {
		return
	}
	m.s.mu.Lock()
	delete(m.s.inflight, m.Seq)
	m.s.mu.Unlock()
}

// SealReply seals the reply to this message; only its client can open it
// (with [ClientSession.OpenReply] and the message's sequence number). The
// nonce is random: a host that replays a session's handshake to a restarted
// service could have the same message answered twice, and a counter would
// then repeat.
func (m *SessionMessage) SealReply(plaintext []byte) ([]byte, error) {
	out := make([]byte, 0, replyHdrLenV2+len(plaintext)+tagLen)
	out = msgHeader(out, 'R', m.Session, m.Seq)
	out = out[:replyHdrLenV2]
	if _, err := rand.Read(out[msgHdrLen:]); err != nil {
		return nil, fmt.Errorf("secure: reply nonce: %w", err)
	}
	return m.s.s2c.Seal(out, out[msgHdrLen:], plaintext, out), nil
}
