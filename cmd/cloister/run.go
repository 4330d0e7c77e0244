package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/cloister-dev/cloister/application"
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/tracing"
)

func runCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "run [FLAGS] APP.yaml",
		Short: "run an application an app.yaml describes, from any directory of its Go module",
		Long: `Runs the application an application description (app.yaml) describes: its
nodes (embedded NATS with JetStream), its trusted images (built from the Go
packages it names, from the description's module, on first use), the
coordinator with a manifest generated from the images' measurements and the
addresses and clients the description declares, and its regular services.
It prints what it built and where NATS listens, then runs until Ctrl-C or
SIGTERM and stops cleanly. The state (the coordinator's keys and manifest,
sealed storage, JetStream, images, client keys made) is kept in the file's
state_dir, or --state-dir, so that a second run continues where the first
stopped.

A description whose services include Go services names their program:
(the main package that registers them with application.Main); cloister run
compiles that program from the description's module and runs it with every
argument given here, so the program's own flags work too. The water monitor
is such an application:

  cloister run examples/water/app.yaml            # its program: examples/water
  cloister run --sensors 5 examples/water/app.yaml

Otherwise cloister run runs the description itself:

  cloister run app.yaml
  cloister run --node n2 app.yaml                 # only node n2 (one process per node)

With coordinator: {freshness: true} in the description, the coordinator
runs as replicas (one per coordinator node) that refuse rolled-back sealed
state. When a majority of them restart at once (a whole single-node
application stopped and started again, say), the start waits until the
manifest owner signs a recovery statement ('cloister coordinator recover
--key STATE/owner.pem'), or signs it itself with --recover.

Flags (when cloister runs the description itself):
      --node NAME          run only this node of the description
      --state-dir DIR      keep the state in DIR (overrides state_dir)
      --metrics HOST:PORT  serve each node's /metrics, /healthz, /readyz (next nodes: next ports)
      --trace-endpoint URL export the nodes' message spans (OTLP/HTTP)
      --recover            after a lost quorum of coordinator replicas, sign the
                           recovery statement with the state directory's owner
                           key, continuing from the state on disk (said loudly)
      --log-level LEVEL    debug, info, warn (default) or error
      --log-format FORMAT  text (default) or json`,
		// The arguments may be the program's flags: they are parsed here.
		DisableFlagParsing: true,
		RunE: func(c *cobra.Command, args []string) error {
			for _, a := range args {
				if a == "-h" || a == "--help" || a == "-help" {
					return c.Help()
				}
			}
			return action(runAction)(c, args)
		},
	}
}

// runAction runs the program of the description among args, or the
// description itself.
func runAction(ctx context.Context, env *cliEnv, args []string) error {
	if err := checkCommonFlags(args); err != nil {
		return err
	}
	path, err := descriptionArg(args)
	if err != nil {
		return err
	}
	program, err := programOf(path)
	if err != nil {
		return err
	}
	if program != "" {
		return runProgram(ctx, env, path, program, args)
	}
	return runDescription(ctx, env, path, args)
}

// descriptionArg finds the description among run's arguments: the one
// argument that names a .yaml or .yml file.
func descriptionArg(args []string) (string, error) {
	var found []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") && (strings.HasSuffix(a, ".yaml") || strings.HasSuffix(a, ".yml")) {
			found = append(found, a)
		}
	}
	switch len(found) {
	case 0:
		return "", usagef("run: name the application's description (APP.yaml)")
	case 1:
		return found[0], nil
	}
	return "", usagef("run: one APP.yaml, got %d (%s)", len(found), strings.Join(found, ", "))
}

// checkCommonFlags checks, before anything is read or built, the flags
// that cloister run and the programs it runs (application.Main, the water
// monitor) share: --metrics, --trace-endpoint, --log-level, --log-format.
func checkCommonFlags(args []string) error {
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			continue
		}
		if !hasValue && i+1 < len(args) {
			value = args[i+1]
		}
		var err error
		switch name {
		case "metrics":
			if value != "" {
				err = cluster.CheckListenAddress("--metrics", value)
			}
		case "trace-endpoint":
			if value != "" {
				if e := tracing.CheckEndpoint(value); e != nil {
					err = fmt.Errorf("--trace-endpoint: %w", e)
				}
			}
		case "log-level", "log-format":
			logs := logFlags{level: "warn", format: "text"}
			if name == "log-level" {
				logs.level = value
			} else {
				logs.format = value
			}
			_, _, err = logs.handler(io.Discard)
		}
		if err != nil {
			var ue *usageError
			if errors.As(err, &ue) {
				return err
			}
			return &usageError{err: err}
		}
	}
	return nil
}

// programOf returns the program: of the description at path ("" if it
// has none), without checking the rest: the program checks its own file.
func programOf(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("run: %w", err)
	}
	var top struct {
		Program string `yaml:"program"`
	}
	if err := yaml.Unmarshal(raw, &top); err != nil {
		return "", fmt.Errorf("run: %s: %w", path, err)
	}
	return top.Program, nil
}

// programExit is the exit status of a program cloister run ran, passed on
// as cloister's own (the program has said what was wrong).
type programExit struct{ code int }

func (e *programExit) Error() string { return fmt.Sprintf("the program exited with status %d", e.code) }

// runProgram compiles the description's program from the description's
// module and runs it with args, passing on SIGINT and SIGTERM and its exit
// status.
func runProgram(ctx context.Context, env *cliEnv, path, program string, args []string) error {
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	pkg := program
	if pkg == "." || strings.HasPrefix(pkg, "./") || strings.HasPrefix(pkg, "../") || filepath.IsAbs(pkg) {
		if !filepath.IsAbs(pkg) {
			pkg = filepath.Join(dir, pkg)
		}
		dir, pkg = pkg, "."
	}
	bin, err := programBinary(dir, pkg)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "cloister run: compiling the program %s (in %s) ...\n", program, dir)
	// Compiled beside, then renamed into place: another cloister run of
	// the same description (one per node) may be running the binary.
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	defer os.Remove(tmp)
	gb := exec.CommandContext(ctx, "go", "build", "-o", tmp, pkg)
	gb.Dir, gb.Stdout, gb.Stderr = dir, env.stderr, env.stderr
	if err := gb.Run(); err != nil {
		if ctx.Err() != nil {
			return nil // interrupted
		}
		return fmt.Errorf("run: compiling the program %s of %s (in %s): %w", program, path, dir, err)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, env.stdout, env.stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-exited:
		case <-time.After(programStopGrace):
			_ = cmd.Process.Kill()
			err = <-exited
		}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if code := ee.ExitCode(); code > 0 {
			return &programExit{code: code}
		}
		return nil // stopped by the signal passed on
	}
	return err
}

// programBinary is where the program of dir's package pkg is compiled: a
// folder of the user's cache directory named after both.
func programBinary(dir, pkg string) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256([]byte(dir + "\x00" + pkg))
	name := filepath.Base(dir)
	if pkg != "." {
		name = filepath.Base(pkg)
	}
	out := filepath.Join(cache, "cloister", "programs", hex.EncodeToString(sum[:8]), name)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", fmt.Errorf("run: %w", err)
	}
	return out, nil
}

// runDescription runs a description without Go services in this process.
func runDescription(ctx context.Context, env *cliEnv, path string, args []string) error {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	fs.SetOutput(env.stderr)
	var nodeName, stateDir, metrics, traceURL string
	var recoverQuorum bool
	var logs logFlags
	fs.StringVar(&nodeName, "node", "", "run only this node of the description")
	fs.StringVar(&metrics, "metrics", "", "`host:port` of the first node's operations endpoint (/metrics, /healthz, /readyz); the next nodes take the next ports; empty: none")
	fs.StringVar(&traceURL, "trace-endpoint", "", "export OpenTelemetry spans of every node's messages to this OTLP/HTTP `URL`; empty: no tracing")
	fs.StringVar(&stateDir, "state-dir", "", "keep the state in this `directory` (overrides state_dir)")
	fs.BoolVar(&recoverQuorum, "recover", false, "if the coordinator replicas lost their quorum, sign the recovery statement with the owner key of the state directory, continuing from the state on disk (said loudly)")
	logs.register(fs, "warn")
	var rest []string
	for _, a := range args {
		if a != path {
			rest = append(rest, a)
		}
	}
	if err := fs.Parse(rest); err != nil {
		return &usageError{err: fmt.Errorf("run: %w", err)}
	}
	if fs.NArg() > 0 {
		return usagef("run: unexpected arguments %q (one APP.yaml)", fs.Args())
	}
	logger, _, err := logs.logger(env.stderr)
	if err != nil {
		return err
	}
	cfg, err := application.LoadConfig(path)
	if err != nil {
		return &usageError{err: err}
	}
	if fs.Changed("state-dir") {
		cfg.StateDir, err = filepath.Abs(stateDir)
		if err != nil {
			return fmt.Errorf("run: %w", err)
		}
	}
	cfg.Only, cfg.Out, cfg.Logger, cfg.Metrics, cfg.TraceEndpoint = nodeName, env.stdout, logger, metrics, traceURL
	cfg.Recover = recoverQuorum
	err = application.Run(ctx, cfg)
	if ctx.Err() != nil && err != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// programStopGrace bounds how long run waits for a program to stop after
// passing on a signal; the program's own stop timeouts come first.
const programStopGrace = time.Minute
