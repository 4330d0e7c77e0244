//go:build linux

package shm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const hs = 16 // the boundary hello's size, as boundary.HelloSize

// pair makes a region with rings of ringSize bytes, the two boundary pipes,
// and the host's stream; the enclave's end is a Stream when attach is set,
// the bare pipes otherwise (an image that ignores the offer).
func pair(t testing.TB, ringSize int, attach bool) (host *Stream, enc io.ReadWriteCloser, encReg *Region) {
	t.Helper()
	reg, f, err := Create(ringSize, 0)
	if err != nil {
		t.Fatal(err)
	}
	ecallR, ecallW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ocallR, ocallW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	host, err = NewStream(reg, Host, ocallR, ecallW, Options{HandshakeBytes: hs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	if !attach {
		f.Close()
		enc = struct {
			io.Reader
			io.Writer
			io.Closer
		}{ecallR, ocallW, closers{ecallR, ocallW}}
		t.Cleanup(func() { enc.Close() })
		return host, enc, nil
	}
	encReg, err = Open(f) // a second mapping, as the child would have
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	es, err := NewStream(encReg, Enclave, ecallR, ocallW, Options{HandshakeBytes: hs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { es.Close() })
	return host, es, encReg
}

type closers []io.Closer

func (c closers) Close() error {
	var err error
	for _, x := range c {
		err = errors.Join(err, x.Close())
	}
	return err
}

// handshake sends a hello each way, as boundary.NewConn does.
func handshake(t testing.TB, host, enc io.ReadWriter) {
	t.Helper()
	hello := bytes.Repeat([]byte{'h'}, hs)
	if _, err := host.Write(hello); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, hs)
	if _, err := io.ReadFull(enc, got); err != nil || !bytes.Equal(got, hello) {
		t.Fatalf("enclave read hello %q, %v", got, err)
	}
	hello = bytes.Repeat([]byte{'e'}, hs)
	if _, err := enc.Write(hello); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(host, got); err != nil || !bytes.Equal(got, hello) {
		t.Fatalf("host read hello %q, %v", got, err)
	}
}

// pump writes n random bytes to w in random pieces and returns their hash.
func pump(w io.Writer, n int, seed uint64) ([32]byte, error) {
	rng := rand.New(rand.NewPCG(seed, 1))
	h := sha256.New()
	buf := make([]byte, 20000)
	for n > 0 {
		k := min(n, 1+rng.IntN(len(buf)))
		for i := range buf[:k] {
			buf[i] = byte(rng.Uint32())
		}
		h.Write(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return [32]byte{}, err
		}
		n -= k
	}
	return [32]byte(h.Sum(nil)), nil
}

func drain(r io.Reader, n int) ([32]byte, error) {
	h := sha256.New()
	_, err := io.CopyN(h, r, int64(n))
	return [32]byte(h.Sum(nil)), err
}

func TestStreamCarriesBytesBothWays(t *testing.T) {
	for _, ringSize := range []int{MinRingSize, DefaultRingSize} {
		host, enc, _ := pair(t, ringSize, true)
		handshake(t, host, enc)
		if got := host.Transport(); got != "shm" {
			t.Fatalf("transport %q, want shm", got)
		}
		const n = 3 << 20 // many times round the small ring
		type result struct {
			sum [32]byte
			err error
		}
		res := make(chan result, 4)
		run := func(f func() ([32]byte, error)) {
			go func() { s, err := f(); res <- result{s, err} }()
		}
		run(func() ([32]byte, error) { return pump(host, n, 1) })
		run(func() ([32]byte, error) { return drain(enc, n) })
		run(func() ([32]byte, error) { return pump(enc, n, 2) })
		run(func() ([32]byte, error) { return drain(host, n) })
		sums := map[[32]byte]int{}
		for range 4 {
			r := <-res
			if r.err != nil {
				t.Fatalf("ring %d: %v", ringSize, r.err)
			}
			sums[r.sum]++
		}
		for s, c := range sums {
			if c != 2 {
				t.Fatalf("ring %d: bytes changed on the way (%x seen %d times)", ringSize, s[:4], c)
			}
		}
	}
}

func TestHostStaysOnPipesWhenTheEnclaveDeclines(t *testing.T) {
	host, enc, _ := pair(t, 0, false)
	handshake(t, host, enc)
	if got := host.Transport(); got != "pipe" {
		t.Fatalf("transport %q, want pipe", got)
	}
	go pump(host, 100000, 3)
	want, _ := pump(io.Discard, 100000, 3)
	if got, err := drain(enc, 100000); err != nil || got != want {
		t.Fatalf("pipe fallback: %v", err)
	}
}

func TestPeerExitIsEndOfStreamAfterWhatItWrote(t *testing.T) {
	host, enc, _ := pair(t, 0, true)
	handshake(t, host, enc)
	if _, err := enc.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	enc.Close()
	got, err := io.ReadAll(host)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v; want the last words, then EOF", got, err)
	}
	// A writer whose ring is full learns the peer is gone.
	big := make([]byte, 2*DefaultRingSize)
	if _, err := host.Write(big); !errors.Is(err, ErrPeerGone) {
		t.Fatalf("write to an exited peer: %v, want ErrPeerGone", err)
	}
}

func TestCloseWakesASleepingRead(t *testing.T) {
	host, enc, _ := pair(t, 0, true)
	handshake(t, host, enc)
	done := make(chan error, 1)
	go func() {
		_, err := host.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it poll, then sleep (not a timing assertion)
	host.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if _, err := host.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// poke stores v at a ring control field of reg, as a hostile peer would.
func poke(reg *Region, ringIdx, field int, v uint64) {
	atomic.StoreUint64(reg.u64(offRings+ringIdx*ctlSize+field), v)
}

func TestHostileRingPositionsAreErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		ring  int
		field int
		v     uint64
		read  bool
	}{
		{"tail beyond the ring", ringOCALL, ctlTail, DefaultRingSize + 1, true},
		{"tail behind the head", ringOCALL, ctlTail, ^uint64(0), true},
		{"head ahead of the tail", ringECALL, ctlHead, 1, false},
		{"head far behind", ringECALL, ctlHead, ^uint64(0) - DefaultRingSize, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			host, enc, encReg := pair(t, 0, true)
			handshake(t, host, enc)
			poke(encReg, c.ring, c.field, c.v)
			var err error
			if c.read {
				_, err = host.Read(make([]byte, 100))
			} else {
				_, err = host.Write(make([]byte, 100))
			}
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *CorruptError", err)
			}
			t.Log(err)
		})
	}
}

func TestOpenRefusesBadRegions(t *testing.T) {
	dir := t.TempDir()
	good := func() []byte {
		p := filepath.Join(t.TempDir(), "r")
		r, err := CreateFile(p, MinRingSize, 0)
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		name  string
		edit  func([]byte) []byte
		field string
	}{
		{"empty", func([]byte) []byte { return nil }, "size"},
		{"magic", func(b []byte) []byte { b[0] = 'X'; return b }, "magic"},
		{"version", func(b []byte) []byte { b[offVersion] = 9; return b }, "version"},
		{"ring size not a power of two", func(b []byte) []byte { b[offSize] = 1; return b }, "ring size"},
		{"rings beyond the file", func(b []byte) []byte { b[offSize+2] = 1; return b }, "ring size"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name)
			if err := os.WriteFile(p, c.edit(good()), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := OpenOffer(p)
			var he *HeaderError
			if !errors.As(err, &he) || he.Field != c.field {
				t.Fatalf("got %v, want a header error on %s", err, c.field)
			}
		})
	}
	if r, err := OpenOffer(filepath.Join(dir, "missing")); err == nil {
		r.Close()
		t.Fatal("opened a missing region")
	}
	if _, err := OpenOffer("not-a-number"); err == nil {
		t.Fatal("accepted a bad offer")
	}
}

func TestAdaptiveBudget(t *testing.T) {
	max := 50 * time.Microsecond
	b := max
	for range 10 {
		b = adapt(b, time.Second, max) // long sleeps: stop polling
	}
	if b > time.Microsecond {
		t.Fatalf("budget %v after long sleeps", b)
	}
	b = adapt(b, 10*time.Microsecond, max) // a short sleep: polling would have paid
	if b != 20*time.Microsecond {
		t.Fatalf("budget %v after a 10µs sleep, want 20µs", b)
	}
	if b = adapt(b, 40*time.Microsecond, max); b != max {
		t.Fatalf("budget %v, want the cap %v", b, max)
	}
	if adapt(max, time.Microsecond, 0) != 0 {
		t.Fatal("polling while disabled")
	}
}

// FuzzRingFromHostilePeer lets a peer write arbitrary positions and bytes
// into the region: the host reads and writes without crashing, and every
// byte it returns comes from the ring.
func FuzzRingFromHostilePeer(f *testing.F) {
	f.Add(uint64(5), uint64(0), []byte("hello"))
	f.Add(uint64(DefaultRingSize+1), uint64(0), []byte{})
	f.Add(uint64(1<<63), uint64(1<<63), []byte{1, 2, 3})
	f.Add(uint64(0), uint64(7), []byte{})
	f.Add(uint64(DefaultRingSize), uint64(0), bytes.Repeat([]byte{0xff}, 4096))
	f.Fuzz(func(t *testing.T, tail, head uint64, data []byte) {
		host, enc, encReg := pair(t, MinRingSize, true)
		handshake(t, host, enc)
		r := encReg.ring(ringOCALL)
		copy(r.data, data)
		want := make([]byte, MinRingSize)
		copy(want, data)
		poke(encReg, ringOCALL, ctlTail, tail)
		poke(encReg, ringECALL, ctlHead, head)
		enc.Close() // the peer is gone: an empty ring ends the stream
		var got []byte
		buf := make([]byte, 1000)
		var err error
		for {
			var n int
			n, err = host.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		var ce *CorruptError
		switch {
		case errors.As(err, &ce):
		case errors.Is(err, io.EOF):
			if uint64(len(got)) != tail || !bytes.Equal(got, want[:len(got)]) {
				t.Fatalf("read %d bytes, the peer published %d", len(got), tail)
			}
		default:
			t.Fatalf("read: %v", err)
		}
		timer := time.AfterFunc(100*time.Millisecond, func() { host.Close() }) // a full ring waits
		defer timer.Stop()
		if _, err := host.Write(make([]byte, 3*MinRingSize)); err == nil && head <= uint64(MinRingSize)*4 {
			t.Fatalf("wrote 3 rings' worth to a peer that left (head %d)", head)
		}
	})
}

func TestTheRegionCannotBeResizedUnderTheHost(t *testing.T) {
	reg, f, err := Create(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	defer f.Close()
	if err := f.Truncate(0); err == nil {
		t.Fatal("an image could shrink the memfd under the host's mapping")
	}
	if err := f.Truncate(int64(RegionSize(DefaultRingSize)) * 2); err == nil {
		t.Fatal("an image could grow the memfd")
	}
}

// A region that is a plain file (Gramine's untrusted_shm) cannot be
// sealed: when it is truncated under the host, touching it is an error,
// not a crash.
func TestATruncatedRegionIsAnErrorNotACrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "region")
	reg, err := CreateFile(path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	encReg, err := Open(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ecallR, ecallW, _ := os.Pipe()
	ocallR, ocallW, _ := os.Pipe()
	host, _ := NewStream(reg, Host, ocallR, ecallW, Options{HandshakeBytes: hs})
	enc, _ := NewStream(encReg, Enclave, ecallR, ocallW, Options{HandshakeBytes: hs})
	defer host.Close()
	defer enc.Close()
	handshake(t, host, enc)
	if _, err := enc.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	_, err = host.Read(make([]byte, 10))
	if err == nil || !strings.Contains(err.Error(), "memory fault") {
		t.Fatalf("read of a truncated region: %v, want a memory fault error", err)
	}
	t.Log(err)
	if _, err := host.Write([]byte("x")); err == nil {
		t.Fatal("write to a truncated region succeeded")
	}
}
