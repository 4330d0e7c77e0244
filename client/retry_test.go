package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/provision"
)

// TestCoordinatorStatusAsksAgainWhileAReplicaCannotAnswer: a replica being
// admitted refuses with CodeUnavailable; the status is asked again and
// the answer comes once one can. A replica that never can is reported with
// its refusal, and any other refusal is not asked again.
func TestCoordinatorStatusAsksAgainWhileAReplicaCannotAnswer(t *testing.T) {
	b, err := bus.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	var asked atomic.Int32
	var refuseWith atomic.Int32
	refuseWith.Store(provision.CodeUnavailable)
	var refusals atomic.Int32
	refusals.Store(2)
	if _, err := b.Consumer(provision.AddressStatus, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		asked.Add(1)
		if refusals.Add(-1) >= 0 {
			_ = m.Fail(int(refuseWith.Load()), "coordinator replica 1 is admitting")
			return
		}
		body, _ := provision.Encode(provision.Status{ManifestSet: true, ManifestHash: "ab"})
		_ = m.Reply(body)
	})); err != nil {
		t.Fatal(err)
	}
	st, err := CoordinatorStatus(t.Context(), b, 5*time.Second)
	if err != nil || st.ManifestHash != "ab" || asked.Load() != 3 {
		t.Fatalf("status %+v, %v after %d requests; want the answer after two refusals", st, err, asked.Load())
	}

	refusals.Store(1 << 20) // never answers
	_, err = CoordinatorStatus(t.Context(), b, 300*time.Millisecond)
	var re *bus.ReplyError
	if !errors.As(err, &re) || re.Code != provision.CodeUnavailable {
		t.Fatalf("a replica that never answers: %v, want its refusal", err)
	}

	asked.Store(0)
	refuseWith.Store(provision.CodeRefused)
	if _, err = CoordinatorStatus(t.Context(), b, 5*time.Second); !errors.As(err, &re) || re.Code != provision.CodeRefused || asked.Load() != 1 {
		t.Fatalf("another refusal: %v after %d requests, want it at once", err, asked.Load())
	}
}
