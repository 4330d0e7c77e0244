// Package trusted is the SDK an enclave image is built from: the code that
// runs inside the enclave, next to the handlers, and talks to the untrusted
// host only through the boundary protocol (package boundary).
//
// An image is a small Go program:
//
//	func main() {
//		app := trusted.New(trusted.Options{Workers: 8})
//		app.HandleFunc("counter.inc", func(ctx context.Context, c *trusted.Call) {
//			n, _, err := c.Get(ctx, c.Header("user"))
//			...
//			c.Put(ctx, c.Header("user"), next)
//			c.Reply(nil, next)
//		})
//		app.Main()
//	}
//
// # Handlers
//
// A Handler is registered per address. It receives the delivery as a *Call
// (address, headers, body, kind) and answers with Call.Reply or Call.Fail —
// exactly once, and only for requests (Call.ExpectsReply). It may answer
// later from another goroutine: a handler that returns without answering
// leaves the call open. A panic in a handler fails the call with
// boundary.FailPanic and a message naming the address and the panic value; the
// enclave keeps serving.
//
// A message sent to a durable address is acknowledged when its handler
// returns (the runtime answers the host's token with boundary.Done), and
// handed back for redelivery when the handler panics or the delivery is
// refused. So finish the work that must not be lost (a Put, a Send) before
// returning; a message the secured layer rejects is acknowledged too, since
// delivering it again would not help.
//
// Through the embedded *Runtime a handler (or the Options.OnInit hook) can
// Send, Publish and Request on the bus, log (Logger, an slog.Logger), fetch
// attestation evidence, and use protected storage (Put, Get). Each of these
// is an OCALL, but for a Get served from the storage cache; Request,
// Evidence and a Get the cache cannot serve wait for the host's answer (an
// ECALL) and are bounded by their context. A Put does not wait (see
// Protected storage).
//
// # Workers
//
// At most Options.Workers handlers run at once (as the TCS count bounds the
// threads in an SGX enclave; default 8). Deliveries beyond that wait in a
// queue of at most Options.MaxQueue entries; beyond that they fail at once
// with boundary.FailOverloaded. Workers+1 goroutines share reading and
// running handlers (leader/followers): the one that reads a delivery runs
// its handler itself while another takes over reading, so a request crosses
// no goroutine inside the enclave, and since at most Workers of them run
// handlers, one is always free to read — results of OCALLs always reach the
// handlers waiting for them.
//
// # Protected storage
//
// Put seals the value with package seal inside the enclave and hands only
// the sealed blob to the host (StorePut OCALL); Get fetches the blob
// (StoreGet) and unseals it. The blob is bound to the storage key (as
// associated data), so the host cannot swap values between keys, and the
// key name the host sees is an HMAC of the key under a sealing-derived key,
// so the host does not learn the key names either. The host can still drop
// a value or roll it back to an older blob of the same key: storage has no
// freshness guarantee.
//
// The runtime keeps the values it read or wrote (and the keys it found
// absent) in enclave memory, least recently used out first, bounded by
// Options.StoreCacheEntries and Options.StoreCacheBytes: a Get it can serve
// costs no OCALL. A Put seals the value and posts the blob (a StorePut with
// no answer) and returns; the host makes every write durable — in batches,
// one sync each — before it lets out anything the enclave sent after it: the
// reply, the Done of a durable message, a send, a publish, a request, and
// before it answers a later StoreGet. So a stateful request costs one
// boundary crossing, and a requester that saw the reply, or a durable
// message that was acknowledged, knows the state it led to is on disk. If
// the host cannot write, it fails what waited for the write as unavailable
// and restarts the enclave, so the cache never outlives a lost write.
// Options.SyncStore restores the older protocol (every Put and Get waits
// for the host, no cache).
//
// Errors of Put and Get cross the boundary (as Fail messages, in logs):
// they name a key by the storage name the host sees, never by the key.
//
// Seal keys are chosen when Init arrives, in this order:
//
//  1. Options.KeySource, if set (tests, custom platforms).
//  2. Gramine: if <GramineRoot>/keys/_sgx_mrenclave exists (GramineRoot
//     defaults to /dev/attestation), or the host or the CLOISTER_SEAL=gramine
//     environment variable asks for it. Under Gramine a host's request for
//     simulated sealing is refused, so the host cannot downgrade the keys.
//  3. Simulated: seal.SimulatedKeySource over the MRENCLAVE and MRSIGNER the
//     host passed in Init and the platform secret Init.SealSecret (without
//     one, protected storage fails with ErrNoPlatformSecret). SIMULATION
//     PROMISES NOTHING: the host knows or chooses every input of the key. The
//     enclave logs a warning saying so.
//
// The policy is Options.SealPolicy; if the image leaves it zero, the host's
// Init.SealPolicy; else MRENCLAVE. Images that must not let the host choose
// set it.
//
// # Secured addresses
//
// An image that names its manifest service (Options.Service, or the
// CLOISTER_SERVICE environment variable for Main) joins the coordinator at
// start-up and from then on protects its messages itself; handlers see and
// pass plaintext only, and the host sees only ciphertext on secured and
// client-channel addresses.
//
// Joining (package provision), after Init and before OnInit and Ready,
// through Request OCALLs the host passes on before Ready:
//
//	→ provision.AddressChallenge            ← Challenge{Nonce}
//	  key := fresh secure.ServiceKey, made and kept inside the enclave
//	  evidence := Runtime.Evidence(provision.JoinReportData(key's public key, Nonce))
//	→ provision.AddressJoin JoinRequest{Service, public key, Nonce, evidence}
//	← JoinResponse{Grant sealed to key under provision.GrantInfo(Service, Nonce)}
//
// The grant holds the service's rights per address, the address keys of the
// current epoch (and of the previous one during a grace period), the
// service's secrets (Runtime.Secret) and its client-channel key. While the
// coordinator is unreachable, has no manifest yet or is busy, the join is
// retried until Options.JoinTimeout; a refusal (wrong measurement,
// simulated evidence the manifest forbids, unknown service, …) ends the
// enclave at once with a Fatal naming the coordinator's reason
// (*JoinError), which the host reports as the start-up failure. Ready then
// announces only the registered addresses the grant lets the service
// consume, plus provision.AddressEpoch: on an EpochNotice naming a newer
// epoch, signed by the coordinator with the key the grant names (others are
// ignored), the runtime joins again and installs the new keys; the old epoch is
// accepted until the grant's GraceUntil, then retired.
//
// Deliveries, before the handler runs (on the worker that will run it):
//
//   - an address not in the grant, or without the consume right: rejected
//     (reason "not-allowed");
//   - a secured address: the body must be a secure envelope of the
//     delivery's kind under a held epoch's key, not seen before
//     (secure.Opener, one per address, replay window per sender); the
//     handler gets its plaintext and protected headers (Call.Secured);
//   - an address open to clients (manifest "clients: true"): a body that
//     is a client-session message (secure.NewClientSession to the service's
//     channel key, info secure.ChannelInfo(service, manifest hash)) is
//     opened by a secure.SessionTable (Options.Sessions bounds it) with the
//     grant's channel key and the manifest's client credentials; the
//     handler learns the client (Call.FromClient, Call.Client). The message
//     counts as seen once the call succeeded (Reply, or a one-way handler
//     returning); a Fail or a panic gives it back, so a retry is handled,
//     not refused as a replay. A one-shot v1 client request proves no
//     credential and is rejected ("unauthenticated"); if the address is not
//     also secured, anything else is rejected ("plaintext");
//   - a plain address in the grant: passed through.
//
// A rejected message never reaches a handler: it is counted by address and
// reason (the Reason* constants: malformed, auth, replay, too-old,
// epoch-retired, unknown-epoch, wrong-kind, unauthenticated,
// session-unknown, …), logged to the host with the address and reason only,
// and a request is failed with a code a forwarder can decide on:
// CodeRejected (400, final), CodeNotAllowed (403, final), CodeAlreadyHandled
// (409: a copy of a client message already handled; nothing to redo),
// CodeSessionUnknown (410: the client must seal it again in a new session)
// or CodeBusy (429: retry later), and a message naming the reason. Runtime.Rejections
// returns the counts; the host reads them in the enclave's health
// (HealthStatus.Detail = HealthRejectionsPrefix + JSON, counts only).
//
// Answers and OCALLs: Reply to a secured request is sealed by this
// enclave's own Sealer for the address, bound to the request's Ref
// (secure.Sealer.SealReply, in the request's epoch while it is held); the
// reply to a client-session message is sealed with the session's
// service-to-client key (its headers are not sent). Send, Publish and
// Request need the grant's send (request too) or publish right on the
// address (ErrNotAllowed otherwise; the coordinator's own addresses are
// always allowed), and on a secured address the runtime seals headers and
// body into an envelope of that kind under the current epoch; a Request's
// reply is opened with OpenReply and the request's Ref, so a host cannot
// swap, replay or forge replies (ErrRejected, counted).
//
// What stays visible to the host: addresses, sizes, timing, the envelope's
// clear part (kind, epoch, sender ID, sequence number), protected headers
// (authenticated, not encrypted: keep secrets in the body), Fail codes and
// messages, and log records. Put no payload in any of them.
//
// Replay windows survive restarts: the windows of the secured addresses the
// service consumes are saved in protected storage (every second when they
// changed, and at Shutdown; per instance number) and restored after the
// first join — except on durable addresses, whose at-least-once redelivery
// after a crash must be accepted again.
//
// Limits. Windows are per instance: a host can deliver a captured send or
// request to another instance of the same service; it can roll protected
// storage back, or replay within the second before a crash, to an
// instance it restarts. Rotating the key epoch bounds such replays
// completely. Client sessions live in one instance's memory: a message of
// a session another instance opened, or one opened before a restart, is
// refused with CodeSessionUnknown and sealed again by its client; a
// handshake younger than secure.DefaultHandshakeAge can be replayed to an
// instance that restarted (its windows are empty), so a service that must
// never apply a message twice keeps its own sequence numbers in protected
// storage. The runtime does not verify the coordinator it joins: it
// accepts a grant that opens with its own key (see SECURITY.md).
//
// # Running
//
// App.Main serves the protocol for a process image and exits: it reads
// ECALLs and writes OCALLs on
//
//   - the file descriptor(s) in CLOISTER_BOUNDARY_FD: "3" for one
//     bidirectional descriptor (a socket pair end), "3,4" for a read and a
//     write descriptor; or
//   - stdin and stdout when the variable is unset. os.Stdout is then pointed
//     at stderr, so that a stray fmt.Println cannot corrupt the stream.
//
// When the host offers a shared-memory region in CLOISTER_BOUNDARY_SHM (a
// descriptor number, or a path under Gramine's untrusted shared-memory
// mount), Main maps it, checks its header and takes it: the handshake still
// crosses the descriptors above, then frames cross the region's rings and
// the descriptors only carry doorbells and end of stream (package
// boundary/shm). A region it cannot use is left alone, with a line on
// stderr, and the host stays on the descriptors.
//
// Main sets Go's memory limit to Options.MemoryLimit (default 24 MiB) unless
// GOMEMLIMIT is set, and GOMAXPROCS to Options.Procs (default 1) unless
// GOMAXPROCS is set, cancels on SIGTERM/SIGINT, logs fatal errors to
// stderr, and exits 0 after a Shutdown, 1 otherwise.
//
// App.Serve runs the same runtime over any reader and writer (the host's
// inproc backend, tests). Several Serve calls of one App may run at once;
// each is an independent enclave instance.
//
// This package imports only the standard library and the boundary (with
// boundary/shm), seal, secure and provision packages — no bus, no networking, not even attest's
// X.509 parts — to keep the trusted computing base small.
package trusted
