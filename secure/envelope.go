package secure

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/cloister-dev/cloister/wire"
)

// Version is the envelope format version this package writes and reads.
const Version = 1

// KeySize is the size of an address key in bytes.
const KeySize = 32

// SenderIDSize is the size of a sender ID in bytes.
const SenderIDSize = 16

// Overhead is the size of an envelope minus its payload, for a send, publish
// or request without protected headers: the fixed header plus the GCM tag.
const Overhead = fixedLen + 4 + tagLen

const (
	magic0, magic1, magic2 = 'C', 'S', 'E'
	fixedLen               = 33 // magic, version, kind, epoch, sender, seq
	refLen                 = SenderIDSize + 8
	tagLen                 = 16
	nonceLen               = 12
	subkeyLabel            = "cloister/secure/v1/sender"
	adLabel                = "cloister/secure/v1/envelope"
)

// AddressKey is the key of one secured address in one key epoch.
type AddressKey struct {
	// Address is the bus address the key protects.
	Address string
	// Epoch numbers the key; it grows with every rotation.
	Epoch uint32
	// Key is the secret.
	Key [KeySize]byte
}

// NewAddressKey returns a fresh random key for address in epoch.
func NewAddressKey(address string, epoch uint32) (AddressKey, error) {
	if err := checkAddress(address); err != nil {
		return AddressKey{}, err
	}
	k := AddressKey{Address: address, Epoch: epoch}
	if _, err := rand.Read(k.Key[:]); err != nil {
		return AddressKey{}, fmt.Errorf("secure: random key: %w", err)
	}
	return k, nil
}

func checkAddress(address string) error {
	if err := wire.ValidateAddress(address); err != nil {
		return fmt.Errorf("secure: %w", err)
	}
	return nil
}

// SenderID identifies one Sealer: random, drawn when the Sealer is made.
type SenderID [SenderIDSize]byte

// String returns the ID in hex.
func (s SenderID) String() string { return hex.EncodeToString(s[:]) }

// Ref names one envelope: its sender and sequence number. A reply carries
// the Ref of the request it answers.
type Ref struct {
	// Sender is the sealing Sealer's ID.
	Sender SenderID
	// Seq is the envelope's sequence number under that sender.
	Seq uint64
}

// String returns "sender/seq".
func (r Ref) String() string { return fmt.Sprintf("%s/%d", r.Sender, r.Seq) }

// deriveSubkey derives the AEAD of one sender under one address key.
func deriveSubkey(k *AddressKey, sender SenderID) (cipher.AEAD, error) {
	info := make([]byte, 0, len(subkeyLabel)+2+len(k.Address)+4+SenderIDSize)
	info = append(info, subkeyLabel...)
	info = binary.BigEndian.AppendUint16(info, uint16(len(k.Address)))
	info = append(info, k.Address...)
	info = binary.BigEndian.AppendUint32(info, k.Epoch)
	info = append(info, sender[:]...)
	sub, err := hkdf.Key(sha256.New, k.Key[:], nil, string(info), 32)
	if err != nil {
		return nil, fmt.Errorf("secure: derive subkey: %w", err)
	}
	return newGCM(sub)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secure: %w", err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("secure: %w", err)
	}
	return g, nil
}

func counterNonce(dst *[nonceLen]byte, seq uint64) []byte {
	*dst = [nonceLen]byte{}
	binary.BigEndian.PutUint64(dst[4:], seq)
	return dst[:]
}

// adPrefix is "label ‖ u16 len(address) ‖ address", computed once per key.
func adPrefix(address string) []byte {
	b := make([]byte, 0, len(adLabel)+2+len(address))
	b = append(b, adLabel...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(address)))
	return append(b, address...)
}

// Envelope is the parsed clear part of an envelope: what [ParseEnvelope]
// reads before any key is used. None of it is authenticated until the
// envelope is opened.
type Envelope struct {
	// Kind is the operation the envelope claims to be sealed for.
	Kind wire.Kind
	// Epoch is the key epoch it claims.
	Epoch uint32
	// Sender is the sender ID it claims.
	Sender SenderID
	// Seq is its sequence number (≥ 1).
	Seq uint64
	// ReplyTo is the request a reply answers (wire.KindReply only).
	ReplyTo Ref
	// Headers are the protected headers (nil when there are none).
	Headers map[string]string

	header     []byte // the bytes before the ciphertext
	ciphertext []byte
}

// Ref returns the envelope's sender and sequence number.
func (e *Envelope) Ref() Ref { return Ref{Sender: e.Sender, Seq: e.Seq} }

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w envelope: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// ParseEnvelope decodes an envelope's clear part strictly, without a key.
// The returned Envelope refers to b.
func ParseEnvelope(b []byte) (*Envelope, error) {
	e := new(Envelope)
	if err := parseEnvelope(b, e); err != nil {
		return nil, err
	}
	return e, nil
}

func parseEnvelope(b []byte, e *Envelope) error {
	if len(b) < fixedLen {
		return malformed("%d bytes, shorter than the %d-byte header", len(b), fixedLen)
	}
	if b[0] != magic0 || b[1] != magic1 || b[2] != magic2 {
		return malformed("bad magic %q", b[:3])
	}
	if b[3] != Version {
		return malformed("version %d, want %d", b[3], Version)
	}
	*e = Envelope{Kind: wire.Kind(b[4])}
	if !e.Kind.Valid() {
		return malformed("unknown kind %d", b[4])
	}
	e.Epoch = binary.BigEndian.Uint32(b[5:])
	copy(e.Sender[:], b[9:25])
	e.Seq = binary.BigEndian.Uint64(b[25:])
	if e.Seq == 0 {
		return malformed("sequence number 0")
	}
	off := fixedLen
	if e.Kind == wire.KindReply {
		if len(b) < off+refLen {
			return malformed("reply too short for the request reference")
		}
		copy(e.ReplyTo.Sender[:], b[off:off+SenderIDSize])
		e.ReplyTo.Seq = binary.BigEndian.Uint64(b[off+SenderIDSize:])
		if e.ReplyTo.Seq == 0 {
			return malformed("reply to sequence number 0")
		}
		off += refLen
	}
	if len(b) < off+4 {
		return malformed("truncated before the header block length")
	}
	hl := binary.BigEndian.Uint32(b[off:])
	off += 4
	if uint64(hl) > uint64(len(b)-off) {
		return malformed("header block of %d bytes overruns the envelope", hl)
	}
	h, err := decodeHeaders(b[off : off+int(hl)])
	if err != nil {
		return err
	}
	e.Headers = h
	off += int(hl)
	if len(b)-off < tagLen {
		return malformed("ciphertext of %d bytes is shorter than the tag", len(b)-off)
	}
	e.header, e.ciphertext = b[:off], b[off:]
	return nil
}

// encodeHeaders appends the canonical header block (without its length).
func encodeHeaders(dst []byte, h map[string]string) ([]byte, error) {
	if len(h) == 0 {
		return dst, nil
	}
	if len(h) > math.MaxUint16 {
		return nil, fmt.Errorf("secure: %d protected headers, at most %d", len(h), math.MaxUint16)
	}
	var stack [16]string
	keys := stack[:0]
	for k, v := range h {
		if k == "" {
			return nil, fmt.Errorf("secure: empty protected header key")
		}
		if len(k) > math.MaxUint16 || len(v) > math.MaxUint16 {
			return nil, fmt.Errorf("secure: protected header %.40q: key or value longer than %d bytes", k, math.MaxUint16)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(keys)))
	for _, k := range keys {
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(k)))
		dst = append(dst, k...)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(h[k])))
		dst = append(dst, h[k]...)
	}
	return dst, nil
}

// decodeHeaders decodes a header block, rejecting anything not canonical.
// An empty block is no headers.
func decodeHeaders(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < 2 {
		return nil, malformed("header block of 1 byte")
	}
	n := int(binary.BigEndian.Uint16(b))
	if n == 0 {
		return nil, malformed("header block with zero entries (must be empty instead)")
	}
	// One string for the whole block; keys and values are substrings of it.
	all := string(b[2:])
	b = b[2:]
	pos := 0
	h := make(map[string]string, min(n, len(b)/4))
	prev := ""
	read := func() (string, bool) {
		if len(b)-pos < 2 {
			return "", false
		}
		l := int(binary.BigEndian.Uint16(b[pos:]))
		if len(b)-pos-2 < l {
			return "", false
		}
		s := all[pos+2 : pos+2+l]
		pos += 2 + l
		return s, true
	}
	for i := range n {
		k, ok := read()
		if !ok {
			return nil, malformed("header %d: truncated key", i)
		}
		v, ok := read()
		if !ok {
			return nil, malformed("header %d: truncated value", i)
		}
		if k == "" {
			return nil, malformed("header %d: empty key", i)
		}
		if i > 0 && strings.Compare(prev, k) >= 0 {
			return nil, malformed("header %d: keys not in strictly increasing order", i)
		}
		h[k], prev = v, k
	}
	if pos != len(b) {
		return nil, malformed("%d bytes after the last header", len(b)-pos)
	}
	return h, nil
}

// Sealer seals envelopes for one address key under its own random sender
// ID and counter. It is safe for concurrent use; each call takes the next
// sequence number.
type Sealer struct {
	address string
	epoch   uint32
	sender  SenderID
	aead    cipher.AEAD
	ad      []byte
	seq     atomic.Uint64 // last sequence number used
}

// NewSealer returns a Sealer for key with a fresh random sender ID. Make a
// new Sealer for each key epoch and after every restart; never persist one.
func NewSealer(key AddressKey) (*Sealer, error) {
	if err := checkAddress(key.Address); err != nil {
		return nil, err
	}
	s := &Sealer{address: key.Address, epoch: key.Epoch, ad: adPrefix(key.Address)}
	if _, err := rand.Read(s.sender[:]); err != nil {
		return nil, fmt.Errorf("secure: random sender ID: %w", err)
	}
	aead, err := deriveSubkey(&key, s.sender)
	if err != nil {
		return nil, err
	}
	s.aead = aead
	return s, nil
}

// SenderID returns the Sealer's sender ID.
func (s *Sealer) SenderID() SenderID { return s.sender }

// Epoch returns the key epoch the Sealer seals under.
func (s *Sealer) Epoch() uint32 { return s.epoch }

// Address returns the address the Sealer seals for.
func (s *Sealer) Address() string { return s.address }

// Seal seals plaintext as an envelope of the given kind (send, publish or
// request; use [Sealer.SealReply] for replies) with the protected headers.
// It returns the envelope and its Ref (which a requester keeps to open the
// reply).
func (s *Sealer) Seal(kind wire.Kind, headers map[string]string, plaintext []byte) ([]byte, Ref, error) {
	if kind == wire.KindReply {
		return nil, Ref{}, fmt.Errorf("secure: seal a reply with SealReply")
	}
	if !kind.Valid() {
		return nil, Ref{}, fmt.Errorf("secure: unknown kind %d", kind)
	}
	return s.seal(kind, nil, headers, plaintext)
}

// SealReply seals plaintext as the reply to the request named by to (the
// Ref of the opened request, [Opened.Ref]).
func (s *Sealer) SealReply(to Ref, headers map[string]string, plaintext []byte) ([]byte, Ref, error) {
	if to.Seq == 0 {
		return nil, Ref{}, fmt.Errorf("secure: reply to sequence number 0")
	}
	return s.seal(wire.KindReply, &to, headers, plaintext)
}

func (s *Sealer) seal(kind wire.Kind, to *Ref, headers map[string]string, plaintext []byte) ([]byte, Ref, error) {
	// Take the next sequence number; never wrap around, even when many
	// goroutines race at the end.
	var seq uint64
	for {
		cur := s.seq.Load()
		if cur >= math.MaxUint64-1 {
			return nil, Ref{}, ErrExhausted
		}
		if s.seq.CompareAndSwap(cur, cur+1) {
			seq = cur + 1
			break
		}
	}
	hdrCap := 0
	for k, v := range headers {
		hdrCap += 4 + len(k) + len(v)
	}
	if hdrCap > 0 {
		hdrCap += 2
	}
	size := fixedLen + 4 + hdrCap + len(plaintext) + tagLen
	if to != nil {
		size += refLen
	}
	// One allocation: the nonce and the associated-data prefix, then the
	// envelope (its header is the rest of the associated data), then room
	// for the ciphertext. The prefix stays hidden before the returned slice.
	pre := nonceLen + len(s.ad)
	buf := make([]byte, pre, pre+size)
	binary.BigEndian.PutUint64(buf[4:nonceLen], seq)
	copy(buf[nonceLen:], s.ad)
	b := buf[pre:]
	b = append(b, magic0, magic1, magic2, Version, byte(kind))
	b = binary.BigEndian.AppendUint32(b, s.epoch)
	b = append(b, s.sender[:]...)
	b = binary.BigEndian.AppendUint64(b, seq)
	if to != nil {
		b = append(b, to.Sender[:]...)
		b = binary.BigEndian.AppendUint64(b, to.Seq)
	}
	lenAt := len(b)
	b = append(b, 0, 0, 0, 0)
	b, err := encodeHeaders(b, headers)
	if err != nil {
		return nil, Ref{}, err
	}
	binary.BigEndian.PutUint32(b[lenAt:], uint32(len(b)-lenAt-4))
	if cap(b)-len(b) < len(plaintext)+tagLen {
		panic("secure: envelope size miscomputed") // would make Seal reallocate
	}
	ad := buf[nonceLen : pre+len(b)]
	out := s.aead.Seal(b, buf[:nonceLen], plaintext, ad)
	return out, Ref{Sender: s.sender, Seq: seq}, nil
}
