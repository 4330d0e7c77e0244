package secured

import (
	"bytes"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/secure"
)

func TestHandshakeRecord(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var h handshakes
	a, b := secure.SessionID{1}, secure.SessionID{2}
	h.remember(a, now, secure.SessionOptions{})
	h.remember(b, now.Add(-time.Hour), secure.SessionOptions{}) // long expired
	enc, changed := h.marshal(now)
	if !changed || len(enc) != handshakeRecordSize {
		t.Fatalf("record of %d bytes (changed %v), want one entry", len(enc), changed)
	}
	if _, changed := h.marshal(now); changed {
		t.Fatal("an unchanged record is saved again")
	}
	var r handshakes
	if err := r.restore(enc); err != nil {
		t.Fatal(err)
	}
	if h.handledBefore(a, now) {
		t.Fatal("a session of this life counts as one of an earlier life")
	}
	if !r.handledBefore(a, now.Add(5*time.Minute)) || r.handledBefore(b, now) || r.handledBefore(a, now.Add(time.Hour)) {
		t.Fatal("restored record does not answer as the original")
	}
	if err := r.restore(enc[:5]); err == nil {
		t.Fatal("a truncated record restored")
	}
}

// FuzzHandshakeRecord: the record comes back from the host (sealed); a
// malformed one is refused, a well-formed one encodes back to its
// unexpired entries.
func FuzzHandshakeRecord(f *testing.F) {
	var h handshakes
	h.remember(secure.SessionID{9}, time.Unix(1_800_000_000, 0), secure.SessionOptions{})
	seed, _ := h.marshal(time.Unix(1_800_000_000, 0))
	f.Add(seed)
	f.Add(bytes.Repeat([]byte{0xff}, 2*handshakeRecordSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r handshakes
		if err := r.restore(b); err != nil {
			if len(b)%handshakeRecordSize == 0 {
				t.Fatalf("a record of %d bytes refused: %v", len(b), err)
			}
			return
		}
		r.dirty = true
		out, _ := r.marshal(time.Unix(0, 0))
		if len(out) > len(b) {
			t.Fatalf("%d bytes in, %d out", len(b), len(out))
		}
	})
}
