package node

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// taskQueue is an unbounded FIFO of tasks. The bound on work comes from
// the consumers' buffers, not from here, so Execute never blocks the
// transport.
type taskQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	tasks  []func()
	head   int
	closed bool
}

func newTaskQueue() *taskQueue {
	q := &taskQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *taskQueue) push(task func()) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.tasks = append(q.tasks, task)
	q.cond.Signal()
	return true
}

// pop waits for a task; it returns nil once the queue is closed and empty.
func (q *taskQueue) pop() func() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head == len(q.tasks) && !q.closed {
		q.cond.Wait()
	}
	if q.head == len(q.tasks) {
		return nil
	}
	t := q.tasks[q.head]
	q.tasks[q.head] = nil
	q.head++
	if q.head == len(q.tasks) {
		q.tasks, q.head = q.tasks[:0], 0
	} else if q.head > 1024 && q.head*2 > len(q.tasks) {
		q.tasks, q.head = append(q.tasks[:0:0], q.tasks[q.head:]...), 0
	}
	return t
}

func (q *taskQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// runner is one goroutine taking tasks from a queue, with the start time of
// its current task for the blocked-thread checker.
type runner struct {
	started atomic.Int64 // unix nanos of the running task; 0 when idle
	warned  atomic.Int64 // the start time already reported
}

func (r *runner) run(q *taskQueue, done *sync.WaitGroup) {
	defer done.Done()
	for t := q.pop(); t != nil; t = q.pop() {
		r.started.Store(time.Now().UnixNano())
		t()
		r.started.Store(0)
	}
}

// blockedFor reports how long the current task has run, if it has run
// longer than threshold and was not reported yet.
func (r *runner) blockedFor(now time.Time, threshold time.Duration) (time.Duration, bool) {
	s := r.started.Load()
	if s == 0 {
		return 0, false
	}
	d := now.Sub(time.Unix(0, s))
	if d < threshold || r.warned.Load() == s {
		return 0, false
	}
	r.warned.Store(s)
	return d, true
}

// pool runs tasks on n goroutines; n = 1 is an event loop.
type pool struct {
	q       *taskQueue
	runners []*runner
	done    sync.WaitGroup
}

func newPool(n int) *pool {
	p := &pool{q: newTaskQueue(), runners: make([]*runner, n)}
	p.done.Add(n)
	for i := range p.runners {
		p.runners[i] = &runner{}
		go p.runners[i].run(p.q, &p.done)
	}
	return p
}

// Execute implements bus.Executor. Tasks submitted after close are dropped;
// by then the consumers feeding the pool are gone.
func (p *pool) Execute(task func()) { p.q.push(task) }

// close lets the queued tasks finish and stops the goroutines; it returns
// false if they were still running when ctx ended.
func (p *pool) close(ctx context.Context) bool {
	p.q.close()
	finished := make(chan struct{})
	go func() { p.done.Wait(); close(finished) }()
	select {
	case <-finished:
		return true
	case <-ctx.Done():
		return false
	}
}
