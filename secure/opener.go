package secure

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/wire"
)

// DefaultMaxSenders is the default number of senders an Opener tracks per
// key epoch.
const DefaultMaxSenders = 16384

// OpenerOptions tune an Opener. The zero value is the defaults.
type OpenerOptions struct {
	// Window is the replay window width in sequence numbers, rounded up to
	// a multiple of 64 (default [DefaultWindow]).
	Window int
	// MaxSenders bounds the senders tracked per key epoch (default
	// [DefaultMaxSenders]). A new sender beyond it is rejected with
	// [ErrTooManySenders] rather than forgetting an old sender, which would
	// let the old sender's envelopes be replayed; rotating the key (a new
	// epoch) starts afresh.
	MaxSenders int
	// Now is the clock for grace periods (default time.Now).
	Now func() time.Time
}

// Opener opens the envelopes of one secured address: it holds the address
// keys of the current and previous epochs, and a replay window per epoch and
// sender. It is safe for concurrent use.
type Opener struct {
	address string
	ad      []byte
	opts    OpenerOptions

	mu      sync.Mutex
	epochs  map[uint32]*epochState
	retired map[uint32]bool
	// deadlines counts epochs with a retirement deadline, so Open skips
	// the clock when there are none.
	deadlines int
}

type epochState struct {
	key      AddressKey
	retireAt time.Time // zero: no deadline
	senders  map[SenderID]*senderState
}

type senderState struct {
	aead cipher.AEAD
	win  window
}

// Opened is an envelope that opened: authenticated and accepted once.
type Opened struct {
	// Kind is the operation the envelope was sealed for.
	Kind wire.Kind
	// Epoch is the key epoch it was sealed under.
	Epoch uint32
	// Sender is the sealing Sealer's ID.
	Sender SenderID
	// Seq is its sequence number.
	Seq uint64
	// ReplyTo is the request a reply answers (wire.KindReply only).
	ReplyTo Ref
	// Headers are the protected headers (nil when none).
	Headers map[string]string
	// Plaintext is the payload.
	Plaintext []byte

	// Skipped is the range of this sender's sequence numbers the envelope
	// jumped over, not seen yet: on an ordered stream, lost messages.
	// Skipped.Count() is 0 when the envelope followed its predecessor.
	Skipped SeqRange
	// Expired counts sequence numbers of this sender that left the replay
	// window at this step without having been seen: lost for good.
	Expired uint64
	// FirstFromSender is set on the first envelope accepted from a sender
	// (in this epoch); Skipped then covers 1..Seq-1, which a receiver that
	// joined late may legitimately have missed.
	FirstFromSender bool
}

// Ref returns the Ref of the opened envelope: pass it to
// [Sealer.SealReply] to answer a request.
func (o *Opened) Ref() Ref { return Ref{Sender: o.Sender, Seq: o.Seq} }

// SeqRange is an inclusive range of sequence numbers; From == 0 means empty.
type SeqRange struct {
	// From is the first sequence number of the range (0: empty range).
	From uint64
	// To is the last sequence number of the range.
	To uint64
}

// Count returns how many sequence numbers the range holds.
func (r SeqRange) Count() uint64 {
	if r.From == 0 {
		return 0
	}
	return r.To - r.From + 1
}

// NewOpener returns an Opener for address holding keys (all for address,
// epochs distinct); more can be added with [Opener.AddKey].
func NewOpener(address string, opts OpenerOptions, keys ...AddressKey) (*Opener, error) {
	if err := checkAddress(address); err != nil {
		return nil, err
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.MaxSenders <= 0 {
		opts.MaxSenders = DefaultMaxSenders
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	o := &Opener{
		address: address,
		ad:      adPrefix(address),
		opts:    opts,
		epochs:  make(map[uint32]*epochState),
		retired: make(map[uint32]bool),
	}
	for _, k := range keys {
		if err := o.AddKey(k); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// Address returns the address the Opener opens for.
func (o *Opener) Address() string { return o.address }

// AddKey adds the key of a new epoch. A key for another address, or for an
// epoch already known or retired, is refused.
func (o *Opener) AddKey(k AddressKey) error {
	if k.Address != o.address {
		return fmt.Errorf("secure: key for address %q added to the opener of %q", k.Address, o.address)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.retired[k.Epoch] {
		return fmt.Errorf("secure: epoch %d of %q was retired", k.Epoch, o.address)
	}
	if _, ok := o.epochs[k.Epoch]; ok {
		return fmt.Errorf("secure: epoch %d of %q is already known", k.Epoch, o.address)
	}
	o.epochs[k.Epoch] = &epochState{key: k, senders: make(map[SenderID]*senderState)}
	return nil
}

// RetireAfter keeps accepting epoch until deadline (the grace period), then
// retires it; a zero deadline cancels a pending one. Unknown epochs are
// ignored.
func (o *Opener) RetireAfter(epoch uint32, deadline time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e, ok := o.epochs[epoch]; ok {
		if e.retireAt.IsZero() && !deadline.IsZero() {
			o.deadlines++
		} else if !e.retireAt.IsZero() && deadline.IsZero() {
			o.deadlines--
		}
		e.retireAt = deadline
	}
}

// Retire stops accepting epoch now and forgets its key and windows. Later
// envelopes of that epoch fail with [ErrEpochRetired].
func (o *Opener) Retire(epoch uint32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.retireLocked(epoch)
}

func (o *Opener) retireLocked(epoch uint32) {
	if e, ok := o.epochs[epoch]; ok {
		if !e.retireAt.IsZero() {
			o.deadlines--
		}
		clear(e.key.Key[:])
		delete(o.epochs, epoch)
	}
	o.retired[epoch] = true
}

// Epochs returns the epochs currently accepted.
func (o *Opener) Epochs() []uint32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.expireLocked()
	var out []uint32
	for e := range o.epochs {
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}

func (o *Opener) expireLocked() {
	if o.deadlines == 0 {
		return
	}
	now := o.opts.Now()
	for n, e := range o.epochs {
		if !e.retireAt.IsZero() && !now.Before(e.retireAt) {
			o.retireLocked(n)
		}
	}
}

// Open opens an envelope delivered as kind (send, publish or request). It
// returns the payload, or an error wrapping one of the package's
// rejection reasons. A rejected envelope changes nothing.
func (o *Opener) Open(kind wire.Kind, envelope []byte) (*Opened, error) {
	if kind == wire.KindReply {
		return nil, fmt.Errorf("secure: open a reply with OpenReply")
	}
	return o.open(kind, nil, envelope)
}

// OpenReply opens a reply envelope and checks that it answers the request
// named by to (the Ref [Sealer.Seal] returned for it).
func (o *Opener) OpenReply(to Ref, envelope []byte) (*Opened, error) {
	return o.open(wire.KindReply, &to, envelope)
}

func (o *Opener) open(kind wire.Kind, to *Ref, b []byte) (*Opened, error) {
	var env Envelope
	e := &env
	if err := parseEnvelope(b, e); err != nil {
		return nil, err
	}
	ref := e.Ref()

	// Look up the epoch and the sender's state; check the window.
	o.mu.Lock()
	o.expireLocked()
	ep, ok := o.epochs[e.Epoch]
	if !ok {
		retired := o.retired[e.Epoch]
		o.mu.Unlock()
		if retired {
			return nil, fmt.Errorf("%w: epoch %d of %q (envelope %s)", ErrEpochRetired, e.Epoch, o.address, ref)
		}
		return nil, fmt.Errorf("%w: epoch %d of %q (envelope %s)", ErrUnknownEpoch, e.Epoch, o.address, ref)
	}
	st := ep.senders[e.Sender]
	var aead cipher.AEAD // nil: derive the subkey below
	if st != nil {
		if err := st.win.check(e.Seq); err != nil {
			top := st.win.max
			o.mu.Unlock()
			return nil, fmt.Errorf("%w: envelope %s on %q (window top %d)", err, ref, o.address, top)
		}
		aead = st.aead
	}
	var key *AddressKey
	if aead == nil {
		k := ep.key
		key = &k
	}
	o.mu.Unlock()

	// Authenticate and decrypt outside the lock.
	if key != nil {
		var err error
		aead, err = deriveSubkey(key, e.Sender)
		clear(key.Key[:])
		if err != nil {
			return nil, err
		}
	}
	// One allocation: the nonce, the associated data, then room for the
	// plaintext (nonce and associated data stay hidden before the returned
	// slice).
	adLen := len(o.ad) + len(e.header)
	buf := make([]byte, nonceLen+adLen, nonceLen+adLen+len(e.ciphertext)-tagLen)
	binary.BigEndian.PutUint64(buf[4:nonceLen], e.Seq)
	copy(buf[nonceLen+copy(buf[nonceLen:], o.ad):], e.header)
	pt, err := aead.Open(buf[nonceLen+adLen:nonceLen+adLen], buf[:nonceLen], e.ciphertext, buf[nonceLen:nonceLen+adLen])
	if err != nil {
		return nil, fmt.Errorf("%w: envelope %s on %q epoch %d", ErrAuth, ref, o.address, e.Epoch)
	}
	// Genuine, but is it what this delivery should carry? (Checked after
	// authentication, so these errors mean a genuine envelope was misrouted,
	// not a forgery.)
	if e.Kind != kind {
		return nil, fmt.Errorf("%w: %s envelope %s delivered as %s", ErrWrongKind, e.Kind, ref, kind)
	}
	if to != nil && (e.ReplyTo.Seq != to.Seq || subtle.ConstantTimeCompare(e.ReplyTo.Sender[:], to.Sender[:]) != 1) {
		return nil, fmt.Errorf("%w: reply %s answers %s, not %s", ErrWrongRequest, ref, e.ReplyTo, *to)
	}

	// Commit: check again, since another goroutine may have accepted the
	// same sequence number (or retired the epoch) meanwhile.
	out := &Opened{
		Kind: e.Kind, Epoch: e.Epoch, Sender: e.Sender, Seq: e.Seq,
		ReplyTo: e.ReplyTo, Headers: e.Headers, Plaintext: pt,
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	ep, ok = o.epochs[e.Epoch]
	if !ok {
		return nil, fmt.Errorf("%w: epoch %d of %q (envelope %s)", ErrEpochRetired, e.Epoch, o.address, ref)
	}
	st = ep.senders[e.Sender]
	if st != nil && st.aead == nil {
		st.aead = aead // restored state: the subkey is derived on first use
	}
	if st == nil {
		if len(ep.senders) >= o.opts.MaxSenders {
			return nil, fmt.Errorf("%w: epoch %d of %q already has %d senders", ErrTooManySenders, e.Epoch, o.address, len(ep.senders))
		}
		st = &senderState{aead: aead, win: newWindow(o.opts.Window)}
		ep.senders[e.Sender] = st
		out.FirstFromSender = true
	}
	if err := st.win.check(e.Seq); err != nil {
		return nil, fmt.Errorf("%w: envelope %s on %q (window top %d)", err, ref, o.address, st.win.max)
	}
	from, to2, expired := st.win.accept(e.Seq)
	out.Skipped = SeqRange{From: from, To: to2}
	out.Expired = expired
	return out, nil
}
