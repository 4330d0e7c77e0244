package secure

import (
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Suite names the HPKE KEM of a key; the KDF is always HKDF-SHA256 and the
// AEAD AES-256-GCM.
type Suite uint16

// Suites, numbered by their HPKE KEM IDs.
const (
	// SuiteHybrid is ML-KEM-768 + X25519 (X-Wing), post-quantum hybrid: the
	// default.
	SuiteHybrid Suite = 0x647a
	// SuiteX25519 is DHKEM(X25519, HKDF-SHA256): smaller keys and messages,
	// no post-quantum protection.
	SuiteX25519 Suite = 0x0020
)

// String names the suite.
func (s Suite) String() string {
	switch s {
	case SuiteHybrid:
		return "MLKEM768-X25519"
	case SuiteX25519:
		return "DHKEM(X25519)"
	}
	return fmt.Sprintf("suite(%#04x)", uint16(s))
}

func (s Suite) kem() (hpke.KEM, error) {
	switch s {
	case SuiteHybrid:
		return hpke.MLKEM768X25519(), nil
	case SuiteX25519:
		return hpke.DHKEM(ecdh.X25519()), nil
	}
	return nil, fmt.Errorf("%w: unsupported HPKE KEM %#04x", ErrMalformed, uint16(s))
}

// encLen returns the size of the KEM's encapsulated key.
func (s Suite) encLen() int {
	switch s {
	case SuiteHybrid:
		return 1120
	case SuiteX25519:
		return 32
	}
	return 0
}

func kdf() hpke.KDF   { return hpke.HKDFSHA256() }
func aead() hpke.AEAD { return hpke.AES256GCM() }

const (
	channelLabel   = "cloister/secure/v1/client"
	sealedLabel    = "cloister/secure/v1/sealed"
	replyExport    = "cloister reply"
	requestHdrLen  = 14 // magic, version, KEM ID, client time
	replyHdrLen    = 12 // magic, version, reply number
	maxChannelInfo = 4096
)

// ChannelInfo returns the HPKE info both ends of a client channel use: the
// protocol label, the service name (or address) and the manifest hash the
// client pinned, each unambiguously framed.
func ChannelInfo(service string, manifestHash [32]byte) []byte {
	b := make([]byte, 0, len(channelLabel)+2+len(service)+32)
	b = append(b, channelLabel...)
	b = binary.BigEndian.AppendUint16(b, uint16(min(len(service), 0xffff)))
	b = append(b, service[:min(len(service), 0xffff)]...)
	return append(b, manifestHash[:]...)
}

// ServiceKey is an HPKE private key: a trusted service's channel key, or the
// key a joining enclave binds into its evidence. Keep it inside the enclave.
type ServiceKey struct {
	suite Suite
	priv  hpke.PrivateKey
	pub   *PublicKey
}

// NewServiceKey generates a key of the default suite, [SuiteHybrid].
func NewServiceKey() (*ServiceKey, error) { return GenerateServiceKey(SuiteHybrid) }

// GenerateServiceKey generates a key of the given suite.
func GenerateServiceKey(s Suite) (*ServiceKey, error) {
	kem, err := s.kem()
	if err != nil {
		return nil, err
	}
	priv, err := kem.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("secure: generate %s key: %w", s, err)
	}
	return newServiceKey(s, priv), nil
}

func newServiceKey(s Suite, priv hpke.PrivateKey) *ServiceKey {
	return &ServiceKey{suite: s, priv: priv, pub: newPublicKey(s, priv.PublicKey())}
}

// ParseServiceKey decodes a key written by [ServiceKey.Bytes] (to restore
// it from sealed storage).
func ParseServiceKey(b []byte) (*ServiceKey, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w private key: %d bytes", ErrMalformed, len(b))
	}
	s := Suite(binary.BigEndian.Uint16(b))
	kem, err := s.kem()
	if err != nil {
		return nil, err
	}
	priv, err := kem.NewPrivateKey(b[2:])
	if err != nil {
		return nil, fmt.Errorf("%w private key: %v", ErrMalformed, err)
	}
	return newServiceKey(s, priv), nil
}

// Bytes returns the private key as u16 KEM ID ‖ serialized key, for sealed
// storage only.
func (k *ServiceKey) Bytes() ([]byte, error) {
	raw, err := k.priv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("secure: serialize private key: %w", err)
	}
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(raw)), uint16(k.suite))
	// raw is not cleared: crypto/hpke's hybrid keys return their own seed
	// (not a copy), and clearing it would make the next Bytes return zeros.
	return append(b, raw...), nil
}

// Suite returns the key's suite.
func (k *ServiceKey) Suite() Suite { return k.suite }

// PublicKey returns the public half.
func (k *ServiceKey) PublicKey() *PublicKey { return k.pub }

// PublicKeyBytes returns the public key's wire form (u16 KEM ID ‖ key).
func (k *ServiceKey) PublicKeyBytes() []byte { return k.pub.Bytes() }

// PublicKey is an HPKE public key of a supported suite.
type PublicKey struct {
	suite Suite
	pk    hpke.PublicKey
	id    KeyID // computed once: sessions compare it on every message
}

func newPublicKey(s Suite, pk hpke.PublicKey) *PublicKey {
	p := &PublicKey{suite: s, pk: pk}
	sum := sha256.Sum256(p.Bytes())
	copy(p.id[:], sum[:])
	return p
}

// ParsePublicKey decodes a public key's wire form (u16 KEM ID ‖ key).
func ParsePublicKey(b []byte) (*PublicKey, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w public key: %d bytes", ErrMalformed, len(b))
	}
	s := Suite(binary.BigEndian.Uint16(b))
	kem, err := s.kem()
	if err != nil {
		return nil, err
	}
	pk, err := kem.NewPublicKey(b[2:])
	if err != nil {
		return nil, fmt.Errorf("%w public key: %v", ErrMalformed, err)
	}
	return newPublicKey(s, pk), nil
}

// Bytes returns the wire form: u16 KEM ID ‖ serialized public key.
func (p *PublicKey) Bytes() []byte {
	raw := p.pk.Bytes()
	b := make([]byte, 2, 2+len(raw))
	binary.BigEndian.PutUint16(b, uint16(p.suite))
	return append(b, raw...)
}

// Suite returns the key's suite.
func (p *PublicKey) Suite() Suite { return p.suite }

// Equal reports whether p and q are the same key.
func (p *PublicKey) Equal(q *PublicKey) bool {
	return q != nil && p.suite == q.suite && string(p.pk.Bytes()) == string(q.pk.Bytes())
}

// ClientChannel is the client's side of one request: it opens the service's
// replies. It is safe for concurrent use.
type ClientChannel struct {
	aead cipher.AEAD
	mu   sync.Mutex
	last uint64 // highest reply number accepted
}

// SealRequest encrypts plaintext to the service key pub under info (see
// [ChannelInfo]) and returns the channel to open replies with and the
// request bytes to send.
func SealRequest(pub *PublicKey, info, plaintext []byte) (*ClientChannel, []byte, error) {
	return SealRequestAt(pub, info, plaintext, time.Now())
}

// SealRequestAt is [SealRequest] with an explicit client time, which the
// request carries authenticated for the service's [ReplayCache].
func SealRequestAt(pub *PublicKey, info, plaintext []byte, now time.Time) (*ClientChannel, []byte, error) {
	if pub == nil {
		return nil, nil, errors.New("secure: nil public key")
	}
	if len(info) > maxChannelInfo {
		return nil, nil, fmt.Errorf("secure: info of %d bytes, at most %d", len(info), maxChannelInfo)
	}
	enc, s, err := hpke.NewSender(pub.pk, kdf(), aead(), info)
	if err != nil {
		return nil, nil, fmt.Errorf("secure: HPKE sender: %w", err)
	}
	ms := now.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	hdr := make([]byte, 0, requestHdrLen+len(enc)+len(plaintext)+tagLen)
	hdr = append(hdr, 'C', 'S', 'Q', Version)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(pub.suite))
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(ms))
	ct, err := s.Seal(hdr, plaintext)
	if err != nil {
		return nil, nil, fmt.Errorf("secure: HPKE seal: %w", err)
	}
	rk, err := s.Export(replyExport, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("secure: HPKE export: %w", err)
	}
	g, err := newGCM(rk)
	if err != nil {
		return nil, nil, err
	}
	msg := append(append(hdr, enc...), ct...)
	return &ClientChannel{aead: g}, msg, nil
}

// OpenReply opens a reply of the service. Replies must arrive in the order
// the service sealed them; a repeated or older one fails with [ErrReplay].
func (c *ClientChannel) OpenReply(reply []byte) ([]byte, error) {
	n, err := parseReply(reply)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	if n <= last {
		return nil, fmt.Errorf("%w: reply %d, already at %d", ErrReplay, n, last)
	}
	var nonce [nonceLen]byte
	pt, err := c.aead.Open(nil, counterNonce(&nonce, n), reply[replyHdrLen:], reply[:replyHdrLen])
	if err != nil {
		return nil, fmt.Errorf("%w: reply %d", ErrAuth, n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n <= c.last {
		return nil, fmt.Errorf("%w: reply %d, already at %d", ErrReplay, n, c.last)
	}
	c.last = n
	return pt, nil
}

// parseReply checks a reply's clear part and returns its number.
func parseReply(b []byte) (uint64, error) {
	if len(b) < replyHdrLen+tagLen {
		return 0, fmt.Errorf("%w reply: %d bytes", ErrMalformed, len(b))
	}
	if b[0] != 'C' || b[1] != 'S' || b[2] != 'R' {
		return 0, fmt.Errorf("%w reply: bad magic %q", ErrMalformed, b[:3])
	}
	if b[3] != Version {
		return 0, fmt.Errorf("%w reply: version %d, want %d", ErrMalformed, b[3], Version)
	}
	n := binary.BigEndian.Uint64(b[4:])
	if n == 0 {
		return 0, fmt.Errorf("%w reply: number 0", ErrMalformed)
	}
	return n, nil
}

// RequestHeader is the clear part of a client request.
type RequestHeader struct {
	// Suite is the KEM the request was sealed with.
	Suite Suite
	// Sent is the client's time (authenticated once the request opens).
	Sent time.Time
	// ID identifies the request: SHA-256 of its encapsulated key, unique
	// per request. It keys the [ReplayCache].
	ID [32]byte

	enc, ct, aad []byte
}

// parseKEMAndTime reads the KEM ID (bytes 4–5) and the client time (bytes
// 6–13) that one-shot requests and handshakes both start with, and returns
// the suite, its encapsulated key's length and the time. b has at least 14
// bytes.
func parseKEMAndTime(what string, b []byte) (Suite, int, time.Time, error) {
	s := Suite(binary.BigEndian.Uint16(b[4:]))
	el := s.encLen()
	if el == 0 {
		return 0, 0, time.Time{}, fmt.Errorf("%w %s: unsupported HPKE KEM %#04x", ErrMalformed, what, uint16(s))
	}
	ms := binary.BigEndian.Uint64(b[6:])
	if ms > 1<<62 {
		return 0, 0, time.Time{}, fmt.Errorf("%w %s: client time out of range", ErrMalformed, what)
	}
	return s, el, time.UnixMilli(int64(ms)), nil
}

// ParseRequest decodes a client request's clear part strictly, without a key.
func ParseRequest(b []byte) (*RequestHeader, error) {
	if len(b) < requestHdrLen {
		return nil, fmt.Errorf("%w request: %d bytes", ErrMalformed, len(b))
	}
	if b[0] != 'C' || b[1] != 'S' || b[2] != 'Q' {
		return nil, fmt.Errorf("%w request: bad magic %q", ErrMalformed, b[:3])
	}
	if b[3] != Version {
		return nil, fmt.Errorf("%w request: version %d, want %d", ErrMalformed, b[3], Version)
	}
	s, el, sent, err := parseKEMAndTime("request", b)
	if err != nil {
		return nil, err
	}
	if len(b) < requestHdrLen+el+tagLen {
		return nil, fmt.Errorf("%w request: %d bytes, too short for a %s request", ErrMalformed, len(b), s)
	}
	h := &RequestHeader{
		Suite: s,
		Sent:  sent,
		aad:   b[:requestHdrLen],
		enc:   b[requestHdrLen : requestHdrLen+el],
		ct:    b[requestHdrLen+el:],
	}
	h.ID = sha256.Sum256(h.enc)
	return h, nil
}

// Request is a client request the service opened.
type Request struct {
	RequestHeader
	// Plaintext is the client's payload.
	Plaintext []byte

	aead cipher.AEAD
	mu   sync.Mutex
	n    uint64 // last reply number used
}

// OpenRequest opens a client request sealed to k under info. The caller
// decides about replays (see [ReplayCache]).
func (k *ServiceKey) OpenRequest(info, msg []byte) (*Request, error) {
	h, err := ParseRequest(msg)
	if err != nil {
		return nil, err
	}
	if h.Suite != k.suite {
		return nil, fmt.Errorf("%w: request for a %s key, this key is %s", ErrAuth, h.Suite, k.suite)
	}
	r, err := hpke.NewRecipient(h.enc, k.priv, kdf(), aead(), info)
	if err != nil {
		return nil, fmt.Errorf("%w: request: %v", ErrAuth, err)
	}
	pt, err := r.Open(h.aad, h.ct)
	if err != nil {
		return nil, fmt.Errorf("%w: request (wrong key, wrong info or tampered)", ErrAuth)
	}
	rk, err := r.Export(replyExport, 32)
	if err != nil {
		return nil, fmt.Errorf("secure: HPKE export: %w", err)
	}
	g, err := newGCM(rk)
	if err != nil {
		return nil, err
	}
	return &Request{RequestHeader: *h, Plaintext: pt, aead: g}, nil
}

// SealReply encrypts a reply that only the requesting client can open.
// Each call is a new reply with the next reply number.
func (r *Request) SealReply(plaintext []byte) ([]byte, error) {
	r.mu.Lock()
	r.n++
	n := r.n
	r.mu.Unlock()
	b := make([]byte, 0, replyHdrLen+len(plaintext)+tagLen)
	b = append(b, 'C', 'S', 'R', Version)
	b = binary.BigEndian.AppendUint64(b, n)
	var nonce [nonceLen]byte
	var ad [replyHdrLen]byte
	copy(ad[:], b)
	return r.aead.Seal(b, counterNonce(&nonce, n), plaintext, ad[:]), nil
}
