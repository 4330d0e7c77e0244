package seal

import "testing"

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
