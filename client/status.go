package client

import (
	"context"
	"fmt"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/provision"
)

// CoordinatorStatus asks the coordinator for its status (manifest, epoch,
// joins and refusals, evidence type), waiting at most timeout (the bus's
// default when zero); a replica that cannot answer now is asked again
// within it. The answer is not attested: it is what an operator's
// dashboard or a readiness check reads; trust decisions go through Connect.
func CoordinatorStatus(ctx context.Context, b *bus.Bus, timeout time.Duration) (*provision.Status, error) {
	m, err := askCoordinator(ctx, b, provision.AddressStatus, nil, timeout)
	if err != nil {
		return nil, fmt.Errorf("coordinator status: %w", err)
	}
	var st provision.Status
	if err := provision.Decode(m.Body(), &st); err != nil {
		return nil, fmt.Errorf("coordinator status: %w", err)
	}
	return &st, nil
}
