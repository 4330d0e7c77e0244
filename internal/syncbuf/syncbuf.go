// Package syncbuf holds Buffer, a bytes.Buffer safe for concurrent use:
// the sink tests give to loggers and child processes so they can assert on
// what was written while writers are still running.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is a concurrency-safe byte buffer. The zero value is ready.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
