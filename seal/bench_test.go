package seal

import (
	"os"
	"path/filepath"
	"testing"
)

func benchSeal(b *testing.B, n int) {
	s, err := NewSealer(testSource(b), PolicyMRENCLAVE)
	if err != nil {
		b.Fatal(err)
	}
	pt := make([]byte, n)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Seal(pt, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func benchUnseal(b *testing.B, n int) {
	s, err := NewSealer(testSource(b), PolicyMRENCLAVE)
	if err != nil {
		b.Fatal(err)
	}
	blob, _ := s.Seal(make([]byte, n), nil)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Unseal(blob, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal1KiB(b *testing.B)   { benchSeal(b, 1<<10) }
func BenchmarkSeal1MiB(b *testing.B)   { benchSeal(b, 1<<20) }
func BenchmarkUnseal1KiB(b *testing.B) { benchUnseal(b, 1<<10) }
func BenchmarkUnseal1MiB(b *testing.B) { benchUnseal(b, 1<<20) }

// BenchmarkUnsealVersion1 opens a blob of the older format, which derives a
// key per blob: the cost every Seal and Unseal paid before version 2.
func BenchmarkUnsealVersion1(b *testing.B) {
	s, err := NewSealer(testSource(b), PolicyMRENCLAVE)
	if err != nil {
		b.Fatal(err)
	}
	blob, err := os.ReadFile(filepath.Join("testdata", "v1-mrenclave.blob"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Unseal(blob, nil); err != nil {
			b.Fatal(err)
		}
	}
}
