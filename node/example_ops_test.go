package node_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/cloister-dev/cloister/node"
)

// A node serving its operations endpoint on a free loopback port: metrics,
// liveness and readiness (and the operator's page at /).
func ExampleOpsOptions() {
	n, err := node.New(node.Options{Ops: node.OpsOptions{Listen: "127.0.0.1:0"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer n.Shutdown(context.Background())
	for _, path := range []string{node.PathMetrics, node.PathHealthz, node.PathReadyz} {
		resp, err := http.Get("http://" + n.OpsAddr() + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Println(path, resp.StatusCode)
	}
	fmt.Println("ready:", n.Readiness(context.Background()).Ready)
	// Output:
	// /metrics 200
	// /healthz 200
	// /readyz 200
	// ready: true
}
