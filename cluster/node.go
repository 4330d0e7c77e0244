package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// DefaultClusterName is the NATS cluster name embedded servers use unless
// [Options.ClusterName] says otherwise; all nodes of a cluster must agree.
const DefaultClusterName = "cloister"

// RandomPort as the port of a listen address ("127.0.0.1:-1") picks a free
// port; tests use it.
const RandomPort = -1

// Options configure a node. The zero value is a valid node: an embedded
// server reachable only in process, not clustered, without JetStream.
type Options struct {
	// Name names the node (its server name and its NATS connection name).
	// Default: "cloister-<random>".
	Name string

	// NATSListen is the host:port on which the embedded server accepts
	// NATS clients (such as the cloister CLI). Empty: no client port when
	// not clustered (the node's own connection is in process anyway); a
	// clustered server needs one, so it then listens on a free loopback
	// port. Port -1 picks a free port. The host is required (see
	// [CheckListenAddress]): 0.0.0.0 listens on every interface, and only
	// when named.
	NATSListen string
	// ClusterListen is the host:port on which the embedded server accepts
	// routes from other nodes. Empty: not clustered. Port -1 picks a free
	// port; the host is required, as for NATSListen.
	ClusterListen string
	// ClusterName is the NATS cluster name (default [DefaultClusterName]).
	ClusterName string
	// Routes are seed routes to other nodes' cluster addresses, as
	// host:port or nats-route://host:port. A node's own address may be
	// listed; the full mesh forms by gossip.
	Routes []string

	// Servers are the URLs of an external NATS cluster. When set, the node
	// runs no embedded server and the server options above must be empty.
	Servers []string
	// CredentialsFile is a NATS credentials (.creds) file for Servers.
	CredentialsFile string
	// NKeyFile is a NATS nkey seed file for Servers.
	NKeyFile string
	// TLS is the client TLS configuration for Servers; when nil, TLSCert,
	// TLSKey and TLSCA build one if set.
	TLS *tls.Config
	// TLSCert and TLSKey are a client certificate and key (PEM files).
	TLSCert, TLSKey string
	// TLSCA is a PEM file of CAs that sign the servers' certificates.
	TLSCA string

	// StoreDir enables JetStream on the embedded server, storing streams
	// there. Durable addresses need JetStream (on the embedded server or on
	// the external Servers).
	StoreDir string
	// Durable declares addresses durable: their sends are at least once,
	// on JetStream. Declaring one is enough: a node or tool that connects
	// later to the same JetStream treats every address declared before it
	// started as durable too, without listing it.
	Durable []string
	// AckWait is how long a durable delivery may stay unacknowledged
	// before it is delivered again (default 30 s).
	AckWait time.Duration

	// Logger receives the node's and the embedded server's log lines.
	// Default: slog.Default().
	Logger *slog.Logger
	// ServerDebug passes the embedded server's debug lines to Logger.
	ServerDebug bool
}

// Node is a cluster node: an optional embedded nats-server and the node's
// bus transport.
type Node struct {
	opts      Options
	logger    *slog.Logger
	srv       *server.Server
	transport *Transport

	closeOnce sync.Once
	closeErr  error
}

// Start starts a node as opts say and connects its transport. The context
// bounds the start-up; it is not kept.
func Start(ctx context.Context, opts Options) (*Node, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Name == "" {
		opts.Name = "cloister-" + nats.NewInbox()[len(nats.InboxPrefix):len(nats.InboxPrefix)+8]
	}
	if opts.ClusterName == "" {
		opts.ClusterName = DefaultClusterName
	}
	if opts.AckWait < 0 {
		return nil, fmt.Errorf("cluster: ack wait %s is negative", opts.AckWait)
	}
	n := &Node{opts: opts, logger: opts.Logger.With("node", opts.Name)}
	if len(opts.Servers) > 0 {
		if opts.NATSListen != "" || opts.ClusterListen != "" || len(opts.Routes) > 0 || opts.StoreDir != "" {
			return nil, errors.New("cluster: external servers exclude the embedded server's options (NATS listen, cluster listen, routes, store dir)")
		}
	} else {
		srv, err := startServer(ctx, opts, n.logger)
		if err != nil {
			return nil, err
		}
		n.srv = srv
	}
	t, err := n.NewTransport(ctx)
	if err != nil {
		n.shutdownServer()
		return nil, err
	}
	n.transport = t
	if n.srv != nil {
		attrs := []any{"clients", n.ClientURL()}
		if u := n.ClusterURL(); u != "" {
			attrs = append(attrs, "cluster", u, "routes", opts.Routes)
		}
		if opts.StoreDir != "" {
			attrs = append(attrs, "jetstream", opts.StoreDir)
		}
		n.logger.Info("cluster: node started with an embedded NATS server", attrs...)
	} else {
		n.logger.Info("cluster: node connected to external NATS", "servers", t.nc.ConnectedUrlRedacted())
	}
	return n, nil
}

// CheckListenAddress checks a listen address as Options.NATSListen and
// Options.ClusterListen take it: host:port with an explicit host (a
// listener never falls back to every interface: name 0.0.0.0 for that) and
// a port from 0 to 65535, or -1 (0 and -1: any free port). what names the
// setting in the error.
func CheckListenAddress(what, hostport string) error {
	_, _, err := splitHostPort(what, hostport)
	return err
}

func splitHostPort(what, hostport string) (string, int, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("cluster: %s %q: want host:port: %w", what, hostport, err)
	}
	if host == "" {
		return "", 0, fmt.Errorf("cluster: %s %q has no host: name one (127.0.0.1 for this machine only, 0.0.0.0 for every interface)", what, hostport)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("cluster: %s %q: bad port %q (want 0 to 65535, or -1)", what, hostport, p)
	}
	if port == 0 {
		port = RandomPort
	}
	return host, port, nil
}

// ParseRoute parses a route as Options.Routes takes it: host:port or
// nats-route://host:port, with a port from 1 to 65535.
func ParseRoute(route string) (*url.URL, error) {
	r := strings.TrimSpace(route)
	if !strings.Contains(r, "://") {
		r = "nats-route://" + r
	}
	u, err := url.Parse(r)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("cluster: bad route %q: want host:port or nats-route://host:port", route)
	}
	if port, err := strconv.Atoi(u.Port()); err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("cluster: bad route %q: port %q (want 1 to 65535)", route, u.Port())
	}
	return u, nil
}

func routeURLs(routes []string) ([]*url.URL, error) {
	var out []*url.URL
	for _, r := range routes {
		if strings.TrimSpace(r) == "" {
			continue
		}
		u, err := ParseRoute(r)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

func startServer(ctx context.Context, opts Options, logger *slog.Logger) (*server.Server, error) {
	if opts.NATSListen == "" && opts.ClusterListen != "" {
		// nats-server starts routing only once its client listener is up.
		opts.NATSListen = "127.0.0.1:-1"
	}
	so := &server.Options{
		ServerName: opts.Name,
		NoSigs:     true,
		DontListen: opts.NATSListen == "",
		JetStream:  opts.StoreDir != "",
		StoreDir:   opts.StoreDir,
	}
	if opts.NATSListen != "" {
		host, port, err := splitHostPort("NATS listen address", opts.NATSListen)
		if err != nil {
			return nil, err
		}
		so.Host, so.Port = host, port
	}
	if opts.ClusterListen != "" {
		host, port, err := splitHostPort("cluster listen address", opts.ClusterListen)
		if err != nil {
			return nil, err
		}
		so.Cluster = server.ClusterOpts{Name: opts.ClusterName, Host: host, Port: port}
		routes, err := routeURLs(opts.Routes)
		if err != nil {
			return nil, err
		}
		so.Routes = routes
	} else if len(opts.Routes) > 0 {
		return nil, errors.New("cluster: routes need a cluster listen address")
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("cluster: embedded NATS server: %w", err)
	}
	fatal := make(chan string, 1)
	srv.SetLoggerV2(&serverLog{l: logger.With("component", "nats-server"), fatal: fatal}, opts.ServerDebug, false, false)
	srv.Start()
	// Wait for the server, but give up at once when it reports a fatal
	// error (a port in use, a store directory it cannot use: it logs them
	// and carries on without the listener) or when ctx ends (a signal).
	wait := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	deadline := time.Now().Add(wait)
	for !srv.ReadyForConnections(25 * time.Millisecond) {
		select {
		case msg := <-fatal:
			srv.Shutdown()
			return nil, fmt.Errorf("%w: %s", ErrServerStart, msg)
		case <-ctx.Done():
			srv.Shutdown()
			return nil, fmt.Errorf("cluster: embedded NATS server: start-up interrupted: %w", context.Cause(ctx))
		default:
		}
		if time.Now().After(deadline) {
			srv.Shutdown()
			return nil, fmt.Errorf("%w: not ready after %s", ErrServerStart, wait.Round(time.Millisecond))
		}
	}
	select {
	case msg := <-fatal:
		srv.Shutdown()
		return nil, fmt.Errorf("%w: %s", ErrServerStart, msg)
	default:
	}
	return srv, nil
}

// ErrServerStart is wrapped when the embedded NATS server cannot start: a
// port in use, a store directory it cannot use; the error carries the
// server's reason.
var ErrServerStart = errors.New("cluster: the embedded NATS server could not start")

// NewTransport opens another connection to the node's server (or to the
// external servers) and returns a transport on it. The node's own
// transport is [Node.Transport]; extra ones are for tools and tests that
// want several buses on one node. The caller (or the bus that owns it)
// closes it.
func (n *Node) NewTransport(ctx context.Context) (*Transport, error) {
	cfg := transportConfig{
		name:    n.opts.Name,
		logger:  n.logger,
		durable: n.opts.Durable,
		ackWait: n.opts.AckWait,
	}
	copts := []nats.Option{nats.Name(n.opts.Name)}
	var servers string
	if n.srv != nil {
		copts = append(copts, nats.InProcessServer(n.srv))
	} else {
		servers = strings.Join(n.opts.Servers, ",")
		if n.opts.CredentialsFile != "" {
			copts = append(copts, nats.UserCredentials(n.opts.CredentialsFile))
		}
		if n.opts.NKeyFile != "" {
			o, err := nats.NkeyOptionFromSeed(n.opts.NKeyFile)
			if err != nil {
				return nil, fmt.Errorf("cluster: nkey file: %w", err)
			}
			copts = append(copts, o)
		}
		switch {
		case n.opts.TLS != nil:
			copts = append(copts, nats.Secure(n.opts.TLS))
		default:
			if n.opts.TLSCert != "" || n.opts.TLSKey != "" {
				copts = append(copts, nats.ClientCert(n.opts.TLSCert, n.opts.TLSKey))
			}
			if n.opts.TLSCA != "" {
				copts = append(copts, nats.RootCAs(n.opts.TLSCA))
			}
		}
	}
	return dial(ctx, servers, cfg, copts...)
}

// Name is the node's name (the one given, or the generated one).
func (n *Node) Name() string { return n.opts.Name }

// Transport is the node's own bus transport. A bus given it with
// bus.WithTransport owns it and closes it; closing the node closes it too.
func (n *Node) Transport() *Transport { return n.transport }

// Server is the embedded nats-server, or nil with external servers.
func (n *Node) Server() *server.Server { return n.srv }

// ClientURL is the URL NATS clients (the cloister CLI) connect to; empty
// when the node has no client port or runs no server.
func (n *Node) ClientURL() string {
	if n.srv == nil || n.srv.Addr() == nil {
		return ""
	}
	return n.srv.ClientURL()
}

// ClusterURL is the route URL other nodes list in their routes; empty when
// the node is not clustered.
func (n *Node) ClusterURL() string {
	if n.srv == nil || n.opts.ClusterListen == "" {
		return ""
	}
	a := n.srv.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats-route://" + a.String()
}

// Close closes the node's transport and shuts the embedded server down.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.transport != nil {
			n.closeErr = n.transport.Close()
		}
		n.shutdownServer()
	})
	return n.closeErr
}

func (n *Node) shutdownServer() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

// serverLog adapts slog to the nats-server logger. The server reports the
// errors that stop it from serving (a listener it cannot open) through
// Fatalf and carries on; the first one goes to fatal too, for startServer.
type serverLog struct {
	l     *slog.Logger
	fatal chan<- string
}

func (s *serverLog) Noticef(format string, v ...any) { s.l.Info(fmt.Sprintf(format, v...)) }
func (s *serverLog) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s *serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	s.l.Error(msg)
	select {
	case s.fatal <- msg:
	default:
	}
}

// Errorf logs at ERROR, except the route retries of a cluster whose nodes
// start one after another: until a peer listens, every node's attempts to
// reach it fail, which is normal during a start and logged at INFO (the
// server itself spaces them out as attempts grow).
func (s *serverLog) Errorf(format string, v ...any) {
	if strings.HasPrefix(format, routeRetryFormat) {
		s.l.Info(fmt.Sprintf(format, v...))
		return
	}
	s.l.Error(fmt.Sprintf(format, v...))
}

// routeRetryFormat starts the nats-server's log format of a failed attempt
// to connect to a route.
const routeRetryFormat = "Error trying to connect to route"

func (s *serverLog) Debugf(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s *serverLog) Tracef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
