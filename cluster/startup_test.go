package cluster_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/cluster"
)

// TestStartFailsFast: a NATS port, a cluster port already in use or a
// store directory that is a file is an error naming the cause as soon as
// the server reports it, not after the start-up timeout.
func TestStartFailsFast(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		opts cluster.Options
		want string
	}{
		{"nats port in use", cluster.Options{NATSListen: taken.Addr().String()}, "listening on port"},
		{"cluster port in use", cluster.Options{NATSListen: "127.0.0.1:-1", ClusterListen: taken.Addr().String()}, "router port"},
		{"store dir is a file", cluster.Options{NATSListen: "127.0.0.1:-1", StoreDir: file}, "JetStream"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Logger = quietLogger()
			// A long deadline: the test would hang on it if the failure
			// were not noticed.
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			n, err := cluster.Start(ctx, tc.opts)
			if err == nil {
				n.Close()
				t.Fatal("started")
			}
			if !errors.Is(err, cluster.ErrServerStart) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrServerStart mentioning %q", err, tc.want)
			}
		})
	}
}

// TestStartHonoursCancel: a start-up whose context ends (SIGINT during
// start-up) stops waiting for the server and says why.
func TestStartHonoursCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := cluster.Start(ctx, cluster.Options{NATSListen: "127.0.0.1:-1", Logger: quietLogger()})
	if err == nil {
		// The server may have been ready at the first look: that is fine.
		n.Close()
		return
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}

func TestListenAddressesNeverFallBackToAllInterfaces(t *testing.T) {
	for _, bad := range []string{"127.0.0.1", ":4222", "127.0.0.1:99999", "127.0.0.1:x", ""} {
		if err := cluster.CheckListenAddress("NATS listen address", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
		n, err := cluster.Start(context.Background(), cluster.Options{NATSListen: bad + "", ClusterListen: "127.0.0.1:-1", Logger: quietLogger()})
		if bad == "" {
			// Empty NATSListen with a cluster: the default 127.0.0.1:-1.
			if err != nil {
				t.Errorf("default listen: %v", err)
			} else {
				n.Close()
			}
			continue
		}
		if err == nil {
			n.Close()
			t.Errorf("cluster.Start with NATS listen %q started", bad)
		}
	}
	for _, good := range []string{"127.0.0.1:-1", "127.0.0.1:0", "0.0.0.0:4222", "[::1]:4222"} {
		if err := cluster.CheckListenAddress("x", good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	for _, bad := range []string{"127.0.0.1", "nats-route://:6222", "127.0.0.1:0", "host:70000", "nats-route://"} {
		if _, err := cluster.ParseRoute(bad); err == nil {
			t.Errorf("route %q accepted", bad)
		}
	}
	if _, err := cluster.ParseRoute("127.0.0.1:6222"); err != nil {
		t.Error(err)
	}
}
