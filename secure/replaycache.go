package secure

import (
	"container/heap"
	"fmt"
	"sync"
	"time"
)

// ReplayCache remembers recent one-shot client requests (protocol v1) so a
// service handles each at most once. A request is admitted if its
// authenticated client time is at most Window old and at most MaxClockSkew
// ahead of the service's clock, and its ID was not seen. IDs are forgotten
// only once their time left the window, so nothing forgotten can be
// replayed; the client's time never moves what the cache covers. At most
// Capacity IDs are kept: when full, new requests are refused
// (ErrTooManyHandshakes) until old ones age out, rather than forgetting
// anything early. It is safe for concurrent use.
type ReplayCache struct {
	window   time.Duration
	capacity int

	mu    sync.Mutex
	seen  map[[32]byte]time.Time
	order timeHeap
}

// NewReplayCache returns a cache admitting requests whose client time is at
// most window old, remembering at most capacity.
func NewReplayCache(window time.Duration, capacity int) *ReplayCache {
	if window <= 0 {
		window = time.Minute
	}
	if capacity <= 0 {
		capacity = 1 << 16
	}
	return &ReplayCache{window: window, capacity: capacity, seen: make(map[[32]byte]time.Time)}
}

// Admit records r (opened by [ServiceKey.OpenRequest]) and returns nil the
// first time it is seen, [ErrReplay] if it was seen, [ErrTooOld] if its
// client time is older than the window, [ErrClockSkew] if it is dated more
// than DefaultMaxClockSkew ahead, and [ErrTooManyHandshakes] when the cache
// is full.
func (c *ReplayCache) Admit(r *RequestHeader, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch d := now.Sub(r.Sent); {
	case d > c.window:
		return fmt.Errorf("%w: client time %s is %s old (window %s)", ErrTooOld, r.Sent.UTC().Format(time.RFC3339Nano), d, c.window)
	case -d > DefaultMaxClockSkew:
		return fmt.Errorf("%w: client time %s is %s ahead (at most %s)", ErrClockSkew, r.Sent.UTC().Format(time.RFC3339Nano), -d, DefaultMaxClockSkew)
	}
	if _, ok := c.seen[r.ID]; ok {
		return fmt.Errorf("%w: request %x", ErrReplay, r.ID[:8])
	}
	// Forget what left the window by itself: the window check refuses it.
	cut := now.Add(-c.window)
	for c.order.Len() > 0 && !c.order[0].t.After(cut) {
		e := heap.Pop(&c.order).(entry)
		delete(c.seen, e.id)
	}
	if c.order.Len() >= c.capacity {
		return fmt.Errorf("%w: the replay cache holds its %d requests", ErrTooManyHandshakes, c.capacity)
	}
	c.seen[r.ID] = r.Sent
	heap.Push(&c.order, entry{t: r.Sent, id: r.ID})
	return nil
}

// Len returns how many request IDs the cache holds.
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

type entry struct {
	t  time.Time
	id [32]byte
}

// timeHeap is a min-heap of entries by client time (container/heap).
type timeHeap []entry

// Len implements heap.Interface.
func (h timeHeap) Len() int { return len(h) }

// Less implements heap.Interface: older first.
func (h timeHeap) Less(i, j int) bool { return h[i].t.Before(h[j].t) }

// Swap implements heap.Interface.
func (h timeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }

// Push implements heap.Interface.
func (h *timeHeap) Push(x any) { *h = append(*h, x.(entry)) }

// Pop implements heap.Interface.
func (h *timeHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
