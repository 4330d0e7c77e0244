package enclave

import (
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
