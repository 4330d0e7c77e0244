package secure

import (
	"container/heap"
	"fmt"
	"sync"
	"time"
)

// ReplayCache remembers recent client requests so a service handles each at
// most once. A request is admitted if its authenticated client time is
// within Window of the service's clock, is newer than the oldest request the
// cache had to forget, and its ID was not seen. At most Capacity IDs are
// kept: when full, the oldest (by client time) is forgotten and the cache's
// floor rises to its time, so nothing forgotten can be replayed. It is safe
// for concurrent use.
type ReplayCache struct {
	window   time.Duration
	capacity int

	mu    sync.Mutex
	seen  map[[32]byte]time.Time
	order timeHeap
	floor time.Time // requests at or before it are refused
}

// NewReplayCache returns a cache admitting requests whose client time is at
// most window away from the service's clock, remembering at most capacity.
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
// first time it is seen, [ErrReplay] if it was seen, and [ErrTooOld] if its
// client time is outside the window or not newer than what the cache forgot.
func (c *ReplayCache) Admit(r *RequestHeader, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := now.Sub(r.Sent); d > c.window || d < -c.window {
		return fmt.Errorf("%w: client time %s is %s away from %s (window %s)", ErrTooOld, r.Sent.UTC().Format(time.RFC3339Nano), d, now.UTC().Format(time.RFC3339Nano), c.window)
	}
	if !r.Sent.After(c.floor) {
		return fmt.Errorf("%w: client time %s is not after %s, the oldest the cache still covers", ErrTooOld, r.Sent.UTC().Format(time.RFC3339Nano), c.floor.UTC().Format(time.RFC3339Nano))
	}
	if _, ok := c.seen[r.ID]; ok {
		return fmt.Errorf("%w: request %x", ErrReplay, r.ID[:8])
	}
	// Forget what left the window by itself, then make room.
	cut := now.Add(-c.window)
	for c.order.Len() > 0 && !c.order[0].t.After(cut) {
		e := heap.Pop(&c.order).(entry)
		delete(c.seen, e.id)
		if e.t.After(c.floor) {
			c.floor = e.t
		}
	}
	for c.order.Len() >= c.capacity {
		e := heap.Pop(&c.order).(entry)
		delete(c.seen, e.id)
		if e.t.After(c.floor) {
			c.floor = e.t
		}
	}
	if !r.Sent.After(c.floor) {
		return fmt.Errorf("%w: client time %s is not after %s, the oldest the cache still covers", ErrTooOld, r.Sent.UTC().Format(time.RFC3339Nano), c.floor.UTC().Format(time.RFC3339Nano))
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
