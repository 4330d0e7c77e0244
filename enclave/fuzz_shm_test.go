//go:build linux

package enclave

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/boundary/shm"
	"github.com/cloister-dev/cloister/bus"
)

// The region layout as package boundary/shm documents it: what a hostile
// image sees and may write.
const (
	layoutRingCtl  = 256 // + 512·ring
	layoutCtlSize  = 512
	layoutTail     = 0
	layoutHead     = 64
	layoutRingData = shm.HeaderSize // + N·ring
)

// hostileRing is a backend whose "enclave" runs in the test: it takes the
// shared-memory region and does the handshake properly, then plays
// whatever it was given into the region.
type hostileRing struct {
	play func(mem []byte, ringSize int, conn *boundary.Conn, doorbell *os.File)
}

func (hostileRing) Name() string   { return "process" }
func (hostileRing) Isolated() bool { return true }

func (b hostileRing) Launch(ctx context.Context, spec LaunchSpec) (Process, error) {
	reg, f, err := shm.Create(shm.MinRingSize, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ecallR, ecallW, ocallR, ocallW, err := boundaryPipes()
	if err != nil {
		reg.Close()
		return nil, err
	}
	host, err := shm.NewStream(reg, shm.Host, ocallR, ecallW, shm.Options{HandshakeBytes: boundary.HelloSize})
	if err != nil {
		return nil, err
	}
	encReg, err := shm.Open(f)
	if err != nil {
		return nil, err
	}
	raw, err := syscall.Mmap(int(f.Fd()), 0, shm.RegionSize(shm.MinRingSize), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	enc, err := shm.NewStream(encReg, shm.Enclave, ecallR, ocallW, shm.Options{HandshakeBytes: boundary.HelloSize})
	if err != nil {
		return nil, err
	}
	p := &hostileProc{host: host, enc: enc, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer syscall.Munmap(raw)
		defer enc.Close()
		c, err := boundary.NewConn(context.Background(), enc, enc, boundary.RoleEnclave, boundary.Options{})
		if err != nil {
			return
		}
		if _, err := c.Recv(); err != nil { // Init
			return
		}
		b.play(raw, shm.MinRingSize, c, ocallW) // the enclave's pipe rings the host's doorbell
	}()
	return p, nil
}

type hostileProc struct {
	host *shm.Stream
	enc  *shm.Stream
	done chan struct{}
}

func (p *hostileProc) Streams() (io.ReadCloser, io.WriteCloser) { return p.host, p.host }
func (p *hostileProc) PID() int                                 { return 0 }
func (p *hostileProc) Done() <-chan struct{}                    { return p.done }
func (p *hostileProc) Err() error                               { return nil }
func (p *hostileProc) Transport() string                        { return p.host.Transport() }
func (p *hostileProc) Kill() error {
	p.enc.Close()
	return nil
}

// FuzzHostFromHostileRing is FuzzHostFromHostileEnclave over shared memory:
// after a correct handshake the enclave writes arbitrary bytes into its
// ring, arbitrary positions (its ring's tail, the host ring's head), rings
// the doorbell and exits. The host must neither crash, nor hang, nor read
// outside the region.
func FuzzHostFromHostileRing(f *testing.F) {
	frames := func(ms ...boundary.Message) []byte {
		var b []byte
		for _, m := range ms {
			b = boundary.AppendFrame(b, m)
		}
		return b
	}
	ready := frames(&boundary.Ready{Workers: 1, Addresses: []string{"a.b"}})
	f.Add(ready, uint64(len(ready)), uint64(0))
	all := frames(&boundary.Ready{Workers: 1, Addresses: []string{"a.b"}},
		&boundary.Reply{Token: 7, Body: []byte("x")}, &boundary.Fail{Token: 1, Kind: boundary.FailPanic},
		&boundary.StorePut{CallID: 1, Key: "k", Blob: []byte("b")}, &boundary.HealthStatus{ID: 99}, &boundary.Stopped{})
	f.Add(all, uint64(len(all)), uint64(0))
	f.Add(ready, uint64(shm.MinRingSize+1), uint64(0))          // tail beyond the ring
	f.Add(ready, uint64(len(ready)), uint64(1<<40))             // host ring's head ahead of its tail
	f.Add(ready, ^uint64(0), ^uint64(0))                        // everything wrapped
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, uint64(4), uint64(0)) // an absurd frame length
	f.Fuzz(func(t *testing.T, stream []byte, tail, head uint64) {
		play := func(mem []byte, n int, c *boundary.Conn, bell *os.File) {
			copy(mem[layoutRingData+n:layoutRingData+2*n], stream)
			atomic.StoreUint64((*uint64)(unsafe.Pointer(&mem[layoutRingCtl+layoutCtlSize+layoutTail])), tail)
			atomic.StoreUint64((*uint64)(unsafe.Pointer(&mem[layoutRingCtl+layoutHead])), head)
			bell.Write([]byte{1})
			time.Sleep(time.Millisecond) // let the host read before the stream ends
		}
		b, _ := bus.New()
		defer b.Close(context.Background())
		store, _ := NewFileStore(filepath.Join(t.TempDir(), "state"))
		e, err := New(Config{Simulation: testRoot, Name: "hostile", Image: testImage, Backend: hostileRing{play: play}, Bus: b, Store: store,
			StartTimeout: 2 * time.Second, RestartBackoff: time.Hour, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			if errors.Is(err, ErrStopped) {
				t.Fatal(err)
			}
			return
		}
		probeAndStop(t, e)
	})
}

// TestHostileRingHarness checks that the fuzz target's enclave reaches
// the host when it plays by the rules, and that a broken position fails it.
func TestHostileRingHarness(t *testing.T) {
	ready := boundary.AppendFrame(nil, &boundary.Ready{Workers: 1, Addresses: []string{"a.b"}})
	for _, c := range []struct {
		tail uint64
		ok   bool
	}{{uint64(len(ready)), true}, {shm.MinRingSize + 1, false}} {
		play := func(mem []byte, n int, conn *boundary.Conn, bell *os.File) {
			copy(mem[layoutRingData+n:], ready)
			atomic.StoreUint64((*uint64)(unsafe.Pointer(&mem[layoutRingCtl+layoutCtlSize+layoutTail])), c.tail)
			bell.Write([]byte{1})
			if c.ok {
				conn.Recv() // until the host stops it
			}
		}
		e, err := New(Config{Simulation: testRoot, Name: "hostile", Image: testImage, Backend: hostileRing{play: play},
			StartTimeout: 5 * time.Second, RestartBackoff: time.Hour, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		err = e.Start(context.Background())
		if c.ok {
			if err != nil || e.Transport() != "shm" {
				t.Fatalf("start: %v, transport %q", err, e.Transport())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := e.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			cancel()
			continue
		}
		if err == nil || !contains(err.Error(), "corrupted") {
			t.Fatalf("start with a broken tail: %v, want the ring named as corrupted", err)
		}
		t.Log(err)
	}
}
