package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The command tree is built with cobra (github.com/spf13/cobra): each verb
// is a *cobra.Command made by one constructor in its own file, with its
// flags on cmd.Flags() and its work in RunE (see action). This file holds
// what the verbs share: the errors that choose the exit code, groups of
// sub-commands, flag aliases and values, and the error messages of flags.

// usageError is a mistake on the command line; it exits with code 2 and
// prints the command's usage line.
type usageError struct {
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef builds a usage error.
func usagef(format string, a ...any) error {
	return &usageError{err: fmt.Errorf(format, a...)}
}

// rejectedError reports a verification or policy failure (exit code 3).
type rejectedError struct{ err error }

func (e *rejectedError) Error() string { return e.err.Error() }
func (e *rejectedError) Unwrap() error { return e.err }

// action adapts a verb's work to cobra's RunE: the verb gets the context
// and the input and outputs the root command was given (see run).
func action(fn func(ctx context.Context, env *cliEnv, args []string) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		env := &cliEnv{stdin: c.InOrStdin(), stdout: c.OutOrStdout(), stderr: c.ErrOrStderr()}
		return fn(c.Context(), env, args)
	}
}

// annotationGroup marks the commands made by group.
const annotationGroup = "cloister/group"

// group makes cmd a group of the sub-commands subs. Run without one, or
// with one it does not know, it is a usage error that names them (and
// suggests the closest to a typo).
func group(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.AddCommand(subs...)
	cmd.Args = cobra.ArbitraryArgs
	cmd.Annotations = map[string]string{annotationGroup: "true"}
	cmd.SetUsageFunc(groupUsage)
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usagef("%s: missing command (want %s)", c.CommandPath(), strings.Join(subcommandNames(c), ", "))
		}
		return unknownCommand(c, args[0])
	}
	return cmd
}

// groupUsage is the usage a group's --help prints (cobra's would show a
// group as runnable by itself). Set on a group, it is inherited by the
// group's sub-commands, which get cobra's.
func groupUsage(c *cobra.Command) error {
	if c.Annotations[annotationGroup] == "" {
		return (&cobra.Command{}).UsageFunc()(c)
	}
	w := c.OutOrStderr()
	fmt.Fprintf(w, "Usage:\n  %s COMMAND [flags] [args]\n\nCommands:\n", c.CommandPath())
	width := 0
	for _, name := range subcommandNames(c) {
		width = max(width, len(name))
	}
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() {
			fmt.Fprintf(w, "  %-*s  %s\n", width, s.Name(), s.Short)
		}
	}
	fmt.Fprintf(w, "\nFlags:\n%s\nRun '%s COMMAND --help' for the details of a command.\n", c.LocalFlags().FlagUsages(), c.CommandPath())
	return nil
}

// unknownCommand is the usage error for a sub-command name c does not
// have: it suggests the closest names, or lists them all.
func unknownCommand(c *cobra.Command, name string) error {
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2
	}
	if s := c.SuggestionsFor(name); len(s) > 0 {
		return usagef("%s: unknown command %q; did you mean %s?", c.CommandPath(), name, strings.Join(s, " or "))
	}
	return usagef("%s: unknown command %q (want %s)", c.CommandPath(), name, strings.Join(subcommandNames(c), ", "))
}

// subcommandNames lists the sub-commands a user may call.
func subcommandNames(c *cobra.Command) []string {
	var names []string
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() {
			names = append(names, s.Name())
		}
	}
	return names
}

// flagError turns a flag parsing error into a usage error that names the
// flag and the value, and suggests the closest flag to an unknown one.
func flagError(c *cobra.Command, err error) error {
	var ne *pflag.NotExistError
	var ie *pflag.InvalidValueError
	switch {
	case errors.As(err, &ne) && ne.GetSpecifiedShortnames() == "":
		if s := closestFlag(c.Flags(), ne.GetSpecifiedName()); s != "" {
			return usagef("%s: unknown flag --%s; did you mean --%s?", c.CommandPath(), ne.GetSpecifiedName(), s)
		}
		return usagef("%s: unknown flag --%s", c.CommandPath(), ne.GetSpecifiedName())
	case errors.As(err, &ie):
		f := ie.GetFlag()
		why := ie.Unwrap()
		switch f.Value.Type() {
		case "int", "uint", "uint16", "int64":
			why = errors.New("want a whole number")
		case "bool":
			why = errors.New("want true or false")
		}
		return usagef("--%s %q: %v", f.Name, ie.GetValue(), why)
	}
	return &usageError{err: fmt.Errorf("%s: %w", c.CommandPath(), err)}
}

// closestFlag returns the name of the flag of fs closest to name (at most
// two edits away, or a prefix of it), or "".
func closestFlag(fs *pflag.FlagSet, name string) string {
	best, bestDist := "", 3
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		d := editDistance(strings.ToLower(name), f.Name)
		if strings.HasPrefix(f.Name, name) && len(name) >= 3 {
			d = min(d, 1)
		}
		if d < bestDist || (d == bestDist && f.Name < best) {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b (in bytes;
// flag names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// aliasFlags lets fs accept the old names of flags (old -> new), so that
// command lines written for earlier versions keep working; help shows the
// new names only.
// It may be called more than once on fs.
func aliasFlags(fs *pflag.FlagSet, aliases map[string]string) {
	prev := fs.GetNormalizeFunc()
	fs.SetNormalizeFunc(func(f *pflag.FlagSet, name string) pflag.NormalizedName {
		if n, ok := aliases[name]; ok {
			return pflag.NormalizedName(n)
		}
		return prev(f, name)
	})
}

// durationValue is a time.Duration flag whose error says that a unit is
// wanted ("--timeout 2" is not two seconds).
type durationValue time.Duration

func durationVar(fs *pflag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var((*durationValue)(p), name, usage)
}

func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration with a unit, such as 2s, 500ms or 1m30s")
	}
	*d = durationValue(v)
	return nil
}

func (d *durationValue) String() string { return time.Duration(*d).String() }
func (d *durationValue) Type() string   { return "duration" }

// completeFlagValues lets the shell complete the flags of c and its
// sub-commands that take one of a few words.
func completeFlagValues(c *cobra.Command) {
	words := map[string][]string{
		"log-level":  {"debug", "info", "warn", "error"},
		"log-format": {"text", "json"},
		"backend":    {"process", "gramine"},
		"transport":  {"shm", "pipe"},
		"security":   {"coordinator", "channel", "plain"},
	}
	for name, values := range words {
		if c.Flags().Lookup(name) != nil {
			_ = c.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
		}
	}
	for _, s := range c.Commands() {
		completeFlagValues(s)
	}
}

// printJSON writes v as indented JSON, as the --json flags print.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// envOr returns the environment variable name when it is set and not
// empty, else def.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// printUsageError writes a usage error as cloister prints it: the error,
// the usage line of the command at fault and where to read more.
func printUsageError(w io.Writer, c *cobra.Command, err error) {
	if msg := err.Error(); strings.HasPrefix(msg, "cloister") {
		fmt.Fprintln(w, msg) // it names the command already
	} else {
		fmt.Fprintf(w, "cloister: %s\n", msg)
	}
	if c == nil {
		return
	}
	line := c.UseLine()
	if c.Annotations[annotationGroup] != "" {
		line = c.CommandPath() + " COMMAND [flags] [args]"
	}
	fmt.Fprintf(w, "\nUsage:\n  %s\n", line)
	fmt.Fprintf(w, "Run '%s --help' for details.\n", c.CommandPath())
}
