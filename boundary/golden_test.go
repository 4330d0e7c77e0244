package boundary

import (
	"bytes"
	"encoding/hex"
	"flag"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/wire"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/frames.golden from the current encoder")

// goldenSamples are samples() with at most one header each (so that the
// encoding does not depend on map order), then messages whose encoding
// normalises a value (a negative duration travels as 0).
func goldenSamples() (roundTrip, encodeOnly []Message) {
	for _, m := range samples() {
		switch m := m.(type) {
		case *Deliver:
			m.Headers = oneHeader(m.Headers)
		case *RequestResult:
			m.Headers = oneHeader(m.Headers)
		case *Reply:
			m.Headers = oneHeader(m.Headers)
		case *Send:
			m.Headers = oneHeader(m.Headers)
		case *Request:
			m.Headers = oneHeader(m.Headers)
		}
		roundTrip = append(roundTrip, m)
	}
	encodeOnly = []Message{
		&Shutdown{Grace: -time.Second, Reason: "negative grace"},
		&Deliver{Token: 1, Kind: wire.KindRequest, Timeout: -1, Address: "a"},
		&Log{Level: slog.LevelDebug - 8, Message: "low"},
		&Init{Workers: MaxWorkers, Service: "analytics"},
	}
	return roundTrip, encodeOnly
}

func oneHeader(h map[string]string) map[string]string {
	if len(h) <= 1 {
		return h
	}
	return map[string]string{"content-type": h["content-type"]}
}

// TestFramesAreGolden pins the bytes of every frame type: the encoder
// writes exactly the frames in testdata/frames.golden, and the decoder
// reads them back. A change here is a change of the boundary protocol
// (and of ProtocolVersion).
func TestFramesAreGolden(t *testing.T) {
	roundTrip, encodeOnly := goldenSamples()
	var got []string
	for _, m := range append(roundTrip, encodeOnly...) {
		got = append(got, m.Type().String()+" "+hex.EncodeToString(AppendFrame(nil, m)))
	}
	const file = "testdata/frames.golden"
	if *updateGolden {
		if err := os.WriteFile(file, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(want) != len(got) {
		t.Fatalf("%d golden frames, %d samples", len(want), len(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("frame %d encodes as\n%s\nwant\n%s", i, got[i], want[i])
		}
		if i >= len(roundTrip) {
			continue
		}
		_, h, _ := strings.Cut(want[i], " ")
		f, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Decode(f[4:], Limits{})
		if err != nil || !reflect.DeepEqual(m, roundTrip[i]) {
			t.Errorf("golden frame %d decodes as %+v, %v; want %+v", i, m, err, roundTrip[i])
		}
		if !bytes.Equal(f, AppendFrame(nil, m)) {
			t.Errorf("golden frame %d does not re-encode to itself", i)
		}
	}
}
