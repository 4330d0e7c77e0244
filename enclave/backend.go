package enclave

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/boundary"
	"github.com/cloister-dev/cloister/boundary/shm"
)

// Backend starts enclave instances. The inproc, process and gramine
// backends all speak the same boundary protocol; they differ in where the
// trusted runtime runs and in what isolates it.
type Backend interface {
	// Name is "inproc", "process" or "gramine".
	Name() string
	// Launch starts one enclave instance. The returned Process carries the
	// boundary streams; the handshake has not happened yet.
	Launch(ctx context.Context, spec LaunchSpec) (Process, error)
	// Isolated reports whether the enclave runs in another address space
	// than the host (false for inproc).
	Isolated() bool
}

// LaunchSpec is what a backend needs to start one instance.
type LaunchSpec struct {
	// Name is the deployment's name, for logs.
	Name string
	// Instance numbers instances of one deployment.
	Instance int
	// Image is the enclave image (may be nil for inproc).
	Image *Image
	// Env is extra environment for the enclave process ("KEY=VALUE").
	Env []string
	// Logger receives what the enclave prints on stderr.
	Logger *slog.Logger
}

// Process is a running enclave instance.
type Process interface {
	// Streams returns the boundary streams: r carries OCALLs from the
	// enclave, w carries ECALLs to it.
	Streams() (r io.ReadCloser, w io.WriteCloser)
	// PID is the operating-system process ID, 0 in process.
	PID() int
	// Kill ends the instance at once (SIGKILL for a process).
	Kill() error
	// Done is closed when the instance has exited.
	Done() <-chan struct{}
	// Err is why the instance exited (nil for a clean exit); valid after
	// Done is closed.
	Err() error
}

// ServeFunc runs a trusted runtime over r (ECALLs in) and w (OCALLs out)
// until the stream ends; (*trusted.App).Serve has this signature.
type ServeFunc func(ctx context.Context, r io.Reader, w io.Writer) error

// NewInProc returns the inproc backend: serve runs in the host process, behind
// the same frames, over in-memory pipes. THERE IS NO ISOLATION: the host
// can read and change everything the "enclave" holds. Use it for tests and
// quick development only; its evidence has the debug attribute set so that
// verifiers that refuse debug enclaves refuse it.
func NewInProc(serve ServeFunc) Backend { return inprocBackend{serve: serve} }

type inprocBackend struct{ serve ServeFunc }

func (inprocBackend) Name() string   { return "inproc" }
func (inprocBackend) Isolated() bool { return false }

func (b inprocBackend) Launch(ctx context.Context, spec LaunchSpec) (Process, error) {
	if b.serve == nil {
		return nil, errors.New("enclave: inproc backend needs a serve function (e.g. (*trusted.App).Serve)")
	}
	ecallR, ecallW := io.Pipe()
	ocallR, ocallW := io.Pipe()
	sctx, cancel := context.WithCancel(context.Background())
	p := &inprocProcess{r: ocallR, w: ecallW, cancel: cancel, done: make(chan struct{})}
	go func() {
		err := b.serve(sctx, ecallR, ocallW)
		ecallR.CloseWithError(io.EOF)
		ocallW.Close()
		p.err = err
		close(p.done)
	}()
	return p, nil
}

type inprocProcess struct {
	r      *io.PipeReader
	w      *io.PipeWriter
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (p *inprocProcess) Streams() (io.ReadCloser, io.WriteCloser) { return p.r, p.w }
func (p *inprocProcess) PID() int                                 { return 0 }
func (p *inprocProcess) Done() <-chan struct{}                    { return p.done }
func (p *inprocProcess) Err() error                               { return p.err }

func (p *inprocProcess) Kill() error {
	p.cancel()
	p.r.CloseWithError(errors.New("enclave killed"))
	p.w.CloseWithError(errors.New("enclave killed"))
	return nil
}

// Transport is how frames cross between the host and an enclave process.
type Transport string

// Transports.
const (
	// TransportAuto (the default) offers the image a shared-memory region
	// (package boundary/shm) and uses it when the image takes it; the
	// pipes carry the handshake, and everything when the image declines.
	TransportAuto Transport = ""
	// TransportPipe keeps every frame on the pipes (no region is offered).
	TransportPipe Transport = "pipe"
)

// ProcessOptions configure the process backend.
type ProcessOptions struct {
	// Env is extra environment for every enclave process.
	Env []string
	// InheritEnv lets the enclave see the host's whole environment; by
	// default it gets only the variables PassEnv lists.
	InheritEnv bool
	// Transport chooses shared memory with a pipe fallback (the default)
	// or pipes only.
	Transport Transport
	// Poll is the longest either side polls its shared-memory ring before
	// it sleeps and needs a doorbell (0: shm.DefaultPoll; negative: never
	// poll; at most shm.MaxPoll). The image takes it from the region.
	Poll time.Duration
}

// PassEnv returns the host variables an enclave process inherits by
// default: its temporary directory and time zone. The image needs nothing
// to locate simulation keys (the host hands it its platform secret in
// Init), so neither HOME nor XDG_CONFIG_HOME is passed. The host's Go
// runtime settings (GOMEMLIMIT, GOGC, GODEBUG, GOMAXPROCS) are not passed
// either: the image keeps its own defaults unless the configuration's Env
// sets them.
func PassEnv() []string {
	return []string{"TMPDIR", "TZ"}
}

// NewProcess returns the process backend: the image runs as a child process
// with a pair of pipes on its file descriptors 3 and 4
// (CLOISTER_BOUNDARY_FD=3,4) and, unless opts.Transport is TransportPipe,
// a shared-memory region on descriptor 5 (CLOISTER_BOUNDARY_SHM=5, see
// package boundary/shm). The handshake crosses the pipes; then frames cross
// the region's rings if the image took it, the pipes otherwise. The child
// lives in its own address space, but evidence and seal keys are
// simulated: this promises nothing against a malicious host. It is the
// default backend of a node.
func NewProcess(opts ProcessOptions) Backend { return processBackend{opts: opts} }

type processBackend struct{ opts ProcessOptions }

func (processBackend) Name() string   { return "process" }
func (processBackend) Isolated() bool { return true }

func (b processBackend) Launch(ctx context.Context, spec LaunchSpec) (Process, error) {
	if spec.Image == nil {
		return nil, errors.New("enclave: process backend needs an image")
	}
	if b.opts.Transport != TransportAuto && b.opts.Transport != TransportPipe {
		return nil, fmt.Errorf("enclave: process backend: transport %q: want \"\" (shared memory, pipe fallback) or %q", b.opts.Transport, TransportPipe)
	}
	// ecall: host writes, child reads (fd 3); ocall: child writes (fd 4).
	ecallR, ecallW, ocallR, ocallW, err := boundaryPipes()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(spec.Image.Path)
	cmd.Env = childEnv(b.opts.InheritEnv, append(append([]string{}, b.opts.Env...), spec.Env...))
	cmd.Env = append(cmd.Env, boundary.EnvFD+"=3,4")
	cmd.ExtraFiles = []*os.File{ecallR, ocallW}
	var region *shm.Region
	if b.opts.Transport == TransportAuto {
		reg, f, err := shm.Create(0, b.opts.Poll)
		if err != nil {
			// Not fatal: the pipes carry everything.
			spec.logger().Warn("enclave: no shared-memory boundary; frames cross pipes", "error", err)
		} else {
			defer f.Close() // the child holds its copy once started
			region = reg
			cmd.ExtraFiles = append(cmd.ExtraFiles, f)
			cmd.Env = append(cmd.Env, shm.EnvRegion+"=5")
		}
	}
	cmd.Stdin = nil
	logw := newLineLogger(spec.Logger, spec.Name, spec.Instance)
	cmd.Stdout, cmd.Stderr = logw, logw
	setProcAttr(cmd)
	p, err := startProcess(cmd, ecallR, ecallW, ocallR, ocallW, logw, region, b.opts.Poll)
	if err != nil {
		return nil, fmt.Errorf("enclave: start %s: %w", spec.Image.Path, err)
	}
	return p, nil
}

func (s LaunchSpec) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// pipeSize is the buffer asked for each boundary pipe: a batch of large
// frames then crosses in one write instead of in 64 KiB pieces, each of
// which would wake the reader.
const pipeSize = 1 << 20

// boundaryPipes makes the two pipes of a boundary: ECALLs (host writes,
// enclave reads) and OCALLs (enclave writes, host reads).
func boundaryPipes() (ecallR, ecallW, ocallR, ocallW *os.File, err error) {
	ecallR, ecallW, err = os.Pipe()
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("enclave: boundary pipe: %w", err)
	}
	ocallR, ocallW, err = os.Pipe()
	if err != nil {
		ecallR.Close()
		ecallW.Close()
		return nil, nil, nil, nil, fmt.Errorf("enclave: boundary pipe: %w", err)
	}
	growPipe(ecallW, pipeSize)
	growPipe(ocallW, pipeSize)
	return ecallR, ecallW, ocallR, ocallW, nil
}

// startProcess starts cmd, which has been given the child's ends of the
// two boundary pipes (and the region, when not nil), closes those ends in
// the host and watches the exit. With a region, the host's streams are a
// shm.Stream over the region and its pipes.
func startProcess(cmd *exec.Cmd, ecallR, ecallW, ocallR, ocallW *os.File, logw *lineLogger, region *shm.Region, poll time.Duration) (*osProcess, error) {
	if err := cmd.Start(); err != nil {
		ecallR.Close()
		ecallW.Close()
		ocallR.Close()
		ocallW.Close()
		if region != nil {
			region.Close()
		}
		return nil, err
	}
	// The child holds its ends now; closing ours lets a dead child show as
	// end of stream at once.
	ecallR.Close()
	ocallW.Close()
	p := &osProcess{cmd: cmd, r: ocallR, w: ecallW, done: make(chan struct{})}
	if region != nil {
		st, err := shm.NewStream(region, shm.Host, ocallR, ecallW, shm.Options{HandshakeBytes: boundary.HelloSize, Poll: poll})
		if err != nil { // only for invalid arguments
			region.Close()
			cmd.Process.Kill()
		} else {
			p.r, p.w, p.shm = st, st, st
		}
	}
	go func() {
		err := cmd.Wait()
		logw.flush()
		p.err = err
		close(p.done)
	}()
	return p, nil
}

// childEnv builds an enclave process's environment.
func childEnv(inherit bool, extra []string) []string {
	var env []string
	if inherit {
		env = os.Environ()
	} else {
		for _, k := range PassEnv() {
			if v, ok := os.LookupEnv(k); ok {
				env = append(env, k+"="+v)
			}
		}
	}
	return append(env, extra...)
}

type osProcess struct {
	cmd  *exec.Cmd
	r    io.ReadCloser
	w    io.WriteCloser
	shm  *shm.Stream // nil: pipes only
	done chan struct{}
	err  error
}

func (p *osProcess) Streams() (io.ReadCloser, io.WriteCloser) { return p.r, p.w }

// Transport returns "shm" when frames cross shared memory, "pipe" when
// they cross the pipes, "" before the handshake decided.
func (p *osProcess) Transport() string {
	if p.shm == nil {
		return "pipe"
	}
	return p.shm.Transport()
}
func (p *osProcess) PID() int              { return p.cmd.Process.Pid }
func (p *osProcess) Done() <-chan struct{} { return p.done }
func (p *osProcess) Err() error            { return p.err }

func (p *osProcess) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// lineLogger turns what an enclave process prints into log records, one
// per line.
type lineLogger struct {
	log  *slog.Logger
	mu   sync.Mutex
	part []byte
}

func newLineLogger(l *slog.Logger, name string, instance int) *lineLogger {
	if l == nil {
		l = slog.Default()
	}
	return &lineLogger{log: l.With("enclave", name, "instance", instance, "stream", "stderr")}
}

func (w *lineLogger) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.part = append(w.part, b...)
	for {
		i := strings.IndexByte(string(w.part), '\n')
		if i < 0 {
			break
		}
		w.emit(string(w.part[:i]))
		w.part = w.part[i+1:]
	}
	if len(w.part) > 64<<10 {
		w.emit(string(w.part))
		w.part = nil
	}
	return len(b), nil
}

func (w *lineLogger) emit(line string) {
	line = strings.TrimRight(line, "\r")
	if line != "" {
		w.log.Warn("enclave output: " + line)
	}
}

func (w *lineLogger) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.emit(string(w.part))
	w.part = nil
}
