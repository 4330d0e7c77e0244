// Command cloister is the command line of the Cloister toolkit: it runs nodes,
// talks to the bus, builds and measures enclave images and verifies evidence.
//
// Every verb is a sub-command with its own --help; a typo in a verb or a
// flag gets a suggestion, and 'cloister completion bash|zsh|fish' prints a
// shell completion script. The verbs that talk to a running system
// connect to -s/--server, by default $NATS_URL. Exit codes:
//
//	0  success
//	1  the operation failed (the error is printed on stderr)
//	2  the command line was wrong (the error and the command's usage line
//	   are printed on stderr)
//	3  verification or a policy check failed (attest, manifest,
//	   coordinator verify)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
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
	root.SetIn(env.stdin)
	root.SetOut(env.stdout)
	root.SetErr(env.stderr)
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	return exitCode(env, cmd, err)
}

// rootCommand is the tree of verbs. Each verb lives in its own file and
// contributes one constructor here.
func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "cloister",
		Short: "confidential microservices on an event bus",
		Long: `cloister runs nodes, talks to the bus, builds and measures enclave images,
runs and verifies the coordinator and verifies attestation evidence.

The verbs that talk to a running system connect to -s/--server (default
$NATS_URL, else ` + defaultServers + `).

Exit codes: 0 success; 1 the operation failed; 2 the command line was
wrong; 3 verification or a policy check failed.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(flagError)
	group(root,
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
		initCommand(),
		runCommand(),
		benchCommand(),
		coordinatorCommand(),
	)
	completeFlagValues(root)
	return root
}

// exitCode prints err (if any) on stderr and maps it to an exit code; cmd
// is the command that failed.
func exitCode(env *cliEnv, cmd *cobra.Command, err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		printUsageError(env.stderr, cmd, ue.err)
		return exitUsage
	}
	var pe *programExit
	if errors.As(err, &pe) {
		return pe.code // the program has said what was wrong
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
