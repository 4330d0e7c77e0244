//go:build linux

package shm

import (
	"io"
	"testing"
)

// BenchmarkStreamPingPong bounces 64 bytes between the two sides of a
// region in one process (one goroutine each): the cost of the rings and
// the polling, without a second process. It reports allocations.
func BenchmarkStreamPingPong(b *testing.B) {
	host, enc, _ := pair(b, 0, true)
	handshake(b, host, enc)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(enc, buf); err != nil {
				return
			}
			if _, err := enc.Write(buf); err != nil {
				return
			}
		}
	}()
	msg := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := host.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(host, msg); err != nil {
			b.Fatal(err)
		}
	}
}
