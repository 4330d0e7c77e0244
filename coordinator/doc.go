// Package coordinator is Cloister's provisioning service: a trusted service,
// in an enclave image like any other (./image), that holds the application's
// manifest, attests itself to clients, and hands keys and secrets to the
// enclaves the manifest allows — sealed to a key that never left them.
//
// It imports the standard library, attest, secure, seal, manifest,
// provision, freshness and trusted only: no bus, no networking. The host relays its
// messages; what it relays is either public or sealed.
//
// # Protocol, as implemented
//
// Every request and answer is a provision message (JSON, decoded strictly,
// at most provision.MaxMessageSize bytes). Refusals are bus recipient
// failures whose code is a provision.Code* and whose message names the
// reason.
//
//	address                 request → answer                         refusals
//	AddressManifestSet      ManifestSet → Status                     400 invalid (every field error), 409 already set
//	AddressManifestUpdate   ManifestUpdate → Status                  401 unsigned, no owner or bad signature, 409 version not higher, 412
//	AddressManifestHistory  ManifestHistoryRequest → ManifestHistory 400 not a 32-byte hash, 404 not in the history, 412
//	AddressAttest           AttestRequest → AttestResponse           400, 412 no manifest
//	AddressServiceKey       ServiceKeyRequest → ServiceKeyResponse   404 unknown service, 403 regular service, 412
//	AddressChallenge        (empty) → Challenge                      (none: issuing keeps no state)
//	AddressJoin             JoinRequest → JoinResponse               400, 403, 404, 412, 429 (see below)
//	AddressRotate           RotateRequest → Status                   401 unsigned or bad signature, 409 not the next epoch, 412
//	AddressStatus           (empty) → Status
//	AddressCheckpoint       Checkpoint → Registered                  400, 401 bad MAC, 404 no freshness, 409 stale or fork, 503 no quorum
//	AddressFreshRead        FreshRead → Registered                   400, 401, 404, 503
//	ReplicaAddress(k, status)  (empty) → ReplicaStatus               404 not this slot
//	ReplicaAddress(k, recover) RecoveryStatement → ReplicaStatus     400, 401 not the owner's, 404, 409 no recovery needed or wrong nonce/version
//	ReplicaAddress(k, peer)    the replicas' own protocol (below)
//
// A replica that is not live (being admitted, or waiting for recovery)
// refuses everything but the status and its own addresses with 503
// (provision.CodeUnavailable): another replica may answer, so callers
// retry.
//
// Manifest. The first manifest is accepted from whoever sends it (clients
// pin its hash, so a wrong one is harmless: nobody trusts it); every later
// one must be signed by the current owner key with a higher version
// (manifest.VerifyUpdate). A second ManifestSet is refused even if it
// carries the same manifest.
//
// Manifest history. Every accepted update moves the manifest it replaces,
// with the owner signature that had made it current, into a history kept
// in the sealed state, oldest first: at most provision.MaxHistoryEntries
// manifests and provision.MaxHistoryBytes in all, the current one
// included; beyond that the oldest go. AddressManifestHistory answers a
// pinned hash with the entries from that manifest to the current one (the
// first is the pinned manifest itself), so that a client that pinned an
// older manifest can follow the owner's signed updates (package client
// verifies each signature; the answer carries no coordinator signature,
// and needs none). A hash the history does not hold (never set here, or
// dropped by the bound) is refused with 404, "pin the current manifest
// again". A state written before the history existed has none: clients
// pinned to older manifests must pin again.
//
// Attestation. The answer carries evidence from trusted.Runtime.Evidence
// whose report data is provision.AttestReportData(signing key, manifest
// hash, the caller's nonce), the Ed25519 signing key and the manifest hash
// and version. Package client verifies it.
//
// Challenges. AddressChallenge is open to every bus client, so issuing a
// challenge costs the coordinator no state. A challenge nonce (32 bytes,
// opaque to the joiner) is
//
//	random (12 bytes) ‖ expiry (Unix seconds, u32 big-endian) ‖ MAC (16 bytes)
//
// where MAC is HMAC-SHA256 over the first 16 bytes, truncated to 16 bytes,
// under a key each coordinator instance draws at start and keeps in enclave
// memory only. A join's nonce is checked statelessly (MAC, then expiry:
// Options.NonceLifetime, two minutes by default); it is spent — put in a
// set of used nonces kept until they expire — only once the join's
// evidence verified and bound it (steps 4 and 5 below), and a spent nonce
// is never valid again. The set holds at most Options.MaxChallenges
// nonces; when it is full of unexpired ones, joins are refused with 429 and
// the joiner retries (the trusted runtime does), so a replay never slips
// in through forgetting. A flood of challenge requests therefore changes
// nothing, and filling the set takes genuine evidence for each entry.
// A lone coordinator's challenges do not survive its restart (a new key):
// a joiner holding one asks again. Replicas share a key derived from the
// root, so a challenge is valid at any of them.
//
// Joins are checked in this order, the first failure answering:
//
//  1. the request decodes: a service name, a 32-byte nonce, a secure public
//     key, attest evidence (400);
//  2. a manifest is set (412), the service is in it (404) and is trusted,
//     i.e. has identities (403);
//  3. the nonce's MAC verifies under this instance's challenge key and it
//     has not expired (403; nothing is recorded);
//  4. the evidence: simulated evidence only if the manifest allows
//     simulation ("simulated evidence refused: the manifest forbids
//     simulation"), signed by one of the simulation platform keys the
//     host configured (Config.SimPlatformKeys) or the image fixed
//     (Options.SimPlatformKeys); SGX DCAP evidence through attest's
//     full chain, with Options.Collateral for its TCB status (403);
//  5. the report data is provision.JoinReportData(public key, nonce), so the
//     evidence speaks for this key and this challenge (403); the nonce is
//     spent now: refused if spent before (403, a replay) or if the set of
//     spent nonces is full (429);
//  6. the claims satisfy one of the service's identities
//     (manifest.Check): an unknown measurement is refused with "measurement
//     … (signer …, product …) is not among the identities of service …", a
//     debug enclave of a service without debug, a TCB status the manifest
//     does not accept, or an SVN below the minimum each with its own reason
//     (403).
//
// The answer is secure.SealTo(public key, provision.GrantInfo(service,
// nonce), provision.Grant as JSON): only the enclave holding the private
// key can open it, and only as a grant for that service and that join. The
// grant holds, for every address on which the manifest gives the service a
// right, the rights, and for a secured address the keys of the current
// epoch and — during a grace period — of the previous one; the service's
// secrets; and the private half of the service's client-channel key.
//
// # Keys
//
// All keys derive from a 32-byte root secret drawn on first start:
//
//	address key      secure.DeriveAddressKey(root, address, epoch)
//	generated secret HKDF-SHA256(root, info = frame("cloister/coordinator/v1/secret", service, name)), length from the manifest
//	channel key      X-Wing (ML-KEM-768 + X25519) DeriveKeyPair(HKDF-SHA256(root, info = frame("cloister/coordinator/v1/channel-key", service)))
//	freshness key    HKDF-SHA256(root, info = frame("cloister/coordinator/v1/freshness", service)), 32 bytes (replicas)
//	challenge key    HKDF-SHA256(root, info = frame("cloister/coordinator/v1/challenge")), 32 bytes (replicas)
//	state key        HKDF-SHA256(root, info = frame("cloister/coordinator/v1/replica-state")), 32 bytes (replicas)
//
// where frame is each field prefixed by its u16 length. So every instance
// of a service, before and after any restart of the coordinator, gets the
// same keys; a rotation changes address keys only. Secrets the owner
// supplies come from the manifest. The channel key's public half is served
// on AddressServiceKey with the coordinator's Ed25519 signature over
// provision.ServiceKeyMessage(manifest hash, service, key).
//
// # Rotation
//
// A RotateRequest names the next epoch (the current one plus one) and a
// grace period (a Go duration, at most MaxGrace; empty means DefaultGrace),
// signed by the manifest owner over provision.RotateMessage(manifest hash,
// next epoch, grace). Grants then carry the new epoch's keys and, until
// the grace period ends, the previous epoch's (Grant.GraceUntil). The
// coordinator publishes provision.EpochNotice on AddressEpoch, signed with
// its signing key (which every grant names, Grant.CoordinatorKey); joined
// enclaves verify it and join again to fetch the new keys. Only the previous epoch has a
// grace period: a rotation during one ends the older epoch's at once. An
// accepted manifest update publishes the same notice (the current epoch,
// the new manifest's hash), so that joined enclaves join again and hold
// grants of the new manifest, which clients that follow the update pin.
//
// # Configuration
//
// The host may hand the coordinator a [Config] in Init (JSON): a DCAP
// collateral bundle, verified like the quotes it serves, and the
// simulation platform keys to trust (the host's own attest.SimulationRoot,
// other machines' for a simulated cluster; see [Config.TrustSimulationRoot]).
// Neither
// widens what the manifest allows. A configuration that does not parse
// stops the coordinator from starting.
//
// # State
//
// The root secret, the signing key's seed, the manifest (canonical JSON)
// with the owner signature that made it current and the manifest history,
// the epoch and its grace period — the *shared* state, versioned by a
// counter that grows with every change — and this instance's join and
// refusal counters and its copy of the group's registers are kept as one
// JSON value in protected storage (trusted.Runtime.Put: sealed inside the
// enclave, with a seal policy of MRENCLAVE by default, so only the same
// coordinator image can read it). Changes to the manifest and the epoch are
// written before they are answered; counters are written in the
// background, so a crash may lose the last few counts. A restarted
// coordinator (the supervisor restarts it after kill -9) reads the state
// back and hands out the same keys. Protected storage has no freshness:
// a lone coordinator (a manifest without a freshness section) can be
// rolled back by its host to an older blob (an older manifest or epoch),
// though not forged; clients that require a minimum manifest version
// (client.Options.MinManifestVersion) refuse it. A manifest that declares
// freshness closes that gap with a replica group.
//
// # Replicas and freshness
//
// With a freshness section (manifest.Freshness: replicas N, a checkpoint
// interval) the coordinator runs as N replicas of the same image in slots
// 0…N−1 (Config.Slot; the host puts them on different nodes and lets each
// consume only its own slot's addresses, [ReplicaAddresses]). Any live
// replica answers every address above; they share the root secret, the
// signing key and the challenge key (derived from the root), so a client
// sees one coordinator. Each replica keeps, in enclave memory only, a set
// of registers subject → (counter, SHA-256 digest): "coordinator" (the
// shared state's version), "member/<slot>" (the slot's current
// incarnation) and "service/<name>/<instance>" (a service instance's
// state, see provision's Checkpoint). Package freshness holds the rules;
// this package carries them over the bus.
//
// Incarnations. Every start of a replica draws an Ed25519 key and an HPKE
// key in enclave memory and asks for evidence whose report data is
// SHA-512(frame("cloister/coordinator/v1/replica", slot, key, box key)).
// A replica accepts a peer only if that evidence verifies, is of the kind
// of its own (SGX or simulated), and names its own MRENCLAVE and MRSIGNER
// (and no debug enclave unless it is one) and, when the manifest lists a
// service named "coordinator" with identities, satisfies them (with the
// manifest's TCB and simulation policy). A slot counts only in its
// current incarnation: the member register's number, raised by each
// admission.
//
// Messages (JSON on provision.ReplicaAddress(slot, "peer"), each signed
// with the sender's incarnation key over "cloister/coordinator/v1/peer" ‖
// the message without its signature; each answer echoes the request's
// 32-byte nonce and carries the answering incarnation's evidence and its
// view of every slot's incarnation):
//
//	read     → every register held and, when asked (the last read of an
//	           admission), the shared state at the held version, sealed with AES-256-GCM under
//	           HKDF(root, frame("cloister/coordinator/v1/replica-state")), the
//	           version as additional data
//	write    (register[, sealed shared state]) → ack; refused if the
//	           counter is below the one held (stale: a rollback, counted
//	           and logged) or equal with another digest (fork), or if the
//	           writer is an older incarnation than the one registered
//	secrets  → root, signing seed and shared state, sealed with HPKE to the
//	           requester's box key; only to an incarnation whose member
//	           register here names its key
//
// Quorum. A write is done when acks from a quorum of current incarnations
// name it; a read takes the highest version of each subject over answers
// from a quorum. Once all N slots have been admitted, a quorum is a
// majority (N/2+1) of the slots; while the group is still forming it is
// every member admitted so far (every formation write reached each of
// them). An ack or answer from an incarnation another answer of the same
// set reports superseded does not count.
//
// Admission of a starting replica (its registers are empty; it answers
// only its status): (1) read a quorum of the other slots; (2) write its
// member register (the highest number seen + 1, hash of its key) to a
// quorum of the other slots — from then on the older incarnation's writes
// and answers no longer count; (3) read a quorum again, which sees every
// write the old incarnation acknowledged before (2); fetch the secrets if
// it has no state; adopt the shared state of the latest coordinator
// version, refusing (counting, logging) a stored state older than it; go
// live. A slot joins the group for the first time only once every lower
// slot answers live: two first admissions at once could each register
// before either is live, and once every slot is registered each would
// need the other. Slot 0 without stored state that finds no live replica makes a
// new group (a new root) — a host that hides a live group from it gets a
// second group, whose keys nothing issued by the first opens.
//
// Commits. A change of the shared state raises its version, is stored
// locally, and is written with its sealed state to a quorum before it is
// answered; acceptors adopt it and store it. If no quorum acknowledges it,
// it is answered 503 like a request that timed out: it was not confirmed,
// and it may still take effect — it stays stored at this replica (and at
// any that accepted it), and the highest version wins: every live replica
// reads a quorum every two seconds and takes a newer shared state it sees
// (publishing the epoch notice, since the enclaves may not have heard of
// it). A retry of the same manifest update sends it again.
//
// Services. A Checkpoint (MAC'd with the service's freshness key,
// HKDF(root, frame("cloister/coordinator/v1/freshness", service)), handed
// in its grant with the interval and the group's key hash) is a quorum
// write of the service's subject; a FreshRead is a quorum read. Answers are
// signed with the coordinator's signing key.
//
// Lost quorum. When every other slot answers and fewer than a quorum are
// live (a majority of the replicas restarted at once; with N = 1, every
// restart), the latest versions are gone from every enclave memory. The
// replica then refuses everything but its status, draws a recovery nonce,
// and waits for a provision.RecoveryStatement: signed by the manifest
// owner, naming its nonce and the versions to continue from (its own
// stored coordinator version must be the one named), which it installs
// as its registers before it goes live ('cloister coordinator recover'
// builds one from the replicas' reports).
//
// What the host can still do: delay, drop, reorder and partition messages,
// and stop replicas — availability is not promised, and a replica that
// cannot reach a quorum answers 503. It cannot roll back the shared state
// or a service's registered version while a quorum of slots lives, cannot
// make a second instance of a slot count (only the current incarnation
// does), and cannot make a replica serve after a lost quorum without the
// owner. It can make a lone slot 0 with wiped storage start a new group
// (above), and after a lost quorum it can offer the owner rolled-back
// hints: the owner's statement decides. Known limits: the number of
// replicas cannot change in a running group (an update that changes it is
// refused); two changes of the shared state committed at the same moment
// through two replicas can both fail (each waits for the other's lock)
// and are answered 503, the next change settling both; spent join
// challenges are remembered per replica, so a captured join replayed at
// another replica yields a second copy of a grant only the original
// enclave can open; the shared state travels whole in one peer message,
// so a manifest history near its bound (provision.MaxHistoryBytes, base64
// twice over) can exceed the bus's message size: such a change is then
// answered 503 with the bus's reason, and not replicated.
package coordinator
