// Package enclave is the host side of Cloister's trusted services: enclave
// images, the backends that run them, the supervisor that keeps them
// running and the adapter that plugs them into the event bus.
//
// # Images
//
// An enclave image is a static Go program built from a main package that
// uses package trusted. [Build] compiles it reproducibly (go build -trimpath
// -buildvcs=false -ldflags=-buildid=, CGO_ENABLED=0: the same source and
// toolchain give the same bytes), measures it (SHA-256 of the file, the
// simulated MRENCLAVE) and writes IMAGE.meta.json beside it with the
// measurement, the signer and product metadata, the Go version and the
// package. [Load] refuses an image whose bytes no longer match its metadata
// ([ErrImageChanged]).
//
// # Backends
//
// A [Backend] starts instances that speak the boundary protocol:
//
//   - inproc ([NewInProc]): the trusted runtime runs inside the host
//     process over in-memory pipes. NO ISOLATION; tests and development
//     only. Its simulated evidence has the debug attribute set and the host
//     logs a warning.
//   - process ([NewProcess]): the image runs as a child process with a
//     pair of pipes (its file descriptors 3 and 4) and a shared-memory
//     region (descriptor 5). Address-space isolation from the host, but
//     simulated evidence and seal keys, which promise nothing against a
//     malicious host. The default of a node.
//   - gramine ([NewGramine]): the image runs under gramine-sgx with a
//     manifest from [GramineManifest], its pipes on stdin and stdout, its
//     region in a file under an untrusted shared-memory mount
//     ([GramineSHMDir]); evidence and seal keys come from /dev/attestation
//     inside the enclave.
//
// # Transports
//
// The boundary handshake always crosses the pipes. After it, frames cross
// the region (package boundary/shm: one single-producer single-consumer
// ring of bytes each way, polled for up to [ProcessOptions.Poll] before a
// side sleeps; a one-byte doorbell on the pipe wakes a side only when it
// sleeps) if the image took it, and the pipes otherwise: an image built
// without shared-memory support, or [TransportPipe], which offers no
// region. [Enclave.Transport] says which one an instance uses. The host
// reads every ring position from the region once, checks it and copies
// the bytes out before decoding them, so an image that scribbles over the
// region fails like one that writes garbage on a pipe; an image's exit
// closes its pipes, which ends the stream on either transport.
//
// # The adapter and the supervisor
//
// An [Enclave] is one supervised instance. [Enclave.Start] launches it,
// sends Init and waits for Ready, whose addresses (filtered by
// [Config.Allow]) are what a node consumes for it ([Enclave.Addresses]).
// [Enclave.HandleMessage] (a bus.Handler) turns each delivery into a
// Deliver ECALL and returns at once; Reply and Fail OCALLs answer the bus
// message from the connection's reading goroutine, so many requests are in
// flight at once. Send, Publish and Request OCALLs become bus operations
// (a request's result returns as a RequestResult ECALL), Log OCALLs go to
// the host's slog logger tagged with the enclave's name, StorePut and
// StoreGet go to a [Store] that only ever sees sealed blobs ([FileStore]),
// and GetEvidence is answered by the host's attest.Issuer (simulated, with
// MRENCLAVE = the image's measurement, for inproc and process, signed by
// the [Config.Simulation] root the host was handed, whose platform secret
// also reaches the image in Init for simulated sealing; the package never
// looks for simulation keys on the machine).
//
// Store writes are group-committed in stream order: one writer goroutine
// per instance takes every StorePut received so far as one batch and makes
// it durable ([BatchStore.PutBatch]; [FileStore] appends it to its journal
// with one sync), and every Reply, Fail, Done, Send, Publish, Request and
// StoreGet the enclave sent after a write is held until that write is
// durable, then acted on in stream order. A failed batch fails what it held
// (as [CodeUnavailable], durable messages handed back), drops the writes
// after it and ends the instance ([ErrStoreWrite]); the supervisor restarts
// it from what is durable. An image may keep at most [Config.MaxOCALLs]
// requests, store reads and evidence calls outstanding (more end the
// instance with [ErrTooManyOCALLs]) and wait at most
// [Config.MaxOCALLTimeout] for a request's reply.
//
// When the instance dies, every request in flight fails at once with a
// recipient failure ([CodeUnavailable]) whose message names the enclave;
// requests arriving while it is down fail the same way. The supervisor
// restarts it after an exponential backoff ([Config.RestartBackoff] doubling
// up to [Config.MaxRestartBackoff]); [Enclave.Health] reports a
// [*DownError] meanwhile. Protected storage lives in the host's store and
// so survives restarts.
//
// A message of a durable address (bus.Message.AtLeastOnce) is held until
// the enclave's handler for it has returned: the Deliver carries a token,
// the trusted runtime answers Done, and the message is then acknowledged;
// a Fail (the handler panicked, the delivery was refused) or the instance
// dying with it in flight hands it back for redelivery.
//
// Everything the host tells an image travels in Init: its identity, name
// and instance, the seal mode and policy, its configuration, the worker
// count (Config.Workers) and the manifest service to join (Config.Service).
//
// An image that joins a coordinator (the service named in Init, or fixed by
// the image; it links the secured-address layer, package trusted/secured)
// does so before Ready, through Request
// and GetEvidence OCALLs the host serves as soon as Init is sent; a refused
// join ends the start with the coordinator's reason. Its trusted runtime
// then opens and seals the messages of secured and client-channel
// addresses itself, so the host relays ciphertext only; what it rejects is
// counted by address and reason, and [Enclave.Rejections] reads the counts.
//
// # Batching and back-pressure
//
// Host frames go through one writer per instance: a delivery alone in
// flight is written at once; with others in flight it joins the next
// write, which a writer goroutine makes after the other runnable goroutines
// had a chance to add theirs, so under load many deliveries cross per
// system call and per enclave wake-up. Past 4 MiB of queued frames, senders
// wait. [Enclave.HandleMessage] never waits otherwise, so a node registers
// it as a bus.Inline consumer: the requester's goroutine queues the frame
// itself. The trusted runtime corks its answers the same way (at most 8
// per write while more deliveries are buffered). The rings hold 1 MiB each
// way, and the boundary pipes are made 1 MiB large where the system
// allows; a writer that finds either full waits.
//
// # Measuring
//
//	go test ./enclave -run '^$' -bench .                  # boundary round trips (shm, pipe, inproc) beside a raw pipe echo, batching, idle CPU, image VmHWM
//	go test ./node -run '^$' -bench TrustedVsRegular      # the same handler: regular, trusted (process), trusted (inproc); 32 in flight
//
// Package node hosts enclaves as deployments (node.EnclaveConfig); the
// cloister command builds, measures and hosts them.
package enclave
