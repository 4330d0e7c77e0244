package secure

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// Opener state: what MarshalState writes (all integers big-endian).
//
//	"CSW" ‖ 1 ‖ u32 window width ‖ u32 epoch count ‖ epochs, ascending:
//	  u32 epoch ‖ u32 sender count ‖ senders, ascending by ID:
//	    sender ID (16) ‖ u64 highest sequence number ‖ width/64 × u64 bitmap words
const stateHdrLen = 12

// MarshalState returns the Opener's replay windows — not its keys — so a
// trusted service can keep them in protected (sealed) storage and give them
// to [Opener.RestoreState] after a restart.
//
// Why: a restarted receiver starts with empty windows, so without its state
// it accepts any envelope of the current epochs it has not seen in this
// life, including envelopes its previous life handled. That is what
// at-least-once redelivery on a durable address wants, and what a replay
// looks like; which one the application needs decides whether to restore.
// Sealed storage can be rolled back by the host to an older snapshot, so
// restored windows bound replays to what came after that snapshot; rotating
// the epoch bounds them completely.
func (o *Opener) MarshalState() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.expireLocked()
	width := o.windowWidth()
	epochs := make([]uint32, 0, len(o.epochs))
	for e := range o.epochs {
		epochs = append(epochs, e)
	}
	slices.Sort(epochs)
	b := []byte{'C', 'S', 'W', Version}
	b = binary.BigEndian.AppendUint32(b, uint32(width))
	b = binary.BigEndian.AppendUint32(b, uint32(len(epochs)))
	for _, n := range epochs {
		ep := o.epochs[n]
		ids := make([]SenderID, 0, len(ep.senders))
		for id := range ep.senders {
			ids = append(ids, id)
		}
		slices.SortFunc(ids, func(a, b SenderID) int { return compareIDs(a, b) })
		b = binary.BigEndian.AppendUint32(b, n)
		b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
		for _, id := range ids {
			st := ep.senders[id]
			b = append(b, id[:]...)
			b = binary.BigEndian.AppendUint64(b, st.win.max)
			for _, w := range st.win.bits {
				b = binary.BigEndian.AppendUint64(b, w)
			}
		}
	}
	return b
}

func compareIDs(a, b SenderID) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

func (o *Opener) windowWidth() int { return (o.opts.Window + 63) / 64 * 64 }

// savedEpoch is one epoch's windows as decoded from state.
type savedEpoch struct {
	epoch   uint32
	senders []savedSender
}

type savedSender struct {
	id  SenderID
	win window
}

// parseState decodes Opener state strictly.
func parseState(b []byte) (width int, epochs []savedEpoch, err error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w opener state: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	if len(b) < stateHdrLen {
		return 0, nil, bad("%d bytes", len(b))
	}
	if b[0] != 'C' || b[1] != 'S' || b[2] != 'W' {
		return 0, nil, bad("bad magic %q", b[:3])
	}
	if b[3] != Version {
		return 0, nil, bad("version %d, want %d", b[3], Version)
	}
	w := binary.BigEndian.Uint32(b[4:])
	if w == 0 || w%64 != 0 || w > 1<<20 {
		return 0, nil, bad("window width %d", w)
	}
	words := int(w / 64)
	n := binary.BigEndian.Uint32(b[8:])
	b = b[stateHdrLen:]
	senderLen := SenderIDSize + 8 + 8*words
	for i := range n {
		if len(b) < 8 {
			return 0, nil, bad("epoch %d truncated", i)
		}
		se := savedEpoch{epoch: binary.BigEndian.Uint32(b)}
		if i > 0 && se.epoch <= epochs[len(epochs)-1].epoch {
			return 0, nil, bad("epochs not in strictly increasing order")
		}
		count := binary.BigEndian.Uint32(b[4:])
		b = b[8:]
		if uint64(count)*uint64(senderLen) > uint64(len(b)) {
			return 0, nil, bad("epoch %d: %d senders overrun the state", se.epoch, count)
		}
		for j := range count {
			var s savedSender
			copy(s.id[:], b)
			if j > 0 && compareIDs(s.id, se.senders[j-1].id) <= 0 {
				return 0, nil, bad("epoch %d: senders not in strictly increasing order", se.epoch)
			}
			s.win.max = binary.BigEndian.Uint64(b[SenderIDSize:])
			s.win.bits = make([]uint64, words)
			for k := range words {
				s.win.bits[k] = binary.BigEndian.Uint64(b[SenderIDSize+8+8*k:])
			}
			if s.win.max == 0 || s.win.bits[0]&1 == 0 {
				return 0, nil, bad("epoch %d sender %s: highest sequence number not marked seen", se.epoch, s.id)
			}
			// No bits for sequence numbers below 1.
			for d := s.win.max; d < uint64(w); d++ {
				if s.win.bits[d/64]&(1<<(d%64)) != 0 {
					return 0, nil, bad("epoch %d sender %s: window marks sequence numbers below 1", se.epoch, s.id)
				}
			}
			se.senders = append(se.senders, s)
			b = b[senderLen:]
		}
		epochs = append(epochs, se)
	}
	if len(b) != 0 {
		return 0, nil, bad("%d bytes after the last epoch", len(b))
	}
	return int(w), epochs, nil
}

// RestoreState merges windows saved by [Opener.MarshalState] into o: for
// every epoch o still accepts, each saved sender's window is merged with
// what o has seen of that sender since. Epochs o does not know (retired or
// never added) are skipped. The state must come from an Opener with the same
// window width. Nothing changes if it fails.
func (o *Opener) RestoreState(b []byte) error {
	width, epochs, err := parseState(b)
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if width != o.windowWidth() {
		return fmt.Errorf("secure: opener state has windows of %d, this opener %d", width, o.windowWidth())
	}
	o.expireLocked()
	// Check the sender limit first, so a failure changes nothing.
	for _, se := range epochs {
		ep, ok := o.epochs[se.epoch]
		if !ok {
			continue
		}
		added := 0
		for _, s := range se.senders {
			if ep.senders[s.id] == nil {
				added++
			}
		}
		if len(ep.senders)+added > o.opts.MaxSenders {
			return fmt.Errorf("%w: restoring epoch %d of %q would track %d senders", ErrTooManySenders, se.epoch, o.address, len(ep.senders)+added)
		}
	}
	for _, se := range epochs {
		ep, ok := o.epochs[se.epoch]
		if !ok {
			continue
		}
		for _, s := range se.senders {
			if st := ep.senders[s.id]; st != nil {
				st.win.merge(s.win)
				continue
			}
			// The subkey is derived on first use (see open).
			ep.senders[s.id] = &senderState{win: s.win}
		}
	}
	return nil
}
