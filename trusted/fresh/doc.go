// Package fresh makes a trusted service instance's protected storage
// refuse rolled-back state, by registering the versions of its state with
// the coordinator group, which remembers them by quorum in enclave memory.
// Sealing gives confidentiality and integrity, not freshness: without
// this, a host that keeps old blobs can hand them back.
//
// The secured-address layer (package trusted/secured) starts a Tracker
// when the service's grant carries freshness (the manifest declares it);
// it implements Registry with provision's Checkpoint and FreshRead. Images
// without the layer do not link this package.
//
// # What is sealed
//
// Every blob of protected storage carries a Version inside its sealed
// plaintext (format version 2 of package trusted): Gen, the incarnation of
// the instance that wrote it, and Seq, that incarnation's write count. The
// tracker keeps, in enclave memory, the floor of every key: the version of
// the last blob it wrote, read or found in the index.
//
// At every checkpoint it seals an index under a key of its own
// ("cloister/trusted/fresh/index/v1/<instance>"): the subject
// (provision.ServiceSubject(service, instance)), the coordinator group it
// registered with (FreshnessGrant.Group), the counter of this checkpoint,
// the incarnation, a random salt, and every key's floor. The version
// registered is (counter, SHA-256 of the index's encoding); the counter
// grows by one per checkpoint.
//
// # What is registered, and when
//
//	checkpoint: Put(index) → Registry.Register(counter, digest)
//
// The host makes the index durable before it lets the Register request
// out (it applies every write before the next message), so a registered
// version is always on disk. With interval 0, a reply, a Done, a send, a
// publish or a request that follows a write leaves the enclave only once a
// checkpoint covering that write is registered (trusted.StoreTracker's
// Hold): one checkpoint in flight covers every write before it, and the
// messages waiting for it go out together, so the cost is one group round
// trip per batch, not per request; a write no message waits for (a
// one-way handler's) starts a checkpoint too. With interval t > 0, a checkpoint is
// made at most every t, when something was written, and at shutdown;
// messages do not wait. A group that cannot answer (503) is retried with
// backoff; a conflict (409) — the group holds a newer version, or another
// digest for the counter — means another instance or an older incarnation
// wrote from the same state: the instance stops (Runtime.Fatal, logged).
//
// # Start
//
// Before the instance serves: read the local index, ask the group for the
// registered version (Registry.Registered; the answer is signed and
// bound to a fresh nonce), and
//
//   - registered counter 0 (nothing registered: a first start, or a state
//     written before freshness was declared): accepted — unless the index
//     names another group and a counter above 0 (the group that knew it is
//     gone: bring its replicas back, or remove the instance's state to
//     start it afresh);
//   - no local index, a lower local counter, or the same counter with
//     another digest: refused. Start returns an error wrapping
//     ErrStaleState and trusted.ErrRolledBack that names both counters,
//     logs it and counts it; the layer fails Init with it, so the host's
//     supervisor shows the reason. A stale local version is also sent to
//     the group as a checkpoint, which refuses it and counts the rollback
//     (provision.ReplicaStatus.Rollbacks);
//   - a local counter at or above the registered one: accepted (a higher
//     one holds writes whose messages never left); what the caller
//     restores at start is read and checked (Options.Load), and the state
//     is registered at once as counter+1, which becomes the new
//     incarnation. Only one instance
//     can register that counter, so of two instances started from the same
//     state (a fork), one is refused (ErrConflict) before it serves.
//
// Versions grow across incarnations: a new incarnation's Gen is above
// every Gen before it, so its blobs are newer than any blob an earlier
// incarnation left, registered or not.
//
// # Reads
//
// A Get the storage cache cannot serve asks the host; a blob older than
// the key's floor at the time of asking, or no blob while the key has a
// floor, is refused with an error wrapping trusted.ErrRolledBack, logged
// and counted (Counters.RolledBack). A newer blob raises the floor. Blobs
// of format version 1 (written before) open as Version zero: accepted
// while the key has no floor.
//
// # What a rollback can still do
//
// The host may delay, drop or refuse to store (then the instance fails or
// stops; it does not serve stale state). It cannot make the instance
// start from, or read, state older than the last registered checkpoint,
// nor mix keys from different checkpoints: every key's floor is in the
// sealed index whose digest the group holds.
//
//   - Interval 0: nothing a message that left the enclave depended on can
//     be rolled back. A crash after a write but before its checkpoint
//     registered leaves a write no one saw acknowledged; the host may keep
//     or drop it.
//   - Interval t > 0: exactly the writes made since the last registered
//     checkpoint (at most t of them, plus one checkpoint round trip) can
//     be undone on a restart: their blobs can be dropped or replaced by
//     the blob that the checkpoint covered, and keys first written in that
//     time can be removed. Replay windows saved in that time can go back to
//     the checkpoint's, so messages accepted in that time can be accepted
//     once more after a restart. While the instance runs, its floors
//     refuse even those rollbacks.
//
// Freshness is per instance: instances of a service that share a host's
// store must not share keys (the storage cache assumes it already).
package fresh
