//go:build unix

package trusted

import "syscall"

func setNonblock(fd int) error { return syscall.SetNonblock(fd, true) }
