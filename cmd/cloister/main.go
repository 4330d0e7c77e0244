// Command cloister is the command line of the Cloister toolkit: it runs nodes,
// talks to the bus, builds and measures enclave images and verifies evidence.
//
// Every verb is a sub-command with its own --help. Exit codes:
//
//	0  success
//	1  the operation failed (the error is printed on stderr)
//	2  the command line was wrong (usage is printed on stderr)
//	3  verification or a policy check failed (attest, manifest)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes, documented in the package comment.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitRejected = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &cliEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(run(ctx, env, os.Args[1:]))
}

// cliEnv carries what a command may touch, so tests can run commands in-process.
type cliEnv struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// run executes the command line args and returns the process exit code.
func run(ctx context.Context, env *cliEnv, args []string) int {
	root := rootCommand()
	err := root.execute(ctx, env, nil, args)
	return exitCode(env, err)
}

// rootCommand is the tree of verbs. Each verb lives in its own file and
// contributes one constructor here.
func rootCommand() *command {
	return &command{
		name:    "cloister",
		summary: "confidential microservices on an event bus",
		subcommands: []*command{
			versionCommand(),
			nodeCommand(),
			sendCommand(),
			publishCommand(),
			requestCommand(),
			replyCommand(),
			tapCommand(),
			attestCommand(),
			enclaveCommand(),
			manifestCommand(),
			runCommand(),
			benchCommand(),
			coordinatorCommand(),
		},
	}
}

// exitCode prints err (if any) on stderr and maps it to an exit code.
func exitCode(env *cliEnv, err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(env.stderr, "%v\n", ue.err)
		if ue.usage != "" {
			fmt.Fprintf(env.stderr, "\n%s", ue.usage)
		}
		return exitUsage
	}
	if errors.Is(err, errHelp) {
		return exitOK
	}
	var re *rejectedError
	if errors.As(err, &re) {
		fmt.Fprintf(env.stderr, "cloister: %v\n", err)
		return exitRejected
	}
	if errors.Is(err, context.Canceled) {
		return exitOK
	}
	fmt.Fprintf(env.stderr, "cloister: %v\n", err)
	return exitFailure
}
