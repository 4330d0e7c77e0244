package trusted

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/cloister-dev/cloister/boundary"
)

// Main serves the boundary protocol for a process image (see the package
// doc for the descriptors used) and exits the process: 0 after a Shutdown,
// 1 on any other end.
func (a *App) Main() {
	os.Exit(a.run())
}

func (a *App) run() int {
	if os.Getenv("GOMEMLIMIT") == "" && a.opts.MemoryLimit >= 0 {
		lim := a.opts.MemoryLimit
		if lim == 0 {
			lim = DefaultMemoryLimit
		}
		debug.SetMemoryLimit(lim)
	}
	if os.Getenv("GOMAXPROCS") == "" && a.opts.Procs >= 0 {
		n := a.opts.Procs
		if n == 0 {
			n = DefaultProcs
		}
		runtime.GOMAXPROCS(n)
	}
	r, w, err := a.boundaryFiles()
	if err != nil {
		fmt.Fprintln(os.Stderr, "trusted:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Serve(ctx, r, w); err != nil {
		fmt.Fprintln(os.Stderr, "trusted:", err)
		return 1
	}
	return 0
}

// boundaryFiles returns the boundary streams: the descriptors
// boundary.EnvFD names (or stdin and stdout), handed to
// Options.SharedMemory when the image takes the region the host offers.
func (a *App) boundaryFiles() (io.Reader, io.Writer, error) {
	r, w, err := boundaryPipes()
	if err != nil || a.opts.SharedMemory == nil {
		return r, w, err
	}
	sr, sw := a.opts.SharedMemory(r, w)
	return sr, sw, nil
}

func boundaryPipes() (*os.File, *os.File, error) {
	v := os.Getenv(boundary.EnvFD)
	if v == "" {
		// Stdin and stdout, taken like any other pair of descriptors (so
		// that closing them ends a blocked read).
		os.Stdout = os.Stderr // keep stray prints out of the protocol stream
		v = "0,1"
	}
	parts := strings.Split(v, ",")
	if len(parts) > 2 {
		return nil, nil, fmt.Errorf("%s=%q: want \"FD\" or \"RFD,WFD\"", boundary.EnvFD, v)
	}
	var files [2]*os.File
	for i, p := range parts {
		fd, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || fd < 0 {
			return nil, nil, fmt.Errorf("%s=%q: bad descriptor %q", boundary.EnvFD, v, p)
		}
		// Non-blocking: the Go poller then owns the descriptor, so reads do
		// not pin threads and Close interrupts them.
		if err := setNonblock(fd); err != nil {
			return nil, nil, fmt.Errorf("%s=%q: descriptor %d: %w", boundary.EnvFD, v, fd, err)
		}
		files[i] = os.NewFile(uintptr(fd), fmt.Sprintf("boundary-fd-%d", fd))
		if files[i] == nil {
			return nil, nil, fmt.Errorf("%s=%q: invalid descriptor %d", boundary.EnvFD, v, fd)
		}
	}
	if len(parts) == 1 {
		return files[0], files[0], nil
	}
	return files[0], files[1], nil
}
