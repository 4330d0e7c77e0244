package shm

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"
)

// Layout constants (see the package documentation).
const (
	// Magic opens a region.
	Magic = "CLSHMRG\n"
	// LayoutVersion is the region layout this package speaks.
	LayoutVersion = 1
	// AttachValue is what the enclave stores in the attach word when it
	// takes the region.
	AttachValue uint32 = 0x41545443 // "ATTC"
	// HeaderSize is the size of the header page before the rings' data.
	HeaderSize = 4096
	// MinRingSize and MaxRingSize bound the data size of one ring.
	MinRingSize = 4 << 10
	MaxRingSize = 64 << 20
	// MaxPoll bounds the polling budget a region may suggest.
	MaxPoll = time.Millisecond
	// DefaultRingSize is the data size of each ring of a region Create
	// makes when asked for 0: as much as a boundary pipe buffers.
	DefaultRingSize = 1 << 20
)

const (
	offMagic   = 0
	offVersion = 8
	offSize    = 12
	offAttach  = 16
	offPoll    = 20
	offRings   = 256
	ctlSize    = 512
	ctlTail    = 0
	ctlHead    = 64
	ctlCSleep  = 128
	ctlPSleep  = 192
)

// Ring indices.
const (
	ringECALL = 0 // host → enclave
	ringOCALL = 1 // enclave → host
)

// ErrUnsupported is wrapped when shared memory is not available on this
// platform.
var ErrUnsupported = errors.New("shm: shared memory boundary not supported on this platform")

// ErrClosed is returned by operations on a closed Stream.
var ErrClosed = errors.New("shm: stream closed")

// ErrPeerGone is wrapped by Write when the peer closed its pipe (it exited).
var ErrPeerGone = errors.New("shm: peer gone")

// HeaderError says why a region's header was refused.
type HeaderError struct {
	Field  string // "size", "magic", "version", "ring size"
	Detail string
}

func (e *HeaderError) Error() string { return "shm: bad region " + e.Field + ": " + e.Detail }

// CorruptError reports a ring whose shared positions the peer made
// inconsistent. It ends the stream.
type CorruptError struct {
	Ring       string // "ECALL" or "OCALL"
	Field      string // the position read from the region: "tail" or "head"
	Tail, Head uint64
	Size       uint64
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("shm: %s ring corrupted by the peer: %s out of range (tail %d, head %d, size %d)", e.Ring, e.Field, e.Tail, e.Head, e.Size)
}

// Region is a mapped shared-memory region holding the two rings.
type Region struct {
	mem   []byte
	size  uint64        // N
	poll  time.Duration // the polling budget the host suggests
	unmap func([]byte) error
}

// RegionSize returns the size in bytes of a region whose rings hold
// ringSize bytes each.
func RegionSize(ringSize int) int { return HeaderSize + 2*ringSize }

func validRingSize(n uint64) bool {
	return n >= MinRingSize && n <= MaxRingSize && n&(n-1) == 0
}

// initHeader writes a fresh header (host side, before the child starts).
func initHeader(mem []byte, ringSize int, poll time.Duration) {
	copy(mem[offMagic:], Magic)
	*(*uint32)(unsafe.Pointer(&mem[offVersion])) = LayoutVersion
	*(*uint32)(unsafe.Pointer(&mem[offSize])) = uint32(ringSize)
	*(*uint32)(unsafe.Pointer(&mem[offPoll])) = encodePoll(poll)
}

// encodePoll stores a polling budget: 0 = the default, ^0 = never poll,
// otherwise nanoseconds (at most MaxPoll).
func encodePoll(d time.Duration) uint32 {
	switch {
	case d == 0:
		return 0
	case d < 0:
		return ^uint32(0)
	}
	return uint32(min(d, MaxPoll))
}

func decodePoll(v uint32) time.Duration {
	switch {
	case v == 0:
		return 0
	case v == ^uint32(0):
		return -1
	}
	return min(time.Duration(v), MaxPoll)
}

// checkHeader validates a mapped region of len(mem) bytes and returns its
// ring size. It reads each header field once.
func checkHeader(mem []byte) (uint64, error) {
	if len(mem) < RegionSize(MinRingSize) || len(mem) > RegionSize(MaxRingSize) {
		return 0, &HeaderError{Field: "size", Detail: fmt.Sprintf("%d bytes outside [%d, %d]", len(mem), RegionSize(MinRingSize), RegionSize(MaxRingSize))}
	}
	var magic [8]byte
	copy(magic[:], mem[offMagic:])
	if string(magic[:]) != Magic {
		return 0, &HeaderError{Field: "magic", Detail: fmt.Sprintf("%q", magic[:])}
	}
	if v := atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[offVersion]))); v != LayoutVersion {
		return 0, &HeaderError{Field: "version", Detail: fmt.Sprintf("layout %d, this side speaks %d", v, LayoutVersion)}
	}
	n := uint64(atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[offSize]))))
	if !validRingSize(n) {
		return 0, &HeaderError{Field: "ring size", Detail: fmt.Sprintf("%d: want a power of two in [%d, %d]", n, MinRingSize, MaxRingSize)}
	}
	if uint64(len(mem)) < HeaderSize+2*n {
		return 0, &HeaderError{Field: "ring size", Detail: fmt.Sprintf("two rings of %d bytes do not fit in %d bytes", n, len(mem))}
	}
	return n, nil
}

// Poll returns the polling budget the host suggested in the header (0: the
// default; negative: never poll), at most MaxPoll.
func (r *Region) Poll() time.Duration { return r.poll }

// RingSize returns the data size of each ring.
func (r *Region) RingSize() int { return int(r.size) }

func (r *Region) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&r.mem[off])) }
func (r *Region) u64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&r.mem[off])) }

// attach marks the region as taken by the enclave.
func (r *Region) attach() { atomic.StoreUint32(r.u32(offAttach), AttachValue) }

// attached reports whether the enclave took the region (read once).
func (r *Region) attached() bool { return atomic.LoadUint32(r.u32(offAttach)) == AttachValue }

// ring returns the view of ring i.
func (r *Region) ring(i int) ring {
	ctl := offRings + i*ctlSize
	data := HeaderSize + i*int(r.size)
	name := "ECALL"
	if i == ringOCALL {
		name = "OCALL"
	}
	return ring{
		name: name, tail: r.u64(ctl + ctlTail), head: r.u64(ctl + ctlHead),
		cSleep: r.u32(ctl + ctlCSleep), pSleep: r.u32(ctl + ctlPSleep),
		data: r.mem[data : data+int(r.size) : data+int(r.size)], size: r.size, mask: r.size - 1,
	}
}

// Close unmaps the region. Use Stream.Close for a region in use by a
// Stream.
func (r *Region) Close() error {
	if r.mem == nil {
		return nil
	}
	mem := r.mem
	r.mem = nil
	if r.unmap == nil {
		return nil
	}
	if err := r.unmap(mem); err != nil {
		return fmt.Errorf("shm: unmap: %w", err)
	}
	return nil
}

// ring is one direction's view of the region. Sizes come from the
// validated header, held privately; only the positions and flags are read
// from shared memory.
type ring struct {
	name           string
	tail, head     *uint64
	cSleep, pSleep *uint32
	data           []byte
	size, mask     uint64
	pos            uint64 // this side's own position: head (consumer) or tail (producer)
}

// readable returns how many bytes the consumer may read, after checking the
// producer's tail.
func (r *ring) readable() (uint64, error) {
	tail := atomic.LoadUint64(r.tail)
	n := tail - r.pos
	if n > r.size {
		return 0, &CorruptError{Ring: r.name, Field: "tail", Tail: tail, Head: r.pos, Size: r.size}
	}
	return n, nil
}

// writable returns how many bytes the producer may write, after checking
// the consumer's head.
func (r *ring) writable() (uint64, error) {
	head := atomic.LoadUint64(r.head)
	used := r.pos - head
	if used > r.size {
		return 0, &CorruptError{Ring: r.name, Field: "head", Tail: r.pos, Head: head, Size: r.size}
	}
	return r.size - used, nil
}

// copyOut copies up to n readable bytes into p and publishes the new head.
func (r *ring) copyOut(p []byte, n uint64) int {
	if uint64(len(p)) < n {
		n = uint64(len(p))
	}
	off := r.pos & r.mask
	k := copy(p[:n], r.data[off:])
	if uint64(k) < n {
		copy(p[k:n], r.data)
	}
	r.pos += n
	atomic.StoreUint64(r.head, r.pos)
	return int(n)
}

// copyIn copies up to n bytes of free space from p and publishes the new
// tail.
func (r *ring) copyIn(p []byte, n uint64) int {
	if uint64(len(p)) < n {
		n = uint64(len(p))
	}
	off := r.pos & r.mask
	k := copy(r.data[off:], p[:n])
	if uint64(k) < n {
		copy(r.data, p[k:n])
	}
	r.pos += n
	atomic.StoreUint64(r.tail, r.pos)
	return int(n)
}
