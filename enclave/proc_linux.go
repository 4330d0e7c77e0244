package enclave

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcAttr makes the enclave die with its host, and puts it in a process
// group of its own: a Ctrl-C at the terminal (SIGINT to the foreground
// group) reaches only the host, which then shuts its enclaves down in order
// (Shutdown ECALL, drain) instead of racing them to exit.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// fSetPipeSize is fcntl's F_SETPIPE_SZ.
const fSetPipeSize = 1031

// growPipe asks for a pipe buffer of size bytes. A smaller buffer stays if
// the system refuses (fs.pipe-max-size, the user's pipe quota): larger
// buffers only save wake-ups.
func growPipe(f *os.File, size int) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, fd, fSetPipeSize, uintptr(size))
	})
}
