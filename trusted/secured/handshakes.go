package secured

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/secure"
)

// Client-session handshakes across restarts.
//
// Sessions live in one instance's memory, so a restarted instance knows
// none: every data message of an older session is refused (session
// unknown) and its client opens a new one. A captured handshake, though,
// opens a session by itself, and its payload with it; the session table
// refuses a handshake it saw before, but a restarted table saw none. So
// the layer also remembers the sessions whose handshake it handled, for as
// long as the table would accept that handshake (the handshake age plus
// the clock skew allowed), and keeps that record in protected storage with
// the replay windows: a restarted instance refuses a handshake of such a
// session as of an unknown session (wire.CodeSessionUnknown), so a
// replay is not handled, and a client whose session was cut by the
// restart seals its message again in a new session. With freshness, every
// checkpoint covers the record like the windows.

// handshakes is the record: session → until when a copy of its handshake
// could still be accepted. Only the sessions of an earlier life (restored)
// are refused: this life's session table knows its own, and a client
// repeats the handshake in its first messages until one is answered.
type handshakes struct {
	mu    sync.Mutex
	until map[secure.SessionID]time.Time
	prior map[secure.SessionID]bool // restored from storage
	dirty bool
}

// handshakeRecordSize is the size of one stored entry: the session ID and
// the end of its remembrance (Unix nanoseconds, big-endian).
const handshakeRecordSize = len(secure.SessionID{}) + 8

// handshakeKey is the protected-storage key of the record, per instance.
func (k *keys) handshakeKey() string {
	return "cloister/trusted/handshakes/v1/" + strconv.FormatUint(uint64(k.rt.Instance()), 10)
}

// remember records that session's handshake was handled at now.
func (h *handshakes) remember(session secure.SessionID, now time.Time, o secure.SessionOptions) {
	keep := cmp.Or(o.HandshakeAge, secure.DefaultHandshakeAge) + cmp.Or(o.MaxClockSkew, secure.DefaultMaxClockSkew)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.until == nil {
		h.until = map[secure.SessionID]time.Time{}
	}
	h.until[session] = now.Add(keep)
	h.dirty = true
}

// handledBefore reports whether session's handshake was handled by an
// earlier life of the instance (and could still be accepted at now).
func (h *handshakes) handledBefore(session secure.SessionID, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	u, ok := h.until[session]
	return ok && h.prior[session] && now.Before(u)
}

// marshal drops what expired and encodes the rest; ok is false when
// nothing changed since the last marshal.
func (h *handshakes) marshal(now time.Time) (b []byte, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.dirty {
		return nil, false
	}
	h.dirty = false
	b = make([]byte, 0, len(h.until)*handshakeRecordSize)
	for id, u := range h.until {
		if !now.Before(u) {
			delete(h.until, id)
			delete(h.prior, id)
			continue
		}
		b = append(b, id[:]...)
		b = binary.BigEndian.AppendUint64(b, uint64(u.UnixNano()))
	}
	return b, true
}

// restore merges a stored record.
func (h *handshakes) restore(b []byte) error {
	if len(b)%handshakeRecordSize != 0 {
		return fmt.Errorf("secured: handshake record of %d bytes, not a multiple of %d", len(b), handshakeRecordSize)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.until == nil {
		h.until = map[secure.SessionID]time.Time{}
	}
	if h.prior == nil {
		h.prior = map[secure.SessionID]bool{}
	}
	for ; len(b) > 0; b = b[handshakeRecordSize:] {
		var id secure.SessionID
		copy(id[:], b)
		u := time.Unix(0, int64(binary.BigEndian.Uint64(b[len(id):])))
		if u.After(h.until[id]) {
			h.until[id] = u
		}
		h.prior[id] = true
	}
	return nil
}
