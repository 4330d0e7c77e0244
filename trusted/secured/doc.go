// Package secured is the secured-address layer of the trusted SDK: the
// opt-in part of an enclave image that joins the application's coordinator
// and from then on protects the messages of its secured and client-channel
// addresses itself. An image links it only if it uses it:
//
//	app := trusted.New(trusted.Options{Layer: secured.Layer(secured.Options{})})
//
// Images without secured addresses leave trusted.Options.Layer unset and do
// not link this package, nor secure's envelopes and sessions, nor the join
// protocol (package provision); their trusted code stays within the
// minimal image's budget (see internal/leancheck).
//
// An image with this layer that has a manifest service (Options.Service, or
// the one the host names in Init) joins the coordinator at start-up and
// from then on protects its messages itself; handlers see and pass
// plaintext only, and the host sees only ciphertext on secured and
// client-channel addresses.
//
// Joining (package provision, function Join), after Init and before OnInit
// and Ready, through Request OCALLs the host passes on before Ready:
//
//	→ provision.AddressChallenge            ← Challenge{Nonce}
//	  key := fresh secure.ServiceKey, made and kept inside the enclave
//	  evidence := trusted.Runtime.Evidence(provision.JoinReportData(key's public key, Nonce))
//	→ provision.AddressJoin JoinRequest{Service, public key, Nonce, evidence}
//	← JoinResponse{Grant sealed to key under provision.GrantInfo(Service, Nonce)}
//
// The grant holds the service's rights per address, the address keys of the
// current epoch (and of the previous one during a grace period), the
// service's secrets (Secret) and its client-channel key. While the
// coordinator is unreachable, has no manifest yet or is busy, the join is
// retried until Options.JoinTimeout; a refusal (wrong measurement,
// simulated evidence the manifest forbids, unknown service, …) ends the
// enclave at once with a Fatal naming the coordinator's reason
// (*JoinError), which the host reports as the start-up failure. Ready then
// announces only the registered addresses the grant lets the service
// consume, plus provision.AddressEpoch: on an EpochNotice naming a newer
// epoch, or the current epoch under another manifest (an owner-signed
// update), signed by the coordinator with the key the grant names (others
// are ignored), the runtime joins again and installs the new keys and
// manifest; the old epoch is accepted until the grant's GraceUntil, then
// retired. (A host that replays an older signed notice can make the
// runtime join again, which changes nothing: the grant is the current
// one.)
//
// Deliveries, before the handler runs (on the worker that will run it):
//
//   - an address not in the grant, or without the consume right: rejected
//     (reason "not-allowed");
//   - a secured address: the body must be a secure envelope of the
//     delivery's kind under a held epoch's key, not seen before
//     (secure.Opener, one per address, replay window per sender); the
//     handler gets its plaintext and protected headers (Sealed);
//   - an address open to clients (manifest "clients: true"): a body that
//     is a client-session message (secure.NewClientSession to the service's
//     channel key, info secure.ChannelInfo(service, manifest hash)) is
//     opened by a secure.SessionTable (Options.Sessions bounds it) with the
//     grant's channel key and the manifest's client credentials; the
//     handler learns the client (Client). The message
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
// wire.CodeRejected (400, final), CodeNotAllowed (403, final), CodeAlreadyHandled
// (409: a copy of a client message already handled; nothing to redo),
// CodeSessionUnknown (410: the client must seal it again in a new session)
// or CodeBusy (429: retry later), and a message naming the reason. Rejections
// returns the counts; the host reads them in the enclave's health
// (HealthStatus.Detail = wire.HealthRejectionsPrefix + JSON, counts only).
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
// service consumes are saved in protected storage (per instance number)
// and restored after the first join — except on durable addresses, whose
// at-least-once redelivery after a crash must be accepted again. Without
// freshness they are saved every second when they changed, and at
// Shutdown.
//
// Freshness. When the grant carries freshness (provision.FreshnessGrant:
// the manifest declares it), the layer starts package trusted/fresh's
// tracker right after the first join, before the windows are restored:
//
//	→ provision.AddressFreshRead  FreshRead{Service, Instance, Nonce, MAC}   ← Registered{…, Signature}
//	  local index older than the registered version: Fatal (the reason names both counters)
//	→ provision.AddressCheckpoint Checkpoint{Service, Instance, Counter, Digest, Nonce, MAC} ← Registered{…}
//
// MAC is HMAC-SHA256 under FreshnessGrant.Key; an answer counts only if it
// names the subject and the request's nonce and the grant's
// CoordinatorKey signed it (else ErrBadRegistered, retried). Every
// checkpoint first saves the replay windows that changed (and the record
// of handled client handshakes, below), and a message opened on such an
// address counts as a write: with a checkpoint interval
// of 0, its reply leaves only once a checkpoint covering its window is
// registered, so a restart from any state the host kept refuses it as a
// replay. With an interval, replays are bounded to what was accepted since
// the last checkpoint. The counters (rolled-back blobs refused,
// checkpoints, failed checkpoint attempts) are in Rejections under
// FreshnessAddress. See package trusted/fresh for what is sealed,
// registered and refused.
//
// Limits. Windows are per instance: a host can deliver a captured send or
// request to another instance of the same service. Without freshness it
// can roll protected storage back, or replay within the second before a
// crash, to an instance it restarts. Rotating the key epoch bounds such
// replays completely. Client sessions live in one instance's memory: a
// message of a session another instance opened, or one opened before a
// restart, is refused with CodeSessionUnknown and sealed again by its
// client. A handshake opens a session by itself, so the layer keeps, with
// the replay windows, the sessions whose handshake it handled within the
// handshake age (plus the clock skew allowed): a restarted instance
// refuses a handshake of such a session (CodeSessionUnknown: a client
// whose session the restart cut seals its message again).
// Without freshness that record can be rolled back like the windows, or
// lost in the second before a crash; a handshake can always be replayed to
// another instance. A service that must never apply a message twice keeps
// its own sequence numbers in protected storage. The runtime does not verify the coordinator it joins: it
// accepts a grant that opens with its own key (see SECURITY.md).
//
// The join (Join) is the only implementation of the enclave's side of the
// join protocol: the layer runs it at start-up and on key rotations, and an
// image that handles a grant itself calls it too.
package secured
