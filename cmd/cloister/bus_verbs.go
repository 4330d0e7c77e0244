package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
)

// defaultServers is where the bus verbs find a node unless -s/--server or
// $NATS_URL say otherwise: the client port `cloister node` listens on by
// default.
const defaultServers = "nats://127.0.0.1:4222"

// clientFlags are the connection flags shared by the verbs that talk to a
// running system as a NATS client.
type clientFlags struct {
	servers string
	creds   string
	nkey    string
	tlsCert string
	tlsKey  string
	tlsCA   string
	durable []string
	verbose bool
}

// register declares the connection flags on fs; -s/--server defaults to
// $NATS_URL, as with the nats CLI (--servers is the old name).
func (c *clientFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&c.servers, "server", "s", envOr("NATS_URL", defaultServers), "comma-separated NATS server `URLs` of the system ($NATS_URL)")
	aliasFlags(fs, map[string]string{"servers": "server"})
	fs.StringVar(&c.creds, "creds", "", "NATS credentials file")
	fs.StringVar(&c.nkey, "nkey", "", "NATS nkey seed file")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "client certificate (PEM) for TLS")
	fs.StringVar(&c.tlsKey, "tls-key", "", "client key (PEM) for TLS")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "CA certificates (PEM) that sign the servers' certificates")
	fs.StringArrayVar(&c.durable, "durable", nil, "treat `address` as durable (at-least-once on JetStream) even if no node has declared it yet; addresses already declared durable are durable without it; repeatable")
	fs.BoolVar(&c.verbose, "verbose", false, "log connection events")
}

func (c *clientFlags) options(env *cliEnv) cluster.Options {
	level := slog.LevelWarn
	if c.verbose {
		level = slog.LevelDebug
	}
	return cluster.Options{
		Name:            "cloister-cli",
		Servers:         splitList(c.servers),
		CredentialsFile: c.creds,
		NKeyFile:        c.nkey,
		TLSCert:         c.tlsCert,
		TLSKey:          c.tlsKey,
		TLSCA:           c.tlsCA,
		Durable:         c.durable,
		Logger:          slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: level})),
	}
}

// connect joins the system as a client node and returns a bus on it.
func (c *clientFlags) connect(ctx context.Context, env *cliEnv) (*bus.Bus, func(), error) {
	opts := c.options(env)
	if len(opts.Servers) == 0 {
		return nil, nil, &usageError{err: errors.New("-s/--server is empty (want a NATS URL such as " + defaultServers + ")")}
	}
	startCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	node, err := cluster.Start(startCtx, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to %s (-s/--server): %w", redactURLs(opts.Servers), err)
	}
	b, err := bus.New(bus.WithTransport(node.Transport()), bus.WithLogger(opts.Logger))
	if err != nil {
		_ = node.Close()
		return nil, nil, err
	}
	closeAll := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Close(ctx)
		_ = node.Close()
	}
	return b, closeAll, nil
}

// redactURLs lists server URLs for an error message, passwords hidden.
func redactURLs(servers []string) string {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = s
		if u, err := url.Parse(s); err == nil && u.User != nil {
			out[i] = u.Redacted()
		}
	}
	return strings.Join(out, ",")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// messageFlags are the per-message flags of send, publish and request.
type messageFlags struct {
	headers []string
	timeout time.Duration
}

func (m *messageFlags) register(fs *pflag.FlagSet, withTimeout bool) {
	fs.StringArrayVarP(&m.headers, "header", "H", nil, "header `key=value` (repeatable)")
	if withTimeout {
		durationVar(fs, &m.timeout, "timeout", 5*time.Second, "how long to wait for the reply")
	}
}

func (m *messageFlags) deliveryOptions() ([]bus.DeliveryOption, error) {
	var opts []bus.DeliveryOption
	for _, h := range m.headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return nil, &usageError{err: fmt.Errorf("--header %q: want key=value", h)}
		}
		if err := bus.ValidateHeader(k, v); err != nil {
			return nil, &usageError{err: err}
		}
		opts = append(opts, bus.Header(k, v))
	}
	if m.timeout < 0 {
		return nil, &usageError{err: fmt.Errorf("--timeout must be positive, got %v", m.timeout)}
	}
	if m.timeout > 0 {
		opts = append(opts, bus.Timeout(m.timeout))
	}
	return opts, nil
}

// addressAndBody reads ADDRESS [BODY]; without BODY the body is stdin.
func addressAndBody(env *cliEnv, args []string) (string, []byte, error) {
	if len(args) < 1 || len(args) > 2 {
		return "", nil, &usageError{err: fmt.Errorf("want ADDRESS [BODY], got %d arguments", len(args))}
	}
	if err := bus.ValidateAddress(args[0]); err != nil {
		return "", nil, &usageError{err: err}
	}
	if len(args) == 2 {
		return args[0], []byte(args[1]), nil
	}
	body, err := io.ReadAll(env.stdin)
	if err != nil {
		return "", nil, fmt.Errorf("reading the body from stdin: %w", err)
	}
	return args[0], body, nil
}

const bodyHelp = `The body is BODY, or standard input when BODY is absent. The command
connects to a running system (see 'cloister node') through -s/--server.`

func sendCommand() *cobra.Command {
	return oneWayCommand("send", "deliver a message to one consumer of ADDRESS")
}
func publishCommand() *cobra.Command {
	return oneWayCommand("publish", "deliver a message to every consumer of ADDRESS")
}

func oneWayCommand(name, summary string) *cobra.Command {
	var cf clientFlags
	var mf messageFlags
	var count int
	cmd := &cobra.Command{
		Use:   name + " ADDRESS [BODY]",
		Short: summary,
		Long: bodyHelp + `

With --count N the message is sent N times; "{{n}}" in the body becomes the
message's number (1 to N).`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			address, body, err := addressAndBody(env, args)
			if err != nil {
				return err
			}
			opts, err := mf.deliveryOptions()
			if err != nil {
				return err
			}
			if count < 1 {
				return &usageError{err: fmt.Errorf("--count must be at least 1, got %d", count)}
			}
			b, closeAll, err := cf.connect(ctx, env)
			if err != nil {
				return err
			}
			defer closeAll()
			numbered := strings.Contains(string(body), "{{n}}")
			for i := 1; i <= count; i++ {
				msg := body
				if numbered {
					msg = []byte(strings.ReplaceAll(string(body), "{{n}}", strconv.Itoa(i)))
				}
				if name == "send" {
					err = b.Send(ctx, address, msg, opts...)
				} else {
					err = b.Publish(ctx, address, msg, opts...)
				}
				if err != nil {
					return err
				}
			}
			// Make sure the message left before the connection closes.
			return flushTransport(b)
		}),
	}
	fs := cmd.Flags()
	cf.register(fs)
	mf.register(fs, false)
	fs.IntVar(&count, "count", 1, "send the message this many times")
	return cmd
}

func flushTransport(b *bus.Bus) error {
	if t, ok := b.Transport().(*cluster.Transport); ok {
		if err := t.Conn().FlushTimeout(5 * time.Second); err != nil {
			return fmt.Errorf("flushing to NATS: %w", err)
		}
	}
	return nil
}

func requestCommand() *cobra.Command {
	var cf clientFlags
	var mf messageFlags
	var showHeaders bool
	var sf secureFlags
	cmd := &cobra.Command{
		Use: "request ADDRESS [BODY]",
		Example: `  cloister request -s nats://127.0.0.1:4222 greeter.hello "hi"
  echo hi | cloister request --timeout 2s -H trace=t-1 greeter.hello
  cloister request --secure --service counter --manifest manifest.yaml --allow-simulation \
      --client meter-7 --client-key meter-7.pem counter.inc alice`,
		Short: "send a request to one consumer of ADDRESS and print its reply",
		Long: bodyHelp + `

The reply's body is printed on standard output (--show-headers prints its
headers first). A failed request exits with code 1 and says why: no
handlers, timeout, or the consumer's failure code and message.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			address, body, err := addressAndBody(env, args)
			if err != nil {
				return err
			}
			opts, err := mf.deliveryOptions()
			if err != nil {
				return err
			}
			if sf.secure {
				return secureRequest(ctx, env, &cf, &sf, address, body, opts)
			}
			b, closeAll, err := cf.connect(ctx, env)
			if err != nil {
				return err
			}
			defer closeAll()
			r, err := b.Request(ctx, address, body, opts...)
			if err != nil {
				return err
			}
			if showHeaders {
				writeHeaders(env.stdout, "", r.Headers())
			}
			writeBody(env.stdout, r.Body())
			return nil
		}),
	}
	fs := cmd.Flags()
	cf.register(fs)
	mf.register(fs, true)
	fs.BoolVar(&showHeaders, "show-headers", false, "print the reply's headers before its body")
	sf.register(fs)
	return cmd
}

func writeHeaders(w io.Writer, indent string, h bus.Headers) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s%s: %s\n", indent, k, h[k])
	}
}

func writeBody(w io.Writer, body []byte) {
	bw := bufio.NewWriter(w)
	bw.Write(body)
	if len(body) == 0 || body[len(body)-1] != '\n' {
		bw.WriteByte('\n')
	}
	bw.Flush()
}

func replyCommand() *cobra.Command {
	var cf clientFlags
	var echo, quiet bool
	var count int
	var failCode int
	var delay time.Duration
	cmd := &cobra.Command{
		Use: "reply ADDRESS [--echo | BODY]",
		Example: `  cloister reply --echo greeter.hello
  cloister reply --count 1 greeter.hello "hello yourself"
  cloister reply --fail 503 greeter.hello "not today"`,
		Short: "answer the requests sent to ADDRESS (for smoke tests and demos)",
		Long: `Registers a consumer at ADDRESS and answers every request with BODY, or
with the request's own body and headers (--echo). Each message received is
printed on standard output. It runs until interrupted, or until --count
messages were handled. Durable messages (see --durable) are acknowledged
once printed and answered; each line shows the message's ID.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return &usageError{err: fmt.Errorf("want ADDRESS [BODY], got %d arguments", len(args))}
			}
			address := args[0]
			if err := bus.ValidateAddress(address); err != nil {
				return &usageError{err: err}
			}
			if echo == (len(args) == 2) {
				return &usageError{err: errors.New("give either --echo or BODY")}
			}
			var body []byte
			if len(args) == 2 {
				body = []byte(args[1])
			}
			b, closeAll, err := cf.connect(ctx, env)
			if err != nil {
				return err
			}
			defer closeAll()
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			var handled atomic.Int64
			out := &lockedWriter{w: env.stdout}
			var h bus.Handler = bus.HandlerFunc(func(_ context.Context, m *bus.Message) {
				if delay > 0 {
					time.Sleep(delay)
				}
				if !quiet {
					id := ""
					if v := m.Header(cluster.HeaderMessageID); v != "" {
						id = " id=" + v + " delivery=" + m.Header(cluster.HeaderDelivery)
					}
					out.printf("%s %s (%d bytes)%s: %s\n", m.Kind(), address, len(m.Body()), id, printable(m.Body(), 200))
				}
				if m.ReplyExpected() {
					var err error
					switch {
					case failCode != 0:
						err = m.Fail(failCode, string(body))
					case echo:
						err = m.Reply(m.Body(), bus.WithHeaders(userHeaders(m.Headers())))
					default:
						err = m.Reply(body)
					}
					if err != nil {
						fmt.Fprintf(env.stderr, "cloister reply: answering: %v\n", err)
					}
				}
				if count > 0 && handled.Add(1) >= int64(count) {
					cancel()
				}
			})
			if _, err := b.Consumer(address, h); err != nil {
				return err
			}
			fmt.Fprintf(env.stderr, "cloister reply: listening on %s\n", address)
			<-ctx.Done()
			return nil
		}),
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.BoolVar(&echo, "echo", false, "answer with the request's body and headers")
	fs.BoolVar(&quiet, "quiet", false, "do not print the messages received")
	fs.IntVar(&count, "count", 0, "exit after this many messages (0: run until interrupted)")
	fs.IntVar(&failCode, "fail", 0, "fail every request with this code and BODY as the message")
	durationVar(fs, &delay, "delay", 0, "spend this long on each message (a slow consumer)")
	return cmd
}

func userHeaders(h bus.Headers) bus.Headers {
	out := bus.Headers{}
	for k, v := range h {
		if !strings.HasPrefix(k, bus.ReservedHeaderPrefix) {
			out[k] = v
		}
	}
	return out
}
