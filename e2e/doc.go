// Package e2e holds Cloister's cross-cutting end-to-end tests: real
// embedded NATS servers routed on loopback (package cluster), real enclave
// images running as child processes, real files. They check the promises of
// the threat model (SECURITY.md at the repository root) from the outside:
// what an eavesdropper on the broker sees,
// what a forger or replayer achieves, who gets keys, and what survives a
// killed coordinator.
//
// Run them with
//
//	go test ./e2e
//
// TestMain builds the coordinator image, the test service image
// (./internal/svcimage) and the cloister command (for cloister tap) once;
// simulation keys live in a temporary directory for the run.
//
// The eavesdropper of TestSecuredCluster is a raw NATS subscriber on ">" on
// each of the three servers plus a cloister tap process; payload markers are
// random per run and must appear nowhere — not in subjects, headers or
// bodies, in no encoding (raw, hex, base64, base64url, base32, URL-escaped),
// not in the hosts' logs. A control marker sent in clear proves the
// eavesdroppers and the search work. A checker can supply markers of its
// own:
//
//	CLOISTER_E2E_MARKERS=first-secret,second-secret go test -run TestSecuredCluster -v ./e2e
package e2e
