package enclave

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cloister-dev/cloister/wire"
)

// Rejections asks the running instance (Health ECALL, bounded by ctx, at
// most 5 s) how many messages its trusted runtime rejected on secured and
// client-channel addresses — forged, tampered, replayed, of a retired key
// epoch, in the clear, or without the right to consume — by address and
// reason. Counts only: the enclave never reports contents. An enclave that
// rejected nothing, or does not join a coordinator, reports an empty map.
// The counts start over when the instance restarts.
func (e *Enclave) Rejections(ctx context.Context) (map[string]map[string]uint64, error) {
	s := e.cur.Load()
	if s == nil {
		return nil, e.downError()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	st, err := s.health(ctx)
	if err != nil {
		return nil, fmt.Errorf("enclave %s: health: %w", e.name, err)
	}
	return parseRejections(st.Detail)
}

// parseRejections decodes the counters of a health detail (untrusted
// input: a hostile enclave can only make its own counts wrong).
func parseRejections(detail string) (map[string]map[string]uint64, error) {
	out := map[string]map[string]uint64{}
	rest, ok := strings.CutPrefix(detail, wire.HealthRejectionsPrefix)
	if !ok {
		return out, nil
	}
	if err := json.Unmarshal([]byte(rest), &out); err != nil {
		return nil, fmt.Errorf("enclave: rejection counters in the health detail: %w", err)
	}
	if out == nil { // "null"
		out = map[string]map[string]uint64{}
	}
	return out, nil
}
