package client

import (
	"context"
	"errors"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/provision"
)

// askCoordinator sends body to one of the coordinator's addresses and
// returns the answer. With replicas, the one that takes the request may be
// unable to answer now (provision.CodeUnavailable: it is being admitted,
// or waits for the owner's recovery statement) while another can: such a
// refusal is asked again, with a growing pause, until timeout (the bus's
// default when zero) runs out; the last refusal is returned then.
func askCoordinator(ctx context.Context, b *bus.Bus, address string, body []byte, timeout time.Duration) (*bus.Message, error) {
	var opts []bus.DeliveryOption
	patience := timeout
	if timeout > 0 {
		opts = append(opts, bus.Timeout(timeout))
	} else {
		patience = DefaultTimeout
	}
	deadline := time.Now().Add(patience)
	pause := 20 * time.Millisecond
	for {
		m, err := b.Request(ctx, address, body, opts...)
		var re *bus.ReplyError
		if err == nil || !errors.As(err, &re) || re.Failure != bus.FailureRecipient || re.Code != provision.CodeUnavailable ||
			time.Now().Add(pause).After(deadline) {
			return m, err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}
