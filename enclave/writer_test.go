package enclave

import (
	"bytes"
	"io"
	"sync"
	"testing"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/wire"
)

// TestFrameWriterKeepsFramesIntact sends large and small frames from many
// goroutines, some written at once and some batched, and decodes them all.
func TestFrameWriterKeepsFramesIntact(t *testing.T) {
	pr, pw := io.Pipe()
	fw := newFrameWriter(pw, boundary.DefaultMaxFrame)
	defer fw.close()
	const senders, each = 16, 40
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				token := uint64(g*each + i + 1)
				size := 64
				if i%3 == 0 {
					size = 300 << 10 // batches of several of these exceed 1 MiB
				}
				body := bytes.Repeat([]byte{byte(token)}, size)
				if err := fw.send(&boundary.Deliver{Token: token, Kind: wire.KindRequest, Address: "a.b", Body: body}, i%2 == 0); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	r := boundary.NewReader(pr, boundary.Limits{})
	seen := map[uint64]bool{}
	for len(seen) < senders*each {
		m, err := r.Next()
		if err != nil {
			t.Fatalf("after %d frames: %v", len(seen), err)
		}
		d := m.(*boundary.Deliver)
		if seen[d.Token] || len(d.Body) == 0 || bytes.Count(d.Body, []byte{byte(d.Token)}) != len(d.Body) {
			t.Fatalf("frame of token %d is corrupt or repeated", d.Token)
		}
		seen[d.Token] = true
	}
	wg.Wait()
	if st := fw.Stats(); st.Frames != senders*each || st.Writes == 0 {
		t.Fatalf("frames %d writes %d", st.Frames, st.Writes)
	}
}
