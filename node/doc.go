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
//
// # Operations
//
// With [Options.Ops] (OpsOptions.Listen, a host:port; off by default) a
// node serves Prometheus metrics at [PathMetrics] from a registry of its own
// ([Node.Registry]), liveness at [PathHealthz], readiness at [PathReadyz]
// ([Node.Readiness]: deployments and enclaves up, the NATS connection up,
// the coordinator holding a manifest when watched, checks added with
// [Node.AddReadinessCheck]) and an operator's page at [PathPage] with live
// per-address charts. Metric labels are bounded: addresses consumed on the
// node or allowed by OpsOptions.Addresses, enclaves, failure kinds and
// rejection reasons; never payloads, header values or key names. With
// [Options.Tracing] the node carries W3C trace context in message headers
// and exports OpenTelemetry spans (see package tracing).
package node
