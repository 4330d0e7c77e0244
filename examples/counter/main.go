// Command counter is the regular half of the counter example: it builds the
// trusted counter image (./enclave) on first use, hosts it on a node with
// the process backend, and deploys a regular "frontend" service that
// counts visits by asking the enclave over the bus.
//
//	go run ./examples/counter                 # count a few visits
//	go run ./examples/counter -kill           # kill -9 the enclave half-way
//
// Counts live in the enclave's protected storage (sealed blobs in the state
// directory), so they survive the enclave being killed and restarted, and
// this program being run again.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/node"
)

// EnclavePackage is the trusted image's main package.
const EnclavePackage = "github.com/cloister-dev/cloister/examples/counter/enclave"

// options of one run.
type options struct {
	image    string // enclave image path
	stateDir string // protected storage
	simDir   string // the simulation root: evidence signing key, seal secret
	users    []string
	rounds   int
	kill     bool // kill -9 the enclave after the first round
	rebuild  bool
	logger   *slog.Logger
}

func main() {
	cache, _ := os.UserCacheDir()
	base := filepath.Join(cache, "cloister", "examples", "counter")
	var o options
	var users string
	flag.StringVar(&o.image, "image", filepath.Join(base, "counter.img"), "enclave image (built on first use)")
	flag.StringVar(&o.stateDir, "state", filepath.Join(base, "state"), "directory of the enclave's protected storage")
	config, _ := os.UserConfigDir()
	flag.StringVar(&o.simDir, "simulation", filepath.Join(config, "cloister"), "directory of the simulation keys (those of the cloister command by default)")
	flag.StringVar(&users, "users", "alice,bob", "comma-separated users who visit")
	flag.IntVar(&o.rounds, "rounds", 3, "visits per user")
	flag.BoolVar(&o.kill, "kill", false, "kill -9 the enclave process after the first round")
	flag.BoolVar(&o.rebuild, "rebuild", false, "rebuild the image even if it exists")
	flag.Parse()
	o.users = strings.Split(users, ",")
	o.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, o); err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
		os.Exit(1)
	}
}

// image returns the enclave image, building it on first use (or when it no
// longer matches its metadata).
func image(ctx context.Context, out io.Writer, o options) (*enclave.Image, error) {
	if !o.rebuild {
		img, err := enclave.Load(o.image)
		if err == nil {
			return img, nil
		}
		if !errors.Is(err, enclave.ErrNoMetadata) && !errors.Is(err, enclave.ErrImageChanged) {
			return nil, err
		}
	}
	fmt.Fprintf(out, "building the enclave image %s ...\n", o.image)
	return enclave.Build(ctx, EnclavePackage, o.image, enclave.BuildOptions{Signer: "cloister-examples", ProductID: 1, SVN: 1})
}

// frontend is a regular service: it answers frontend.visit by counting the
// visit in the enclave.
type frontend struct{}

func (frontend) Start(ctx context.Context, inst *node.Instance) error {
	_, err := inst.Consumer("frontend.visit", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		var user string
		if err := m.Decode(&user); err != nil {
			m.Fail(400, "send a user name")
			return
		}
		// Never block the event loop: ask the enclave from a goroutine.
		go func() {
			reply, err := inst.Bus().Request(context.Background(), "counter.inc", user, bus.Timeout(5*time.Second))
			if err != nil {
				var re *bus.ReplyError
				if errors.As(err, &re) {
					m.Fail(re.Code, re.Message)
				} else {
					m.Fail(500, err.Error())
				}
				return
			}
			var n int
			if err := reply.Decode(&n); err != nil {
				m.Fail(500, err.Error())
				return
			}
			m.Reply(fmt.Sprintf("%s has visited %d times", user, n))
		}()
	}))
	return err
}

func (frontend) Stop(ctx context.Context) error { return nil }

func run(ctx context.Context, out io.Writer, o options) error {
	img, err := image(ctx, out, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "enclave image %s\n  measurement %s\n", img.Path, img.Measurement)
	b, err := bus.New(bus.WithLogger(o.logger))
	if err != nil {
		return err
	}
	// This program decides where the simulation keys live: the sealed
	// counts open only under the same ones.
	root, err := attest.LoadOrCreateSimulationRoot(o.simDir)
	if err != nil {
		return err
	}
	n, err := node.New(node.Options{Bus: b, Logger: o.logger, Simulation: root})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(sctx)
	}()
	if _, err := n.DeployEnclave(ctx, node.EnclaveConfig{
		Name: "counter", Image: img.Path, Addresses: []string{"counter.*"}, StateDir: o.stateDir,
		RestartBackoff: 500 * time.Millisecond,
	}); err != nil {
		return err
	}
	if _, err := n.Deploy(ctx, func() node.Service { return frontend{} }, node.DeployOptions{Name: "frontend"}); err != nil {
		return err
	}
	fmt.Fprintf(out, "enclave counter running as pid %d\n", n.Enclaves()[0].PID)

	visit := func(user string) (string, error) {
		m, err := b.Request(ctx, "frontend.visit", user, bus.Timeout(10*time.Second))
		if err != nil {
			return "", err
		}
		var s string
		err = m.Decode(&s)
		return s, err
	}
	for round := range o.rounds {
		if round == 1 && o.kill {
			if err := killAndWait(ctx, out, n, visit); err != nil {
				return err
			}
		}
		for _, u := range o.users {
			s, err := visit(u)
			if err != nil {
				return err
			}
			fmt.Fprintln(out, s)
		}
	}
	return nil
}

// killAndWait kills the enclave with SIGKILL, shows that a request fails
// at once, and waits until the supervisor has restarted it.
func killAndWait(ctx context.Context, out io.Writer, n *node.Node, visit func(string) (string, error)) error {
	pid := n.Enclaves()[0].PID
	fmt.Fprintf(out, "kill -9 %d (the enclave)\n", pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return err
	}
	start := time.Now()
	if _, err := visit("mallory"); err != nil {
		fmt.Fprintf(out, "while it is down, a visit fails at once (%v): %v\n", time.Since(start).Round(time.Millisecond), err)
	}
	for {
		h := n.Health(ctx)
		up := len(h) > 0
		for _, d := range h {
			up = up && d.Status == node.StatusUp
		}
		if up {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	fmt.Fprintf(out, "enclave restarted as pid %d; counts continue from protected storage\n", n.Enclaves()[0].PID)
	return nil
}
