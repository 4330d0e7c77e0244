// Package e2e holds Cloister's cross-cutting end-to-end tests: real
// embedded NATS servers routed on loopback (package cluster), real enclave
// images running as child processes, real files. They check the promises of
// DESIGN.md §2 from the outside: what an eavesdropper on the broker sees,
// what a forger or replayer achieves, who gets keys, and what survives a
// killed coordinator.
//
// Run them with
//
//	go test ./e2e
//
// TestMain builds the coordinator image and the test service image
// (./internal/svcimage) once; simulation keys live in a temporary
// directory for the run.
package e2e
