//go:build linux

package shm

import (
	"fmt"
	"os"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	mfdCloexec      = 0x1
	mfdAllowSealing = 0x2
	fAddSeals       = 1024 + 9
	fSealSeal       = 0x1
	fSealShrink     = 0x2
	fSealGrow       = 0x4
)

// Create makes a region for rings of ringSize bytes each (DefaultRingSize
// when 0), suggesting the polling budget poll to the image (see
// Options.Poll), in a new memfd, sealed against shrinking and growing, and maps
// it. The returned file is the descriptor to hand to the child (for
// example in exec.Cmd.ExtraFiles); close it once the child started.
func Create(ringSize int, poll time.Duration) (*Region, *os.File, error) {
	if ringSize == 0 {
		ringSize = DefaultRingSize
	}
	if !validRingSize(uint64(ringSize)) {
		return nil, nil, fmt.Errorf("shm: ring size %d: want a power of two in [%d, %d]", ringSize, MinRingSize, MaxRingSize)
	}
	if sysMemfdCreate == 0 {
		return nil, nil, fmt.Errorf("%w: no memfd_create", ErrUnsupported)
	}
	name := []byte("cloister-boundary\x00")
	fd, _, e := syscall.Syscall(sysMemfdCreate, uintptr(unsafe.Pointer(&name[0])), mfdCloexec|mfdAllowSealing, 0)
	if e != 0 {
		return nil, nil, fmt.Errorf("shm: memfd_create: %w", e)
	}
	f := os.NewFile(fd, "cloister-boundary-shm")
	size := RegionSize(ringSize)
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("shm: size the region: %w", err)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, fAddSeals, fSealShrink|fSealGrow|fSealSeal); e != 0 {
		f.Close()
		return nil, nil, fmt.Errorf("shm: seal the region: %w", e)
	}
	mem, err := syscall.Mmap(int(fd), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("shm: map the region: %w", err)
	}
	initHeader(mem, ringSize, poll)
	return &Region{mem: mem, size: uint64(ringSize), poll: decodePoll(encodePoll(poll)), unmap: syscall.Munmap}, f, nil
}

// CreateFile makes a region like Create, in a new file at path (created
// exclusively, mode 0600) instead of a memfd: for an untrusted
// shared-memory mount (Gramine's untrusted_shm), which names files by path.
// A plain file cannot be sealed; the host's accesses to it are guarded
// against faults instead. Remove the file once the child has mapped it or
// exited.
func CreateFile(path string, ringSize int, poll time.Duration) (*Region, error) {
	if ringSize == 0 {
		ringSize = DefaultRingSize
	}
	if !validRingSize(uint64(ringSize)) {
		return nil, fmt.Errorf("shm: ring size %d: want a power of two in [%d, %d]", ringSize, MinRingSize, MaxRingSize)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shm: create the region: %w", err)
	}
	defer f.Close()
	size := RegionSize(ringSize)
	if err := f.Truncate(int64(size)); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("shm: size the region: %w", err)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("shm: map the region: %w", err)
	}
	initHeader(mem, ringSize, poll)
	return &Region{mem: mem, size: uint64(ringSize), poll: decodePoll(encodePoll(poll)), unmap: syscall.Munmap}, nil
}

// Open maps the region in f (an inherited descriptor or an opened file) and
// checks its header; the enclave side calls it. f may be closed afterwards.
func Open(f *os.File) (*Region, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shm: region: %w", err)
	}
	size := fi.Size()
	if size < int64(RegionSize(MinRingSize)) || size > int64(RegionSize(MaxRingSize)) {
		return nil, &HeaderError{Field: "size", Detail: fmt.Sprintf("%d bytes outside [%d, %d]", size, RegionSize(MinRingSize), RegionSize(MaxRingSize))}
	}
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("shm: region: %w", err)
	}
	var mem []byte
	var merr error
	if err := raw.Control(func(fd uintptr) {
		mem, merr = syscall.Mmap(int(fd), 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	}); err != nil {
		return nil, fmt.Errorf("shm: region: %w", err)
	}
	if merr != nil {
		return nil, fmt.Errorf("shm: map the region: %w", merr)
	}
	n, err := checkHeaderGuarded(mem)
	if err != nil {
		syscall.Munmap(mem)
		return nil, err
	}
	poll := decodePoll(atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[offPoll]))))
	return &Region{mem: mem, size: n, poll: poll, unmap: syscall.Munmap}, nil
}

// checkHeaderGuarded is checkHeader with memory faults (a region
// truncated under the mapping) turned into errors.
func checkHeaderGuarded(mem []byte) (n uint64, err error) {
	defer guardFaults(debug.SetPanicOnFault(true), &err)
	return checkHeader(mem)
}

func osYield() { syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) }
