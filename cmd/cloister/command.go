package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// command is one node of the verb tree: either a group of subcommands or a
// runnable verb with its own flags.
type command struct {
	name    string
	args    string // synopsis of positional arguments, e.g. "ADDRESS [BODY]"
	summary string // one line, shown in the parent's help
	help    string // longer description, shown in the command's own help

	// flags declares the verb's flags on fs; it may be nil.
	flags func(fs *flag.FlagSet)
	// run executes the verb with the positional arguments left after flags.
	run func(ctx context.Context, env *cliEnv, args []string) error

	subcommands []*command
}

// errHelp reports that help was printed on request; the exit code is 0.
var errHelp = errors.New("help requested")

// usageError is a mistake on the command line; it exits with code 2 and
// prints the command's usage.
type usageError struct {
	err   error
	usage string
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// rejectedError reports a verification or policy failure (exit code 3).
type rejectedError struct{ err error }

func (e *rejectedError) Error() string { return e.err.Error() }
func (e *rejectedError) Unwrap() error { return e.err }

// usagef builds a usage error for c.
func (c *command) usagef(path []string, format string, a ...any) error {
	return &usageError{err: fmt.Errorf(format, a...), usage: c.usage(path)}
}

func (c *command) execute(ctx context.Context, env *cliEnv, path []string, args []string) error {
	path = append(path, c.name)
	// A verb may also have subcommands (cloister coordinator [status]): a
	// first argument naming one of them selects it, anything else runs the
	// verb itself.
	if len(c.subcommands) > 0 && c.run != nil {
		if len(args) > 0 {
			for _, sub := range c.subcommands {
				if sub.name == args[0] {
					return sub.execute(ctx, env, path, args[1:])
				}
			}
		}
	} else if len(c.subcommands) > 0 {
		if len(args) == 0 {
			return c.usagef(path, "%s: missing command", strings.Join(path, " "))
		}
		switch args[0] {
		case "-h", "-help", "--help", "help":
			fmt.Fprint(env.stdout, c.usage(path))
			return errHelp
		}
		for _, sub := range c.subcommands {
			if sub.name == args[0] {
				return sub.execute(ctx, env, path, args[1:])
			}
		}
		return c.usagef(path, "%s: unknown command %q", strings.Join(path, " "), args[0])
	}
	fs := flag.NewFlagSet(strings.Join(path, " "), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if c.flags != nil {
		c.flags(fs)
	}
	if err := fs.Parse(interleave(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(env.stdout, c.usageWithFlags(path, fs))
			return errHelp
		}
		return &usageError{err: err, usage: c.usageWithFlags(path, fs)}
	}
	err := c.run(ctx, env, fs.Args())
	var ue *usageError
	if errors.As(err, &ue) && ue.usage == "" {
		ue.usage = c.usageWithFlags(path, fs)
	}
	return err
}

// interleave moves flags that follow positional arguments in front of them,
// so "cloister request ADDR --timeout 2s" works like the nats CLI. A "--"
// ends flag processing.
func interleave(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	if len(pos) > 0 {
		flags = append(flags, "--")
	}
	return append(flags, pos...)
}

func (c *command) usage(path []string) string {
	var b strings.Builder
	name := strings.Join(path, " ")
	if len(c.subcommands) > 0 && c.run == nil {
		fmt.Fprintf(&b, "%s — %s\n\nUsage:\n  %s COMMAND [flags] [args]\n\nCommands:\n", name, c.summary, name)
		for _, sub := range c.subcommands {
			fmt.Fprintf(&b, "  %-18s %s\n", sub.name, sub.summary)
		}
		fmt.Fprintf(&b, "\nRun '%s COMMAND --help' for details.\n", name)
		return b.String()
	}
	fmt.Fprintf(&b, "Usage:\n  %s [flags] %s\n\n%s\n", name, c.args, c.summary)
	if c.help != "" {
		fmt.Fprintf(&b, "\n%s\n", strings.TrimSpace(c.help))
	}
	if len(c.subcommands) > 0 {
		fmt.Fprintf(&b, "\nCommands:\n")
		for _, sub := range c.subcommands {
			fmt.Fprintf(&b, "  %-18s %s\n", sub.name, sub.summary)
		}
	}
	return b.String()
}

func (c *command) usageWithFlags(path []string, fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString(c.usage(path))
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	if has {
		b.WriteString("\nFlags:\n")
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return b.String()
}

// stringList is a repeatable string flag (e.g. --header k=v --header k2=v2).
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
