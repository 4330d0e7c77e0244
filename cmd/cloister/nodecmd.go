package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/cluster"
	"github.com/cloister-dev/cloister/node"
	"github.com/cloister-dev/cloister/tracing"
)

func nodeCommand() *cobra.Command {
	var v nodeVerb
	cmd := &cobra.Command{
		Use:   "node",
		Short: "run a node: an embedded NATS server (or a client of external NATS) and a bus",
		Long: `Runs a Cloister node until SIGINT or SIGTERM. By default the node runs an
embedded NATS server listening for clients (the other cloister verbs) on
--nats-listen. Nodes form a cluster through routes: give each one a
--cluster-listen address and --routes to one or more of the others (seed
routes; listing every node, itself included, is fine). With -s/--server the
node runs no server and joins an external NATS cluster instead.

Example, three nodes on one machine:

  cloister node --name n1 --nats-listen 127.0.0.1:4222 --cluster-listen 127.0.0.1:6222
  cloister node --name n2 --nats-listen 127.0.0.1:4223 --cluster-listen 127.0.0.1:6223 --routes 127.0.0.1:6222
  cloister node --name n3 --nats-listen 127.0.0.1:4224 --cluster-listen 127.0.0.1:6224 --routes 127.0.0.1:6222`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			return v.run(ctx, env, args)
		}),
	}
	v.register(cmd.Flags())
	return cmd
}

// nodeVerb holds the flags of a verb that runs a node (cloister node,
// cloister coordinator) and runs it.
type nodeVerb struct {
	name, natsListen, clusterListen, clusterName string
	routes, servers, storeDir, metrics, traceURL string
	logs                                         logFlags
	durable                                      []string
	// coordinator makes the operations endpoint report the coordinator.
	coordinator bool
	cf          clientFlags
	ackWait     time.Duration
	enclaves    enclaveHosting
}

// register declares the node's flags on fs.
func (v *nodeVerb) register(fs *pflag.FlagSet) {
	fs.StringVar(&v.name, "name", "", "node name (default: a random one)")
	fs.StringVar(&v.natsListen, "nats-listen", "127.0.0.1:4222", "host:port for NATS clients (port -1: any free port)")
	fs.StringVar(&v.clusterListen, "cluster-listen", "", "host:port for routes from other nodes (empty: not clustered)")
	fs.StringVar(&v.clusterName, "cluster-name", cluster.DefaultClusterName, "NATS cluster name, the same on every node")
	fs.StringVar(&v.routes, "routes", "", "comma-separated seed routes (host:port or nats-route://host:port)")
	fs.StringVarP(&v.servers, "server", "s", "", "comma-separated `URLs` of an external NATS cluster to join instead of running the embedded server ($NATS_URL is not read: a node runs its own server unless told)")
	aliasFlags(fs, map[string]string{"servers": "server"})
	fs.StringVar(&v.cf.creds, "creds", "", "NATS credentials file (with --server)")
	fs.StringVar(&v.cf.nkey, "nkey", "", "NATS nkey seed file (with --server)")
	fs.StringVar(&v.cf.tlsCert, "tls-cert", "", "client certificate (PEM) for --server")
	fs.StringVar(&v.cf.tlsKey, "tls-key", "", "client key (PEM) for --server")
	fs.StringVar(&v.cf.tlsCA, "tls-ca", "", "CA certificates (PEM) for --server")
	fs.StringVar(&v.storeDir, "store-dir", "", "enable JetStream on the embedded server, storing in this directory")
	fs.StringArrayVar(&v.durable, "durable", nil, "declare `address` durable (at-least-once on JetStream): this node creates its consumer, and every sender that connects afterwards sends to it durably; repeatable")
	durationVar(fs, &v.ackWait, "ack-wait", cluster.DefaultAckWait, "how long a durable message may stay unacknowledged before it is delivered again")
	fs.StringVar(&v.metrics, "metrics", "", "serve Prometheus /metrics, /healthz and /readyz on this `host:port` (127.0.0.1:9090 for this machine only; port 0: a free port, printed at start); empty: none")
	fs.StringVar(&v.traceURL, "trace-endpoint", "", "export OpenTelemetry spans of the node's messages to this OTLP/HTTP `URL` (e.g. http://127.0.0.1:4318/v1/traces); empty: no tracing")
	v.logs.register(fs, "info")
	v.enclaves.register(fs)
}

// run runs the node until ctx ends.
func (v *nodeVerb) run(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 {
		return &usageError{err: fmt.Errorf("node takes no arguments, got %q", args)}
	}
	logger, level, err := v.logs.logger(env.stderr)
	if err != nil {
		return err
	}
	if v.metrics != "" {
		if err := cluster.CheckListenAddress("--metrics", v.metrics); err != nil {
			return &usageError{err: err}
		}
	}
	if v.traceURL != "" {
		if err := tracing.CheckEndpoint(v.traceURL); err != nil {
			return &usageError{err: fmt.Errorf("--trace-endpoint: %w", err)}
		}
	}
	opts := cluster.Options{
		Name:            v.name,
		ClusterName:     v.clusterName,
		Routes:          splitList(v.routes),
		Servers:         splitList(v.servers),
		CredentialsFile: v.cf.creds,
		NKeyFile:        v.cf.nkey,
		TLSCert:         v.cf.tlsCert,
		TLSKey:          v.cf.tlsKey,
		TLSCA:           v.cf.tlsCA,
		StoreDir:        v.storeDir,
		Durable:         v.durable,
		AckWait:         v.ackWait,
		Logger:          logger,
		ServerDebug:     level <= slog.LevelDebug,
	}
	if len(opts.Servers) == 0 {
		opts.NATSListen = v.natsListen
		opts.ClusterListen = v.clusterListen
	} else if v.clusterListen != "" || len(opts.Routes) > 0 || v.storeDir != "" {
		return &usageError{err: errors.New("--server excludes --cluster-listen, --routes and --store-dir (they configure the embedded server)")}
	}
	for _, a := range v.durable {
		if err := bus.ValidateAddress(a); err != nil {
			return &usageError{err: fmt.Errorf("--durable: %w", err)}
		}
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	cn, err := cluster.Start(startCtx, opts)
	cancel()
	if err != nil && len(opts.Servers) > 0 {
		return fmt.Errorf("joining %s (-s/--server): %w", redactURLs(opts.Servers), err)
	}
	if err != nil {
		return err
	}
	b, err := bus.New(bus.WithTransport(cn.Transport()), bus.WithLogger(logger))
	if err != nil {
		_ = cn.Close()
		return err
	}
	nopts := node.Options{Bus: b, Logger: logger, Ops: node.OpsOptions{Listen: v.metrics, Coordinator: v.coordinator}}
	if v.traceURL != "" {
		nopts.Tracing = tracing.Options{Endpoint: v.traceURL, ServiceName: "cloister-node", Attributes: map[string]string{"cloister.node": cn.Name()}}
	}
	v.enclaves.jsonLogs = v.logs.json()
	stopEnclaves, err := v.enclaves.host(ctx, env, nopts)
	if err != nil {
		_ = b.Close(context.Background())
		_ = cn.Close()
		return err
	}
	logger.Info("cloister node: ready", "name", cn.Name(), "clients", cn.ClientURL(), "cluster", cn.ClusterURL())
	<-ctx.Done()
	logger.Info("cloister node: shutting down")
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(stopEnclaves(closeCtx), b.Close(closeCtx), cn.Close())
	logger.Info("cloister node: stopped")
	return err
}
