package bus_test

import (
	"testing"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/bus/bustest"
)

func TestLocalNetworkConformance(t *testing.T) {
	bustest.Run(t, bustest.Harness{
		Transports: func(t *testing.T, n int) []bus.Transport {
			net := bus.NewLocalNetwork()
			out := make([]bus.Transport, n)
			for i := range out {
				out[i] = net.Attach()
			}
			return out
		},
	})
}
