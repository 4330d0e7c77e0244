package secure

import (
	"bytes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// SessionVersion is the version byte of client-session messages.
const SessionVersion = 2

// SessionID names a client session: the first 16 bytes of SHA-256 of the
// handshake's HPKE encapsulated key.
type SessionID [16]byte

// String returns the ID in hex.
func (id SessionID) String() string { return fmt.Sprintf("%x", id[:]) }

// KeyID names a channel key in a handshake: the first 8 bytes of SHA-256 of
// the public key's wire form.
type KeyID [8]byte

// ID returns the key's KeyID.
func (p *PublicKey) ID() KeyID { return p.id }

// Credential is a client's identity on client sessions: a name the
// application's manifest lists with the Ed25519 public key of Key.
type Credential struct {
	Name string
	Key  ed25519.PrivateKey
}

// MaxClientName is the longest client name a handshake carries.
const MaxClientName = 64

// check reports what is wrong with c.
func (c Credential) check() error {
	if c.Name == "" || len(c.Name) > MaxClientName {
		return fmt.Errorf("secure: client name of %d bytes (need 1 to %d)", len(c.Name), MaxClientName)
	}
	if len(c.Key) != ed25519.PrivateKeySize {
		return fmt.Errorf("secure: client %q: Ed25519 private key of %d bytes, want %d", c.Name, len(c.Key), ed25519.PrivateKeySize)
	}
	return nil
}

// Wire constants of sessions.
const (
	hsFixedLen    = 4 + 2 + 8 + 8 // magic+version, KEM, client time, key ID
	msgHdrLen     = 4 + 16 + 8    // magic+version, session ID, sequence number
	replyHdrLenV2 = msgHdrLen + nonceLen
	sessionAuth   = "cloister/secure/v2/session-auth"
	exportC2S     = "cloister/secure/v2 client to service"
	exportS2C     = "cloister/secure/v2 service to client"
	maxAuthCTLen  = 1 + MaxClientName + ed25519.SignatureSize + tagLen
	authBlockBase = 1 + ed25519.SignatureSize
)

// msgHeader writes the header of a data message (or reply) into dst.
func msgHeader(dst []byte, magic byte, id SessionID, seq uint64) []byte {
	dst = append(dst, 'C', 'S', magic, SessionVersion)
	dst = append(dst, id[:]...)
	return binary.BigEndian.AppendUint64(dst, seq)
}

// authMessage is what a client signs: the label, the channel info, the
// handshake's fixed part and its encapsulated key.
func authMessage(info, fixed, enc []byte) []byte {
	b := make([]byte, 0, len(sessionAuth)+2+len(info)+len(fixed)+len(enc))
	b = append(b, sessionAuth...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(info)))
	b = append(b, info...)
	b = append(b, fixed...)
	return append(b, enc...)
}

// exportKeys exports both directions' keys from an HPKE context into dst.
func exportKeys(dst *[2 * KeySize]byte, export func(string, int) ([]byte, error)) error {
	for i, label := range []string{exportC2S, exportS2C} {
		k, err := export(label, KeySize)
		if err != nil {
			return fmt.Errorf("secure: HPKE export: %w", err)
		}
		copy(dst[i*KeySize:], k)
		clear(k)
	}
	return nil
}

// sessionAEADs makes both directions' AEADs from keys.
func sessionAEADs(keys *[2 * KeySize]byte) (c2s, s2c cipher.AEAD, err error) {
	if c2s, err = newGCM(keys[:KeySize]); err != nil {
		return nil, nil, err
	}
	if s2c, err = newGCM(keys[KeySize:]); err != nil {
		return nil, nil, err
	}
	return c2s, s2c, nil
}

// sessionKeys derives both directions' AEADs from an HPKE context.
func sessionKeys(export func(string, int) ([]byte, error)) (c2s, s2c cipher.AEAD, err error) {
	var keys [2 * KeySize]byte
	defer clear(keys[:])
	if err := exportKeys(&keys, export); err != nil {
		return nil, nil, err
	}
	return sessionAEADs(&keys)
}

// ---- the client's side ----

// ClientSession is the client's side of one session with a service: it
// seals messages (the first carries the handshake) and opens replies. It is
// safe for concurrent use.
type ClientSession struct {
	id       SessionID
	keyID    KeyID
	created  time.Time
	keys     [2 * KeySize]byte // client to service, service to client
	c2s, s2c cipher.AEAD
	prefix   []byte // the handshake: fixed part, enc, u16 n, auth ciphertext
	repeat   bool

	mu        sync.Mutex
	next      uint64 // the next sequence number
	confirmed bool   // a reply opened: the service holds the session
}

// RepeatedHandshakes is how many first messages of a session carry the
// handshake at most, with ClientSessionOptions.RepeatHandshake.
const RepeatedHandshakes = 16

// ClientSessionOptions configure NewClientSession.
type ClientSessionOptions struct {
	// RepeatHandshake sends the handshake with the first messages until a
	// reply opens (at most RepeatedHandshakes of them), so that messages
	// overtaking the first one still find their session. Without it only
	// the first message carries it.
	RepeatHandshake bool
	// Now is the client time the handshake carries (default time.Now()).
	Now time.Time
}

// NewClientSession starts a session to the service whose channel key is
// pub, under info (see [ChannelInfo]), proving cred. It does the one KEM of
// the session; messages are sealed with [ClientSession.Seal].
func NewClientSession(pub *PublicKey, info []byte, cred Credential, opts ClientSessionOptions) (*ClientSession, error) {
	if pub == nil {
		return nil, errors.New("secure: nil public key")
	}
	if err := cred.check(); err != nil {
		return nil, err
	}
	if len(info) > maxChannelInfo {
		return nil, fmt.Errorf("secure: info of %d bytes, at most %d", len(info), maxChannelInfo)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	enc, s, err := hpke.NewSender(pub.pk, kdf(), aead(), info)
	if err != nil {
		return nil, fmt.Errorf("secure: HPKE sender: %w", err)
	}
	kid := pub.ID()
	fixed := make([]byte, 0, hsFixedLen)
	fixed = append(fixed, 'C', 'S', 'H', SessionVersion)
	fixed = binary.BigEndian.AppendUint16(fixed, uint16(pub.suite))
	fixed = binary.BigEndian.AppendUint64(fixed, uint64(max(now.UnixMilli(), 0)))
	fixed = append(fixed, kid[:]...)

	auth := make([]byte, 0, authBlockBase+len(cred.Name))
	auth = append(auth, byte(len(cred.Name)))
	auth = append(auth, cred.Name...)
	auth = append(auth, ed25519.Sign(cred.Key, authMessage(info, fixed, enc))...)
	act, err := s.Seal(fixed, auth)
	if err != nil {
		return nil, fmt.Errorf("secure: HPKE seal: %w", err)
	}
	cs := &ClientSession{keyID: kid, created: now, repeat: opts.RepeatHandshake, next: 1}
	if err := exportKeys(&cs.keys, s.Export); err != nil {
		return nil, err
	}
	if cs.c2s, cs.s2c, err = sessionAEADs(&cs.keys); err != nil {
		return nil, err
	}
	prefix := make([]byte, 0, len(fixed)+len(enc)+2+len(act))
	prefix = append(append(prefix, fixed...), enc...)
	prefix = binary.BigEndian.AppendUint16(prefix, uint16(len(act)))
	prefix = append(prefix, act...)
	sum := sha256.Sum256(enc)
	cs.prefix = prefix
	copy(cs.id[:], sum[:])
	return cs, nil
}

// clientStateVersion starts a ClientSession's saved form.
const clientStateVersion = 1

// MarshalBinary saves the session, keys included, for a client that must
// still open its own messages after a restart (to seal them again with
// [UnmarshalClientSession] and [ClientSession.Open]). Keep it as secret as
// the client's credential.
//
//	u8 version (1) ‖ session ID (16) ‖ key ID (8) ‖ u64 created (Unix ms) ‖
//	keys (64) ‖ u32 n ‖ the handshake (n bytes)
func (s *ClientSession) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 1+16+8+8+2*KeySize+4+len(s.prefix))
	b = append(b, clientStateVersion)
	b = append(b, s.id[:]...)
	b = append(b, s.keyID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(max(s.created.UnixMilli(), 0)))
	b = append(b, s.keys[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.prefix)))
	return append(b, s.prefix...), nil
}

// UnmarshalClientSession restores a session saved by MarshalBinary, for
// opening only: it has used up its sequence numbers, so it never seals
// again (its saved counter could be behind, and a sequence number must
// never be used twice).
func UnmarshalClientSession(b []byte) (*ClientSession, error) {
	const fixed = 1 + 16 + 8 + 8 + 2*KeySize + 4
	if len(b) < fixed || b[0] != clientStateVersion {
		return nil, fmt.Errorf("%w client session state: %d bytes", ErrMalformed, len(b))
	}
	n := binary.BigEndian.Uint32(b[fixed-4:])
	if uint64(len(b)-fixed) != uint64(n) {
		return nil, fmt.Errorf("%w client session state: handshake of %d bytes in %d", ErrMalformed, n, len(b)-fixed)
	}
	s := &ClientSession{next: 0}
	copy(s.id[:], b[1:17])
	copy(s.keyID[:], b[17:25])
	s.created = time.UnixMilli(int64(binary.BigEndian.Uint64(b[25:33]) & (1<<62 - 1)))
	copy(s.keys[:], b[33:33+2*KeySize])
	s.prefix = bytes.Clone(b[fixed:])
	var err error
	if s.c2s, s.s2c, err = sessionAEADs(&s.keys); err != nil {
		return nil, err
	}
	return s, nil
}

// ID returns the session's ID.
func (s *ClientSession) ID() SessionID { return s.id }

// KeyID returns the ID of the channel key the session was opened to.
func (s *ClientSession) KeyID() KeyID { return s.keyID }

// Created returns the client time the handshake carries.
func (s *ClientSession) Created() time.Time { return s.created }

// Sent returns how many messages the session sealed.
func (s *ClientSession) Sent() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == 0 {
		return DefaultSessionMessages // restored: sealing is over
	}
	return s.next - 1
}

// Seal seals plaintext as the session's next message and returns its
// sequence number (to open the reply with) and the bytes to send.
func (s *ClientSession) Seal(plaintext []byte) (uint64, []byte, error) {
	s.mu.Lock()
	seq := s.next
	if seq == 0 {
		s.mu.Unlock()
		return 0, nil, fmt.Errorf("%w: session %s", ErrExhausted, s.id)
	}
	s.next++
	hs := seq == 1 || (s.repeat && !s.confirmed && seq <= RepeatedHandshakes)
	s.mu.Unlock()
	var out []byte
	if hs {
		out = make([]byte, 0, len(s.prefix)+8+len(plaintext)+tagLen)
		out = append(out, s.prefix...)
		out = binary.BigEndian.AppendUint64(out, seq)
	} else {
		out = make([]byte, 0, msgHdrLen+len(plaintext)+tagLen)
		out = msgHeader(out, 'M', s.id, seq)
	}
	var ad [msgHdrLen]byte
	var nonce [nonceLen]byte
	msgHeader(ad[:0], 'M', s.id, seq)
	return seq, s.c2s.Seal(out, counterNonce(&nonce, seq), plaintext, ad[:]), nil
}

// Open opens a message this session sealed (a handshake or a data
// message) and returns its sequence number and plaintext: a client uses it
// to seal again, in a new session, a message the service no longer could
// open ([ErrSessionUnknown]).
func (s *ClientSession) Open(msg []byte) (uint64, []byte, error) {
	p, err := ParseSessionMessage(msg)
	if err != nil {
		return 0, nil, err
	}
	if p.Session != s.id {
		return 0, nil, fmt.Errorf("%w: a message of session %s, not %s", ErrAuth, p.Session, s.id)
	}
	pt, err := openData(s.c2s, p.Session, p.Seq, p.data)
	if err != nil {
		return 0, nil, err
	}
	return p.Seq, pt, nil
}

// OpenReply opens the service's reply to the message with sequence number
// seq. The first reply that opens confirms the session.
func (s *ClientSession) OpenReply(seq uint64, reply []byte) ([]byte, error) {
	if len(reply) < replyHdrLenV2+tagLen {
		return nil, fmt.Errorf("%w session reply: %d bytes", ErrMalformed, len(reply))
	}
	if !bytes.Equal(reply[:4], []byte{'C', 'S', 'R', SessionVersion}) {
		return nil, fmt.Errorf("%w session reply: bad magic or version %q", ErrMalformed, reply[:4])
	}
	var id SessionID
	copy(id[:], reply[4:20])
	if id != s.id {
		return nil, fmt.Errorf("%w: a reply of session %s, not %s", ErrWrongRequest, id, s.id)
	}
	if n := binary.BigEndian.Uint64(reply[20:]); n != seq {
		return nil, fmt.Errorf("%w: reply to message %d, not %d", ErrWrongRequest, n, seq)
	}
	pt, err := s.s2c.Open(nil, reply[msgHdrLen:replyHdrLenV2], reply[replyHdrLenV2:], reply[:replyHdrLenV2])
	if err != nil {
		return nil, fmt.Errorf("%w: reply to message %d of session %s", ErrAuth, seq, s.id)
	}
	s.mu.Lock()
	s.confirmed = true
	s.mu.Unlock()
	return pt, nil
}

// openData opens the AEAD part of a session message.
func openData(a cipher.AEAD, id SessionID, seq uint64, data []byte) ([]byte, error) {
	var ad [msgHdrLen]byte
	var nonce [nonceLen]byte
	msgHeader(ad[:0], 'M', id, seq)
	pt, err := a.Open(nil, counterNonce(&nonce, seq), data, ad[:])
	if err != nil {
		return nil, fmt.Errorf("%w: message %d of session %s", ErrAuth, seq, id)
	}
	return pt, nil
}

// ---- parsing ----

// SessionMessageHeader is the clear part of a client-session message,
// parsed strictly without any key.
type SessionMessageHeader struct {
	// Session is the session the message belongs to.
	Session SessionID
	// Seq is the message's sequence number in the session (≥ 1).
	Seq uint64
	// Handshake is set when the message carries the session's handshake.
	Handshake bool
	// Suite, Sent and Key describe the handshake (zero otherwise): its KEM,
	// the client time it carries and the channel key it was sealed to.
	Suite Suite
	Sent  time.Time
	Key   KeyID

	fixed, enc, authCT, data []byte
}

// IsSessionMessage reports whether b starts like a client-session message
// (a handshake or a data message), so that a service can tell them from
// other bodies before parsing.
func IsSessionMessage(b []byte) bool {
	return len(b) >= 4 && b[0] == 'C' && b[1] == 'S' && (b[2] == 'H' || b[2] == 'M') && b[3] == SessionVersion
}

// ParseSessionMessage decodes the clear part of a handshake or data message
// strictly: every length is checked, nothing is trusted.
func ParseSessionMessage(b []byte) (*SessionMessageHeader, error) {
	if len(b) < 4 || b[0] != 'C' || b[1] != 'S' {
		return nil, fmt.Errorf("%w session message: bad magic", ErrMalformed)
	}
	if b[3] != SessionVersion {
		return nil, fmt.Errorf("%w session message: version %d, want %d", ErrMalformed, b[3], SessionVersion)
	}
	switch b[2] {
	case 'M':
		if len(b) < msgHdrLen+tagLen {
			return nil, fmt.Errorf("%w session message: %d bytes", ErrMalformed, len(b))
		}
		h := &SessionMessageHeader{Seq: binary.BigEndian.Uint64(b[20:]), data: b[msgHdrLen:]}
		copy(h.Session[:], b[4:20])
		if h.Seq < 2 {
			return nil, fmt.Errorf("%w session message: sequence number %d (data messages start at 2)", ErrMalformed, h.Seq)
		}
		return h, nil
	case 'H':
	default:
		return nil, fmt.Errorf("%w session message: unknown type %q", ErrMalformed, b[2])
	}
	if len(b) < hsFixedLen {
		return nil, fmt.Errorf("%w handshake: %d bytes", ErrMalformed, len(b))
	}
	s, el, sent, err := parseKEMAndTime("handshake", b)
	if err != nil {
		return nil, err
	}
	h := &SessionMessageHeader{Handshake: true, Suite: s, Sent: sent, fixed: b[:hsFixedLen]}
	copy(h.Key[:], b[14:hsFixedLen])
	rest := b[hsFixedLen:]
	if len(rest) < el+2 {
		return nil, fmt.Errorf("%w handshake: %d bytes, too short for a %s key", ErrMalformed, len(b), s)
	}
	h.enc, rest = rest[:el], rest[el:]
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if n < authBlockBase+1+tagLen || n > maxAuthCTLen || len(rest) < n+8+tagLen {
		return nil, fmt.Errorf("%w handshake: credential block of %d bytes in %d", ErrMalformed, n, len(rest))
	}
	h.authCT, rest = rest[:n], rest[n:]
	h.Seq, h.data = binary.BigEndian.Uint64(rest), rest[8:]
	if h.Seq == 0 {
		return nil, fmt.Errorf("%w handshake: sequence number 0", ErrMalformed)
	}
	sum := sha256.Sum256(h.enc)
	copy(h.Session[:], sum[:])
	return h, nil
}
