package fresh

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cloister-dev/cloister/trusted"
)

func sampleIndex() *index {
	return &index{subject: "service/meter/0", group: bytes.Repeat([]byte{9}, 32), counter: 7, gen: 5,
		salt: [16]byte{1, 2, 3}, entries: map[string]trusted.Version{
			"total": {Gen: 5, Seq: 3}, "cloister/trusted/windows/v1/0/meter.readings": {Gen: 4, Seq: 90}, "\xff\x00binary": {Gen: 1, Seq: 1}}}
}

func TestIndexRoundTrip(t *testing.T) {
	x := sampleIndex()
	b := x.encode()
	y, err := decodeIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(y.encode(), b) || y.counter != 7 || y.gen != 5 || len(y.entries) != 3 {
		t.Fatalf("round trip: %+v", y)
	}
	for _, bad := range [][]byte{nil, b[:len(b)-1], append(bytes.Clone(b), 0), []byte("cloister/fresh/index/v2\n")} {
		if _, err := decodeIndex(bad); !errors.Is(err, ErrBadIndex) {
			t.Fatalf("decode of %d bytes: %v", len(bad), err)
		}
	}
}

// FuzzDecodeIndex: an index comes back from the host (sealed, so only a
// bug of ours could make it malformed); the decoder must refuse anything
// malformed with ErrBadIndex and round-trip anything it accepts.
func FuzzDecodeIndex(f *testing.F) {
	f.Add(sampleIndex().encode())
	f.Add((&index{subject: "service/a/1", entries: map[string]trusted.Version{}}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := decodeIndex(b)
		if err != nil {
			if !errors.Is(err, ErrBadIndex) {
				t.Fatalf("error not ErrBadIndex: %v", err)
			}
			return
		}
		if !bytes.Equal(x.encode(), b) {
			t.Fatal("an accepted index does not encode to the same bytes")
		}
	})
}
