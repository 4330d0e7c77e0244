package enclave

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the enclave die with its host.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
