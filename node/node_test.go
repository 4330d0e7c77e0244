package node_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/internal/syncbuf"
	"github.com/cloister-dev/cloister/internal/testenv"
	"github.com/cloister-dev/cloister/node"
)

type syncBuffer = syncbuf.Buffer

func newNode(t *testing.T, opts node.Options) (*node.Node, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	b, err := bus.New(bus.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	opts.Bus = b
	n, err := node.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n, logs
}

// funcService adapts functions to node.Service.
type funcService struct {
	start func(ctx context.Context, inst *node.Instance) error
	stop  func(ctx context.Context) error
}

func (s *funcService) Start(ctx context.Context, inst *node.Instance) error {
	return s.start(ctx, inst)
}
func (s *funcService) Stop(ctx context.Context) error {
	if s.stop == nil {
		return nil
	}
	return s.stop(ctx)
}

// concurrency tracks how many handlers run at once.
type concurrency struct{ now, max atomic.Int64 }

func (c *concurrency) enter() {
	v := c.now.Add(1)
	for {
		m := c.max.Load()
		if v <= m || c.max.CompareAndSwap(m, v) {
			return
		}
	}
}
func (c *concurrency) leave() { c.now.Add(-1) }

func TestEventLoopNeverConcurrent(t *testing.T) {
	n, _ := newNode(t, node.Options{})
	var cc concurrency
	counter := 0 // instance state, touched without a lock
	handler := bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		cc.enter()
		counter++
		time.Sleep(100 * time.Microsecond)
		cc.leave()
		_ = m.Reply(counter)
	})
	_, err := n.Deploy(context.Background(), func() node.Service {
		return &funcService{start: func(ctx context.Context, inst *node.Instance) error {
			for _, addr := range []string{"loop.a", "loop.b", "loop.c"} {
				if _, err := inst.Consumer(addr, handler); err != nil {
					return err
				}
			}
			return nil
		}}
	}, node.DeployOptions{Name: "looper"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				addr := []string{"loop.a", "loop.b", "loop.c"}[g%3]
				if _, err := n.Bus().Request(context.Background(), addr, "x"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if cc.max.Load() != 1 {
		t.Fatalf("an event-loop instance ran %d handlers at once", cc.max.Load())
	}
	if counter != 240 {
		t.Fatalf("counter %d, want 240", counter)
	}
}

func TestInstancesShareTheWork(t *testing.T) {
	n, _ := newNode(t, node.Options{})
	var mu sync.Mutex
	seen := map[int]int{}
	_, err := n.Deploy(context.Background(), func() node.Service {
		return &funcService{start: func(ctx context.Context, inst *node.Instance) error {
			_, err := inst.Consumer("shared.work", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
				mu.Lock()
				seen[inst.Index()]++
				mu.Unlock()
				_ = m.Reply(inst.Index())
			}))
			return err
		}}
	}, node.DeployOptions{Instances: 4})
	if err != nil {
		t.Fatal(err)
	}
	for range 40 {
		if _, err := n.Bus().Request(context.Background(), "shared.work", "x"); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 4 {
		t.Fatalf("work reached instances %v, want all 4", seen)
	}
}

func TestWorkerPoolIsBounded(t *testing.T) {
	n, _ := newNode(t, node.Options{})
	var cc concurrency
	release := make(chan struct{})
	_, err := n.Deploy(context.Background(), func() node.Service {
		return &funcService{start: func(ctx context.Context, inst *node.Instance) error {
			_, err := inst.Consumer("blocking.work", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
				cc.enter()
				<-release // blocking is allowed in worker mode
				cc.leave()
				_ = m.Reply("done")
			}))
			return err
		}}
	}, node.DeployOptions{Instances: 6, Mode: node.Worker, WorkerPoolSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 6)
	for range 6 {
		go func() { _, err := n.Bus().Request(context.Background(), "blocking.work", "x"); errs <- err }()
	}
	testenv.WaitFor(t.Context(), t, "the pool to fill", func() bool { return cc.now.Load() == 3 })
	time.Sleep(20 * time.Millisecond) // give a fourth handler the chance to (wrongly) start
	if cc.max.Load() != 3 {
		t.Fatalf("%d handlers ran at once on a pool of 3", cc.max.Load())
	}
	close(release)
	for range 6 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestBlockedEventLoopIsReported(t *testing.T) {
	n, logs := newNode(t, node.Options{BlockedThreshold: 30 * time.Millisecond, BlockedCheckInterval: 5 * time.Millisecond})
	release := make(chan struct{})
	_, err := n.Deploy(context.Background(), func() node.Service {
		return &funcService{start: func(ctx context.Context, inst *node.Instance) error {
			_, err := inst.Consumer("slow.loop", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) { <-release }))
			return err
		}}
	}, node.DeployOptions{Name: "sleepy"})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Bus().Send(context.Background(), "slow.loop", "x"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t.Context(), t, "the blocked-loop warning", func() bool { return strings.Contains(logs.String(), "event loop blocked") })
	close(release)
	if !strings.Contains(logs.String(), "deployment=sleepy") {
		t.Fatalf("warning does not name the deployment:\n%s", logs)
	}
}

func TestUndeployRemovesConsumersAndStops(t *testing.T) {
	n, _ := newNode(t, node.Options{})
	var stopped atomic.Int64
	id, err := n.Deploy(context.Background(), func() node.Service {
		return &funcService{
			start: func(ctx context.Context, inst *node.Instance) error {
				_, err := inst.Consumer("temp.svc", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) { _ = m.Reply("ok") }))
				return err
			},
			stop: func(ctx context.Context) error { stopped.Add(1); return nil },
		}
	}, node.DeployOptions{Instances: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Bus().Request(context.Background(), "temp.svc", "x"); err != nil {
		t.Fatal(err)
	}
	if err := n.Undeploy(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if stopped.Load() != 2 {
		t.Fatalf("Stop ran %d times, want 2", stopped.Load())
	}
	if _, err := n.Bus().Request(context.Background(), "temp.svc", "x"); !errors.Is(err, bus.ErrNoHandlers) {
		t.Fatalf("after undeploy: %v", err)
	}
	if err := n.Undeploy(context.Background(), id); err == nil {
		t.Fatal("undeploying twice succeeded")
	}
	if len(n.Health(context.Background())) != 0 {
		t.Fatal("an undeployed deployment is still reported")
	}
}

func TestFailedStartRollsBack(t *testing.T) {
	n, _ := newNode(t, node.Options{})
	var started, stopped atomic.Int64
	_, err := n.Deploy(context.Background(), func() node.Service {
		return &funcService{
			start: func(ctx context.Context, inst *node.Instance) error {
				if inst.Index() == 2 {
					return errors.New("database unreachable")
				}
				started.Add(1)
				_, err := inst.Consumer("rollback.svc", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {}))
				return err
			},
			stop: func(ctx context.Context) error { stopped.Add(1); return nil },
		}
	}, node.DeployOptions{Instances: 3, Name: "flaky"})
	if err == nil || !strings.Contains(err.Error(), "database unreachable") || !strings.Contains(err.Error(), "instance 2") {
		t.Fatalf("Deploy: %v", err)
	}
	if started.Load() != 2 || stopped.Load() != 2 {
		t.Fatalf("started %d, stopped %d; the started instances must be stopped", started.Load(), stopped.Load())
	}
	if _, err := n.Bus().Request(context.Background(), "rollback.svc", "x"); !errors.Is(err, bus.ErrNoHandlers) {
		t.Fatalf("consumers of a failed deployment remain: %v", err)
	}
}

func TestShutdownDrainsAndStopsInReverseOrder(t *testing.T) {
	n, _ := newNode(t, node.Options{})
	var mu sync.Mutex
	var order []string
	var handled atomic.Int64
	release := make(chan struct{})
	for _, name := range []string{"first", "second", "third"} {
		_, err := n.Deploy(context.Background(), func() node.Service {
			return &funcService{
				start: func(ctx context.Context, inst *node.Instance) error {
					_, err := inst.Consumer("svc."+name, bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
						<-release
						handled.Add(1)
						_ = m.Reply("ok")
					}))
					return err
				},
				stop: func(ctx context.Context) error { mu.Lock(); order = append(order, name); mu.Unlock(); return nil },
			}
		}, node.DeployOptions{Name: name})
		if err != nil {
			t.Fatal(err)
		}
	}
	results := make(chan error, 5)
	for range 5 {
		go func() { _, err := n.Bus().Request(context.Background(), "svc.third", "x"); results <- err }()
	}
	testenv.WaitFor(t.Context(), t, "five requests in flight", func() bool {
		h := n.Health(context.Background())
		return h[2].Pending == 4
	})
	go func() { time.Sleep(20 * time.Millisecond); close(release) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := <-results; err != nil {
			t.Fatalf("an in-flight request was lost at shutdown: %v", err)
		}
	}
	if got := strings.Join(order, ","); got != "third,second,first" {
		t.Fatalf("stop order %s, want third,second,first", got)
	}
	if _, err := n.Deploy(context.Background(), func() node.Service { return &funcService{} }, node.DeployOptions{}); !errors.Is(err, node.ErrShutdown) {
		t.Fatalf("Deploy after Shutdown: %v", err)
	}
}

type sickService struct{ err atomic.Pointer[error] }

func (s *sickService) Start(ctx context.Context, inst *node.Instance) error { return nil }
func (s *sickService) Stop(ctx context.Context) error                       { return nil }
func (s *sickService) Health(ctx context.Context) error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

func TestHealth(t *testing.T) {
	n, _ := newNode(t, node.Options{})
	sick := &sickService{}
	id, err := n.Deploy(context.Background(), func() node.Service { return sick }, node.DeployOptions{Name: "meter-reader"})
	if err != nil {
		t.Fatal(err)
	}
	h := n.Health(context.Background())
	if len(h) != 1 || h[0].Status != node.StatusUp || h[0].ID != id || h[0].Name != "meter-reader" {
		t.Fatalf("health %+v", h)
	}
	e := errors.New("enclave restarting")
	sick.err.Store(&e)
	h = n.Health(context.Background())
	if h[0].Status != node.StatusDown || !strings.Contains(h[0].Error, "enclave restarting") {
		t.Fatalf("health %+v", h)
	}
}

func TestConfig(t *testing.T) {
	n, _ := newNode(t, node.Options{})
	type cfg struct {
		Threshold float64 `json:"threshold"`
	}
	got := make(chan cfg, 1)
	_, err := n.Deploy(context.Background(), func() node.Service {
		return &funcService{start: func(ctx context.Context, inst *node.Instance) error {
			var c cfg
			if err := inst.Config(&c); err != nil {
				return err
			}
			got <- c
			return nil
		}}
	}, node.DeployOptions{Config: map[string]any{"threshold": 2.5}})
	if err != nil {
		t.Fatal(err)
	}
	if c := <-got; c.Threshold != 2.5 {
		t.Fatalf("config %+v", c)
	}
	if _, err := n.Deploy(context.Background(), func() node.Service { return &funcService{} }, node.DeployOptions{Config: func() {}}); err == nil {
		t.Fatal("a config that is not JSON was accepted")
	}
}

func ExampleNode_Deploy() {
	n, _ := node.New(node.Options{})
	defer n.Shutdown(context.Background())

	greeter := func() node.Service {
		return &funcService{start: func(ctx context.Context, inst *node.Instance) error {
			_, err := inst.Consumer("greeter", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
				_ = m.Reply("hello, " + string(m.Body()))
			}))
			return err
		}}
	}
	if _, err := n.Deploy(context.Background(), greeter, node.DeployOptions{Instances: 2}); err != nil {
		fmt.Println(err)
		return
	}
	reply, err := n.Bus().Request(context.Background(), "greeter", "world")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(reply.Body()))
	// Output: hello, world
}
