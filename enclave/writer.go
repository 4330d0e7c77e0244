package enclave

import (
	"errors"
	"io"

	"github.com/cloister-dev/cloister/boundary"
)

// maxPendingBytes is how many encoded bytes may wait behind a write before
// senders block (back-pressure).
const maxPendingBytes = 4 << 20

// bigBatch is the size from which queued frames are written at once.
const bigBatch = 16 << 10

// frameWriter writes the host's frames to the enclave in batches: the
// boundary's own Sender (the sending half of a boundary.Conn), gathering.
// A frame sent while nothing else is in flight is written at once;
// otherwise it is queued and a writer goroutine, after letting the other
// runnable goroutines add theirs, writes everything queued in one system
// call. So under load many deliveries cross per write, and per enclave
// wake-up.
type frameWriter struct {
	*boundary.Sender
}

func newFrameWriter(w io.Writer, peerMax int) *frameWriter {
	return &frameWriter{boundary.NewSender(w, peerMax, boundary.SenderOptions{
		MaxPending: maxPendingBytes, Gather: true, GatherMax: bigBatch})}
}

// send queues m. With now set it writes at once when no write is in
// progress; otherwise the gathering goroutine writes it with whatever else
// arrives meanwhile.
func (f *frameWriter) send(m boundary.Message, now bool) error {
	if now {
		return f.Send(m)
	}
	return f.Queue(m)
}

// close fails later sends and stops the writer goroutine.
func (f *frameWriter) close() { f.Close() }

// closed reports whether err means the writer was closed.
func closed(err error) bool { return errors.Is(err, boundary.ErrClosed) }
