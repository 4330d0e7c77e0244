package application

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Environment variables a command service finds.
const (
	// EnvNATSURL is the NATS client URL of the node the command runs on
	// (the name the nats CLI uses).
	EnvNATSURL = "NATS_URL"
	// EnvService is the command's service name in the description and the
	// manifest.
	EnvService = "CLOISTER_SERVICE"
	// EnvNATSCreds is the NATS credentials file of a node that joins
	// external servers with one.
	EnvNATSCreds = "NATS_CREDS"
	// EnvStateDir is a directory of the command's own in the application's
	// state directory.
	EnvStateDir = "CLOISTER_STATE_DIR"
)

// Restart delays of a command service that exits: the first, the longest,
// and how long a run must last for the delay to start again from the
// first.
const (
	commandFirstBackoff = 200 * time.Millisecond
	commandMaxBackoff   = 10 * time.Second
	commandStableRun    = 30 * time.Second
	commandStopGrace    = 5 * time.Second
)

// command supervises one command service: it starts it, restarts it with
// a growing delay when it exits, and stops it (SIGTERM, then SIGKILL after
// a grace period).
type command struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
}

func (a *App) startCommand(ln *runningNode, name string, desc Service) *command {
	ctx, cancel := context.WithCancel(context.Background())
	c := &command{name: name, cancel: cancel, done: make(chan struct{})}
	logger := a.logger.With("node", ln.cfg.Name, "service", name)
	state := filepath.Join(a.stateDir, "services", name)
	env := append(os.Environ(), desc.Env...)
	env = append(env, EnvNATSURL+"="+ln.natsURL(), EnvService+"="+name, EnvStateDir+"="+state)
	if ln.cfg.Credentials != "" {
		env = append(env, EnvNATSCreds+"="+a.cfg.path(ln.cfg.Credentials))
	}
	go func() {
		defer close(c.done)
		backoff := commandFirstBackoff
		for ctx.Err() == nil {
			if err := os.MkdirAll(state, 0o700); err != nil {
				logger.Error("application: command service: state directory", "error", err)
			}
			began := time.Now()
			err := c.runOnce(ctx, a, desc.Command, env)
			if ctx.Err() != nil {
				return
			}
			if time.Since(began) > commandStableRun {
				backoff = commandFirstBackoff
			}
			logger.Warn("application: command service exited; restarting", "error", err, "after", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, commandMaxBackoff)
		}
	}()
	return c
}

// runOnce runs the command until it exits or ctx ends (then it is asked to
// stop, and killed if it does not in time). Its output lines go to the
// application's Out, each after the service's name.
func (c *command) runOnce(ctx context.Context, a *App, argv, env []string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = a.cfg.dir(), env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // stop its children too
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	var lines sync.WaitGroup
	lines.Add(1)
	go func() {
		defer lines.Done()
		logLines(stdout, c.name, a.out)
	}()
	exited := make(chan error, 1)
	go func() {
		lines.Wait()
		exited <- cmd.Wait()
	}()
	select {
	case err := <-exited:
		return err
	case <-ctx.Done():
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-exited:
		return err
	case <-time.After(commandStopGrace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return <-exited
	}
}

// logLines writes each line r yields to out as "name | line".
func logLines(r io.Reader, name string, out io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Fprintf(out, "%s | %s\n", name, sc.Text())
	}
	_, _ = io.Copy(io.Discard, r)
}

// lockedWriter serialises writes to w, so that lines of several commands
// do not interleave.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// Write implements io.Writer.
func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// stop stops the command and waits until it has exited.
func (c *command) stop() {
	c.cancel()
	<-c.done
}
