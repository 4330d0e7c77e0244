package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Settle waits until every change of interest (subscribe, unsubscribe)
// made so far on the embedded servers of nodes is known to all of them:
// with routes, interest propagates asynchronously. It is for tests and
// tools that run several nodes in one process; it never sleeps blindly.
//
// Routes carry a server's interest changes in order, so once a probe
// subscription made on server i after those changes is visible on server j,
// they are too. Subscribe and Unsubscribe of a [Transport] wait for their
// own server to confirm, so their changes come before the probe.
func Settle(ctx context.Context, nodes ...*Node) error {
	for i, n := range nodes {
		if n.srv == nil {
			return errors.New("cluster: settle: a node without an embedded server")
		}
		if err := settleFrom(ctx, i, n, nodes); err != nil {
			return err
		}
	}
	return nil
}

func settleFrom(ctx context.Context, i int, n *Node, nodes []*Node) error {
	nc, err := nats.Connect("", nats.InProcessServer(n.srv), nats.Name("cloister-settle"))
	if err != nil {
		return fmt.Errorf("cluster: settle: %w", err)
	}
	defer nc.Close()
	probe := SubjectRoot + ".settle." + nats.NewInbox()[len(nats.InboxPrefix):]
	if _, err := nc.SubscribeSync(probe); err != nil {
		return fmt.Errorf("cluster: settle: %w", err)
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("cluster: settle: %w", err)
	}
	for j, other := range nodes {
		if j == i || other.srv == nil {
			continue
		}
		for !other.srv.GlobalAccount().SubscriptionInterest(probe) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("cluster: settle: interest from node %s never reached node %s: %w", n.opts.Name, other.opts.Name, ctx.Err())
			case <-time.After(time.Millisecond):
			}
		}
	}
	return nil
}
