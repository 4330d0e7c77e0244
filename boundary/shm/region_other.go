//go:build !linux

package shm

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

// Create is not supported on this platform.
func Create(ringSize int, poll time.Duration) (*Region, *os.File, error) {
	return nil, nil, fmt.Errorf("%w (%s)", ErrUnsupported, runtime.GOOS)
}

// CreateFile is not supported on this platform.
func CreateFile(path string, ringSize int, poll time.Duration) (*Region, error) {
	return nil, fmt.Errorf("%w (%s)", ErrUnsupported, runtime.GOOS)
}

// Open is not supported on this platform.
func Open(f *os.File) (*Region, error) {
	return nil, fmt.Errorf("%w (%s)", ErrUnsupported, runtime.GOOS)
}

func osYield() { runtime.Gosched() }
