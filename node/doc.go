// Package node runs services (Cloister's verticles) on a bus.
//
// A [Service] has Start and Stop. [Node.Deploy] starts one or more
// instances of it, each with an [Instance] through which the service
// registers consumers and talks to the bus, and returns a deployment ID;
// [Node.Undeploy] removes the consumers and stops the instances.
//
// # Threading
//
// In [EventLoop] mode (the default) each instance has one goroutine, its
// event loop, and every handler of the instance runs on it: an instance's
// handlers never run concurrently, so a service needs no locks for its own
// state. A handler that holds the loop longer than
// [Options.BlockedThreshold] is reported with a warning, like Vert.x's
// blocked-thread checker. In [Worker] mode handlers run on a bounded pool
// of goroutines shared by the deployment's instances and may block; each
// consumer still handles its messages one at a time and in order.
//
// # Shutdown
//
// [Node.Shutdown] stops accepting messages, lets buffered messages drain
// until its context's deadline, and stops services in the reverse order of
// their deployment, then closes the bus.
//
// # Health
//
// [Node.Health] reports UP or DOWN for each deployment; a service can
// report its own health by implementing [HealthChecker].
package node
