package secure

// DefaultWindow is the default width of a replay window, in sequence numbers.
const DefaultWindow = 1024

// window is a sliding replay window: max is the highest sequence number
// accepted, and bit i of bits says whether max-i was accepted.
type window struct {
	max  uint64
	bits []uint64
}

func newWindow(width int) window {
	return window{bits: make([]uint64, (width+63)/64)}
}

func (w *window) width() uint64 { return uint64(len(w.bits)) * 64 }

// check says whether seq may be accepted, without changing the window.
func (w *window) check(seq uint64) error {
	if seq > w.max {
		return nil
	}
	d := w.max - seq
	if d >= w.width() {
		return ErrTooOld
	}
	if w.bits[d/64]&(1<<(d%64)) != 0 {
		return ErrReplay
	}
	return nil
}

// accept records seq, which check allowed. It returns the first and last
// sequence number skipped by a jump ahead (0, 0 when none) and how many
// sequence numbers left the window without having been accepted.
func (w *window) accept(seq uint64) (skipFrom, skipTo, expired uint64) {
	if seq <= w.max {
		d := w.max - seq
		w.bits[d/64] |= 1 << (d % 64)
		return 0, 0, 0
	}
	shift := seq - w.max
	if shift > 1 {
		skipFrom, skipTo = w.max+1, seq-1
	}
	// Sequence numbers from the old bottom of the window up to (excluding)
	// the new bottom become unacceptable; count those never accepted.
	width := w.width()
	oldBottom, newBottom := uint64(1), uint64(1)
	if w.max >= width {
		oldBottom = w.max - width + 1
	}
	if seq >= width {
		newBottom = seq - width + 1
	}
	for s := oldBottom; s < newBottom && s <= w.max; s++ {
		d := w.max - s
		if w.bits[d/64]&(1<<(d%64)) == 0 {
			expired++
		}
	}
	if newBottom > w.max+1 {
		expired += newBottom - (w.max + 1)
	}
	w.shift(shift)
	w.max = seq
	w.bits[0] |= 1
	return skipFrom, skipTo, expired
}

// shift moves every bit n positions further from max.
func (w *window) shift(n uint64) {
	if n >= w.width() {
		clear(w.bits)
		return
	}
	words, bitsN := int(n/64), uint(n%64)
	for i := len(w.bits) - 1; i >= 0; i-- {
		var v uint64
		if j := i - words; j >= 0 {
			v = w.bits[j] << bitsN
			if bitsN > 0 && j-1 >= 0 {
				v |= w.bits[j-1] >> (64 - bitsN)
			}
		}
		w.bits[i] = v
	}
}

// merge adds what o saw to w (both of the same width): the result has the
// higher top, and every sequence number either marked that still fits.
func (w *window) merge(o window) {
	if o.max > w.max {
		old := window{max: w.max, bits: append([]uint64(nil), w.bits...)}
		w.max = o.max
		copy(w.bits, o.bits)
		o = old
	}
	shift := w.max - o.max
	width := w.width()
	for d := uint64(0); d < width; d++ {
		if o.bits[d/64]&(1<<(d%64)) == 0 {
			continue
		}
		if nd := d + shift; nd < width && nd >= d {
			w.bits[nd/64] |= 1 << (nd % 64)
		}
	}
}
