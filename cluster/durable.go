package cluster

import (
	"context"

	"github.com/cloister-dev/cloister/bus"
)

type durableState struct{}
type durableSub struct{}

func newDurableState(ctx context.Context, t *Transport, cfg transportConfig) (*durableState, error) {
	return &durableState{}, nil
}
func (d *durableState) isDurable(address string) bool                     { return false }
func (d *durableState) subscribe(s *subscription) (*durableSub, error)    { return nil, nil }
func (d *durableState) send(ctx context.Context, env *bus.Envelope) error { return nil }
func (d *durableState) close()                                            {}
func (d *durableSub) stop()                                               {}
