//go:build unix

package shm

import "syscall"

func rawWrite(fd uintptr, b []byte) { _, _ = syscall.Write(int(fd), b) }
