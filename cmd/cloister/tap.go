package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/cloister-dev/cloister/cluster"
)

func tapCommand() *cobra.Command {
	var cf clientFlags
	var maxBody int
	var count int
	var noReplies bool
	cmd := &cobra.Command{
		Use:   "tap [PATTERN]",
		Short: "print the bus traffic as someone with access to the broker sees it",
		Long: `Subscribes to the bus's NATS subjects as a plain NATS client and prints
every message: time, kind (send, request, publish, durable, reply), address,
headers and body. A body that is not printable text is shown as hex. It is
an eavesdropper: use it to check what crosses the broker in clear.

PATTERN is an address pattern with NATS wildcards ('*' one segment, '>' the
rest), e.g. 'meter.>'; without it every address is shown. Replies travel on
the requesters' inboxes, which carry no address: they are all shown unless
--no-replies.

Note: while a tap listens on the send subjects, a request to an address
without consumers reaches the tap instead of failing at once with "no
handlers"; it then fails at its timeout.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) > 1 {
				return &usageError{err: fmt.Errorf("want at most one PATTERN, got %d arguments", len(args))}
			}
			pattern := ">"
			if len(args) == 1 {
				pattern = args[0]
				if err := validatePattern(pattern); err != nil {
					return &usageError{err: err}
				}
			}
			opts := cf.options(env)
			nopts := []nats.Option{nats.Name("cloister-tap"), nats.MaxReconnects(-1)}
			if opts.CredentialsFile != "" {
				nopts = append(nopts, nats.UserCredentials(opts.CredentialsFile))
			}
			if opts.NKeyFile != "" {
				o, err := nats.NkeyOptionFromSeed(opts.NKeyFile)
				if err != nil {
					return fmt.Errorf("--nkey: %w", err)
				}
				nopts = append(nopts, o)
			}
			if opts.TLSCert != "" || opts.TLSKey != "" {
				nopts = append(nopts, nats.ClientCert(opts.TLSCert, opts.TLSKey))
			}
			if opts.TLSCA != "" {
				nopts = append(nopts, nats.RootCAs(opts.TLSCA))
			}
			nc, err := nats.Connect(strings.Join(opts.Servers, ","), nopts...)
			if err != nil {
				return fmt.Errorf("tap: connecting to %s (-s/--server): %w", redactURLs(opts.Servers), err)
			}
			defer nc.Close()
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			out := &lockedWriter{w: env.stdout}
			var seen int
			var mu sync.Mutex
			handle := func(m *nats.Msg) {
				out.write(formatTap(time.Now(), m, maxBody))
				if count > 0 {
					mu.Lock()
					seen++
					if seen >= count {
						cancel()
					}
					mu.Unlock()
				}
			}
			subjects := []string{cluster.SendPrefix + pattern, cluster.PublishPrefix + pattern, cluster.DurablePrefix + pattern}
			if !noReplies {
				subjects = append(subjects, cluster.ReplyPrefix+".>")
			}
			for _, s := range subjects {
				if _, err := nc.Subscribe(s, handle); err != nil {
					return fmt.Errorf("tap: subscribe %s: %w", s, err)
				}
			}
			if err := nc.Flush(); err != nil {
				return fmt.Errorf("tap: %w", err)
			}
			fmt.Fprintf(env.stderr, "cloister tap: listening on %s for %s\n", nc.ConnectedUrlRedacted(), pattern)
			<-ctx.Done()
			return nil
		}),
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.IntVar(&maxBody, "max-body", 512, "show at most this many bytes of each body (0: all)")
	fs.IntVar(&count, "count", 0, "exit after this many messages (0: run until interrupted)")
	fs.BoolVar(&noReplies, "no-replies", false, "do not show replies")
	return cmd
}

// validatePattern checks an address pattern: address segments, '*' for
// one segment, '>' as the last.
func validatePattern(p string) error {
	segs := strings.Split(p, ".")
	for i, s := range segs {
		switch {
		case s == "*":
		case s == ">":
			if i != len(segs)-1 {
				return fmt.Errorf("pattern %q: '>' must be the last segment", p)
			}
		case s == "" || strings.ContainsAny(s, "*> \t$"):
			return fmt.Errorf("pattern %q: bad segment %q", p, s)
		}
	}
	return nil
}

// formatTap renders one message as the tap prints it.
func formatTap(at time.Time, m *nats.Msg, maxBody int) string {
	var kind, address string
	switch {
	case strings.HasPrefix(m.Subject, cluster.SendPrefix):
		kind, address = "send", strings.TrimPrefix(m.Subject, cluster.SendPrefix)
		if m.Reply != "" {
			kind = "request"
		}
	case strings.HasPrefix(m.Subject, cluster.PublishPrefix):
		kind, address = "publish", strings.TrimPrefix(m.Subject, cluster.PublishPrefix)
	case strings.HasPrefix(m.Subject, cluster.DurablePrefix):
		kind, address = "durable", strings.TrimPrefix(m.Subject, cluster.DurablePrefix)
	case strings.HasPrefix(m.Subject, cluster.ReplyPrefix+"."):
		kind, address = "reply", m.Subject
	default:
		kind, address = "other", m.Subject
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", at.UTC().Format("15:04:05.000000"), kind, address)
	if m.Reply != "" {
		fmt.Fprintf(&b, " reply-to=%s", m.Reply)
	}
	fmt.Fprintf(&b, " (%d bytes)\n", len(m.Data))
	keys := make([]string, 0, len(m.Header))
	for k := range m.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range m.Header[k] {
			fmt.Fprintf(&b, "  %s: %s\n", k, strconv.Quote(v)[1:len(strconv.Quote(v))-1])
		}
	}
	body := m.Data
	cut := ""
	if maxBody > 0 && len(body) > maxBody {
		body, cut = body[:maxBody], fmt.Sprintf("  … %d more bytes\n", len(m.Data)-maxBody)
	}
	if len(body) > 0 {
		if isText(body) {
			for _, line := range strings.SplitAfter(string(body), "\n") {
				if line != "" {
					b.WriteString("  | " + strings.TrimSuffix(line, "\n") + "\n")
				}
			}
		} else {
			for _, line := range strings.SplitAfter(hex.Dump(body), "\n") {
				if line != "" {
					b.WriteString("  " + line)
				}
			}
		}
	}
	b.WriteString(cut)
	return b.String()
}

// isText reports whether body is UTF-8 text without control characters
// other than newline and tab.
func isText(body []byte) bool {
	if !utf8.Valid(body) {
		return false
	}
	for _, r := range string(body) {
		if (r < ' ' && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// printable renders a body on one line: text quoted, anything else hex,
// cut at max bytes.
func printable(body []byte, max int) string {
	cut := ""
	if len(body) > max {
		body, cut = body[:max], "…"
	}
	if isText(body) {
		return strconv.Quote(string(body)) + cut
	}
	return "hex:" + hex.EncodeToString(body) + cut
}

// lockedWriter serializes writes from handlers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) write(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, s)
}

func (l *lockedWriter) printf(format string, a ...any) { l.write(fmt.Sprintf(format, a...)) }
