package boundary

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzDecode feeds arbitrary frame bodies to the decoder: it must never
// panic, and whatever it accepts must re-encode to a frame that decodes to
// the same message.
func FuzzDecode(f *testing.F) {
	for _, m := range samples() {
		f.Add(AppendFrame(nil, m)[4:])
	}
	f.Add([]byte{})
	f.Add([]byte{0xff})
	lim := Limits{MaxFrame: 1 << 20, MaxAddress: 64, MaxString: 256, MaxHeaders: 16, MaxList: 16}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b, lim)
		if err != nil {
			if m != nil {
				t.Fatal("message with error")
			}
			return
		}
		enc := AppendFrame(nil, m)[4:]
		if len(enc) != len(b) {
			t.Fatalf("%s: re-encoded %d bytes from %d", m.Type(), len(enc), len(b))
		}
		m2, err := Decode(enc, lim)
		if err != nil {
			t.Fatalf("%s: re-encoded frame rejected: %v", m.Type(), err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("%s: round trip changed the message", m.Type())
		}
	})
}

// FuzzReader feeds an arbitrary stream to a Reader.
func FuzzReader(f *testing.F) {
	var all []byte
	for _, m := range samples() {
		all = AppendFrame(all, m)
	}
	f.Add(all)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b), Limits{MaxFrame: 1 << 16})
		for range 1000 {
			if _, err := r.Next(); err != nil {
				if _, ok := err.(*DecodeError); ok {
					continue
				}
				return
			}
		}
	})
}
