package shm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// EnvRegion names the environment variable through which the host offers
// a region to an image: a file descriptor number ("5", process backend) or
// an absolute path (a file under Gramine's untrusted shared-memory mount).
// Unset: no offer, the boundary stays on the pipes.
const EnvRegion = "CLOISTER_BOUNDARY_SHM"

// DefaultPoll is the longest a side polls an empty ring (or a full one)
// before it sleeps, when Options.Poll is 0. The budget must exceed the
// time a doorbell takes to wake the peer (10 to 25 µs on a loaded 2-core
// VM): a sleep is judged "short, polling would have paid" against it, so
// with budgets of 5, 10 or 20 µs the polling switched itself off and a
// boundary round trip at one in flight took 11 to 32 µs, against 2.3 to
// 3.8 µs with 50 µs in the same run. It must also outlast the gap between
// requests of one client waiting for each answer, or each request pays two
// wake-ups: on the water hop at one request in flight (cloister bench
// --nodes 1,3 --concurrency 1,16, the same run), trusted p50 was 120 and
// 192 µs with 50 µs, 67 and 141 µs with 150 µs, 69 and 127 µs with 300 µs;
// at 16 in flight the three did not differ. An idle side stops polling
// after at most this long.
const DefaultPoll = 150 * time.Microsecond

// spaceRetry bounds a producer's sleep while the ring is full: a safety
// net in case the doorbell that frees it arrives while this side's reader
// is not sleeping on the pipe.
const spaceRetry = 200 * time.Microsecond

// Side is the side of a Stream.
type Side uint8

// Sides.
const (
	Host    Side = 1 // writes ring 0 (ECALLs), reads ring 1 (OCALLs)
	Enclave Side = 2 // reads ring 0, writes ring 1
)

// Options configure a Stream.
type Options struct {
	// HandshakeBytes is how many bytes cross the pipes each way before the
	// rings take over: the boundary hello (boundary.HelloSize). At least 1
	// on the host side, which decides when it has read them.
	HandshakeBytes int
	// Poll is the longest a side polls before it sleeps and needs the
	// doorbell (negative: never poll). The budget adapts below it. 0 takes
	// the region's suggestion (Region.Poll), else DefaultPoll.
	Poll time.Duration
}

// Stream is one side's byte stream over a region: the handshake crosses
// the pipes, then the rings carry everything (see the package
// documentation), or the pipes go on carrying everything when the enclave
// did not take the region. It is an io.ReadWriteCloser for
// boundary.NewConn. Read and Write may be called from different
// goroutines; each from one goroutine at a time.
type Stream struct {
	reg  *Region
	side Side
	in   *os.File // the peer's pipe: handshake, then doorbells and end of stream
	out  *os.File // this side's pipe
	raw  syscall.RawConn
	bell func(fd uintptr) bool
	one  [1]byte
	poll time.Duration

	life      sync.Mutex // guards active and unmapped
	active    int        // Reads and Writes in progress: the region stays mapped for them
	unmapped  bool
	closed    atomic.Bool
	closedCh  chan struct{}
	closeOnce sync.Once
	peerGone  atomic.Bool
	space     chan struct{} // the reader saw a doorbell: space may have freed up

	decided chan struct{} // closed once useRing is known
	useRing atomic.Bool

	rmu     sync.Mutex
	rx      ring
	rHS     int
	rBudget time.Duration
	dbuf    [512]byte // doorbells read at once: a peer ringing in bursts costs few reads

	wmu sync.Mutex
	tx  ring
	wHS int

	sleeps, bells, fullWaits atomic.Uint64
}

// Stats count how often a Stream had to sleep and wake its peer.
type Stats struct {
	// Sleeps: Read found the ring empty after polling and slept on the pipe.
	Sleeps uint64
	// Doorbells: this side woke the peer (wrote a byte on its pipe).
	Doorbells uint64
	// FullWaits: Write found the ring full and waited for space.
	FullWaits uint64
}

// Stats returns the stream's counters.
func (s *Stream) Stats() Stats {
	return Stats{Sleeps: s.sleeps.Load(), Doorbells: s.bells.Load(), FullWaits: s.fullWaits.Load()}
}

// NewStream returns side's stream over reg, with in the pipe the peer
// writes and out the pipe this side writes (both in non-blocking mode, so
// that Close interrupts a sleeping Read). On the enclave side it takes the
// region at once (stores AttachValue): call it before the handshake, and
// only when this side will use the rings. The Stream owns reg, in and out.
func NewStream(reg *Region, side Side, in, out *os.File, opts Options) (*Stream, error) {
	if side != Host && side != Enclave {
		return nil, fmt.Errorf("shm: invalid side %d", side)
	}
	if opts.HandshakeBytes < 0 || side == Host && opts.HandshakeBytes == 0 {
		return nil, fmt.Errorf("shm: handshake of %d bytes: the host needs at least one byte from the enclave to learn whether it took the region", opts.HandshakeBytes)
	}
	raw, err := out.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("shm: doorbell pipe: %w", err)
	}
	s := &Stream{reg: reg, side: side, in: in, out: out, raw: raw, one: [1]byte{1},
		closedCh: make(chan struct{}), space: make(chan struct{}, 1), decided: make(chan struct{}),
		rHS: opts.HandshakeBytes, wHS: opts.HandshakeBytes}
	s.bell = func(fd uintptr) bool {
		rawWrite(fd, s.one[:]) // never blocks: a full pipe holds doorbells enough
		return true
	}
	s.poll = opts.Poll
	if s.poll == 0 {
		s.poll = reg.Poll()
	}
	if s.poll == 0 {
		s.poll = DefaultPoll
	}
	if s.poll < 0 {
		s.poll = 0
	}
	s.rBudget = s.poll
	rx, tx := ringOCALL, ringECALL
	if side == Enclave {
		rx, tx = ringECALL, ringOCALL
		reg.attach()
		s.useRing.Store(true)
		close(s.decided)
	}
	s.rx, s.tx = reg.ring(rx), reg.ring(tx)
	return s, nil
}

// Transport returns "shm" once the rings carry the stream, "pipe" when the
// enclave did not take the region, and "" before the handshake decided.
func (s *Stream) Transport() string {
	select {
	case <-s.decided:
		if s.useRing.Load() {
			return "shm"
		}
		return "pipe"
	default:
		return ""
	}
}

// Read reads from the pipe during the handshake, then from the ring (or
// the pipe, when the enclave did not take the region). It returns io.EOF
// once the peer closed its pipe and the ring is empty, and a
// *CorruptError when the peer broke the ring's positions.
func (s *Stream) Read(p []byte) (int, error) {
	if !s.enter() {
		return 0, ErrClosed
	}
	defer s.exit()
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	if s.rHS > 0 {
		if len(p) > s.rHS {
			p = p[:s.rHS]
		}
		n, err := s.in.Read(p)
		s.rHS -= n
		if s.rHS == 0 && s.side == Host {
			// The enclave took the region before it wrote the hello just
			// read: the attach word is final. Read it once.
			ok, ferr := s.attached()
			s.useRing.Store(ok)
			close(s.decided)
			if err == nil {
				err = ferr
			}
		}
		return n, err
	}
	if !s.useRing.Load() {
		return s.in.Read(p)
	}
	return s.readRing(p)
}

// attached reads the attach word, guarded against faults.
func (s *Stream) attached() (ok bool, err error) {
	defer guardFaults(debug.SetPanicOnFault(true), &err)
	return s.reg.attached(), nil
}

func (s *Stream) readRing(p []byte) (n int, err error) {
	defer guardFaults(debug.SetPanicOnFault(true), &err)
	r := &s.rx
	var start time.Time
	looks := 0
	for {
		avail, err := r.readable()
		if err != nil {
			return 0, err
		}
		if avail > 0 {
			n = r.copyOut(p, avail)
			if atomic.LoadUint32(r.pSleep) != 0 && atomic.CompareAndSwapUint32(r.pSleep, 1, 0) {
				s.ringBell()
			}
			return n, nil
		}
		if s.peerGone.Load() {
			return 0, io.EOF
		}
		if s.closed.Load() {
			return 0, ErrClosed
		}
		if looks == 0 {
			start = time.Now()
		}
		if s.rBudget > 0 && time.Since(start) < s.rBudget {
			looks++
			giveCore(looks)
			continue
		}
		// Sleep: say so, look once more, then wait for the doorbell.
		atomic.StoreUint32(r.cSleep, 1)
		if avail, err := r.readable(); err != nil || avail > 0 {
			atomic.StoreUint32(r.cSleep, 0)
			looks = 0
			continue
		}
		s.sleeps.Add(1)
		t0 := time.Now()
		_, rerr := s.in.Read(s.dbuf[:])
		slept := time.Since(t0)
		atomic.StoreUint32(r.cSleep, 0)
		// Adapt the budget to a wake-up that brought data; a doorbell with
		// nothing behind it (a space doorbell, a peer ringing for nothing)
		// must not make this side poll longer.
		if avail, err := r.readable(); err == nil && avail > 0 {
			s.rBudget = adapt(s.rBudget, slept, s.poll)
		} else {
			s.rBudget /= 2
		}
		s.notifySpace()
		looks = 0
		if rerr != nil {
			if s.closed.Load() {
				return 0, ErrClosed
			}
			if errors.Is(rerr, io.EOF) {
				s.peerGone.Store(true) // drain what is left, then EOF
				s.notifySpace()
				continue
			}
			return 0, fmt.Errorf("shm: doorbell pipe: %w", rerr)
		}
	}
}

// adapt updates a polling budget after a sleep of slept: a sleep shorter
// than the longest budget means polling would have caught the data, so the
// budget grows to twice that; a longer one halves the budget.
func adapt(budget, slept, max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	if slept < max {
		b := 2 * slept
		if b < 2*budget {
			b = 2 * budget
		}
		if b < time.Microsecond {
			b = time.Microsecond
		}
		return min(b, max)
	}
	return budget / 2
}

// giveCore lets other goroutines run between looks at the ring, and every
// 64th look (every 5 to 15 µs) gives the processor to other threads and
// processes (the peer may need it to produce what this side waits for).
// Measured on a loaded 2-core VM: a sched_yield at every look made a round
// trip at one in flight 76 µs instead of 4 to 7 µs (the kernel hands the
// core to whoever else waits, for a whole slice); every 8th or every 64th
// look measured the same within the noise.
func giveCore(looks int) {
	if looks%64 == 0 {
		osYield()
	} else {
		runtime.Gosched()
	}
}

func (s *Stream) ringBell() {
	s.bells.Add(1)
	_ = s.raw.Write(s.bell)
}

func (s *Stream) notifySpace() {
	select {
	case s.space <- struct{}{}:
	default:
	}
}

// Write writes p to the pipe during the handshake, then to the ring (or the
// pipe). It returns once p is in the ring; it waits while the ring is full.
func (s *Stream) Write(p []byte) (n int, err error) {
	if !s.enter() {
		return 0, ErrClosed
	}
	defer s.exit()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for s.wHS > 0 && len(p) > 0 {
		k := min(len(p), s.wHS)
		m, err := s.out.Write(p[:k])
		n += m
		s.wHS -= m
		p = p[m:]
		if err != nil {
			return n, err
		}
	}
	if len(p) == 0 {
		return n, nil
	}
	select {
	case <-s.decided:
	case <-s.closedCh:
		return n, ErrClosed
	}
	if !s.useRing.Load() {
		m, err := s.out.Write(p)
		return n + m, err
	}
	m, err := s.writeRing(p)
	return n + m, err
}

func (s *Stream) writeRing(p []byte) (n int, err error) {
	defer guardFaults(debug.SetPanicOnFault(true), &err)
	w := &s.tx
	for len(p) > 0 {
		free, err := w.writable()
		if err != nil {
			return n, err
		}
		if free == 0 {
			s.fullWaits.Add(1)
			if err := s.waitSpace(); err != nil {
				return n, err
			}
			continue
		}
		k := w.copyIn(p, free)
		n += k
		p = p[k:]
		if atomic.LoadUint32(w.cSleep) != 0 && atomic.CompareAndSwapUint32(w.cSleep, 1, 0) {
			s.ringBell()
		}
	}
	return n, nil
}

// waitSpace waits until the ring has free space.
func (s *Stream) waitSpace() error {
	w := &s.tx
	start := time.Now()
	looks := 0
	for {
		if s.closed.Load() {
			return ErrClosed
		}
		if s.peerGone.Load() {
			return fmt.Errorf("%w: the %s ring is full and its reader exited", ErrPeerGone, w.name)
		}
		free, err := w.writable()
		if err != nil || free > 0 {
			return err
		}
		if time.Since(start) < s.poll {
			looks++
			giveCore(looks)
			continue
		}
		atomic.StoreUint32(w.pSleep, 1)
		if free, err := w.writable(); err != nil || free > 0 {
			atomic.StoreUint32(w.pSleep, 0)
			return err
		}
		t := time.NewTimer(spaceRetry)
		select {
		case <-s.space:
		case <-s.closedCh:
		case <-t.C:
		}
		t.Stop()
	}
}

// Close closes both pipes (the peer sees end of stream), wakes a sleeping
// Read or Write, and unmaps the region as soon as none is in progress.
func (s *Stream) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.closedCh)
		err = errors.Join(s.in.Close(), s.out.Close())
		s.life.Lock()
		if s.active == 0 {
			err = errors.Join(err, s.unmap())
		}
		s.life.Unlock()
	})
	return err
}

// enter registers a Read or Write, unless the stream is closed.
func (s *Stream) enter() bool {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed.Load() {
		return false
	}
	s.active++
	return true
}

// exit ends a Read or Write; the last one out of a closed stream unmaps
// the region. (Close does not wait for them: a Read blocked on a pipe
// that is not in non-blocking mode, such as stdin, would never return.)
func (s *Stream) exit() {
	s.life.Lock()
	defer s.life.Unlock()
	s.active--
	if s.active == 0 && s.closed.Load() {
		s.unmap()
	}
}

// unmap unmaps the region once; called with s.life held.
func (s *Stream) unmap() error {
	if s.unmapped {
		return nil
	}
	s.unmapped = true
	return s.reg.Close()
}

// guardFaults, deferred with the previous SetPanicOnFault setting, turns a
// memory fault while touching the region into an error.
func guardFaults(old bool, err *error) {
	debug.SetPanicOnFault(old)
	if r := recover(); r != nil {
		if f, ok := r.(interface{ Addr() uintptr }); ok {
			*err = fmt.Errorf("shm: memory fault at %#x on the shared region: %v", f.Addr(), r)
			return
		}
		panic(r)
	}
}

// OpenOffer opens the region an EnvRegion value names: a file descriptor
// number or an absolute path.
func OpenOffer(v string) (*Region, error) {
	if strings.HasPrefix(v, "/") {
		f, err := os.OpenFile(v, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("shm: %s=%q: %w", EnvRegion, v, err)
		}
		defer f.Close()
		return Open(f)
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 0 {
		return nil, fmt.Errorf("shm: %s=%q: want a descriptor number or an absolute path", EnvRegion, v)
	}
	f := os.NewFile(uintptr(fd), "boundary-shm")
	if f == nil {
		return nil, fmt.Errorf("shm: %s=%q: invalid descriptor", EnvRegion, v)
	}
	defer f.Close()
	return Open(f)
}
