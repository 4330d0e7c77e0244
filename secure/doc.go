// Package secure is Cloister's end-to-end message protection: AEAD envelopes
// for secured bus addresses, and HPKE channels for clients outside the bus.
// It uses the Go standard library only, because it is compiled into enclave
// images, which stay lean.
//
// Everything the host, the broker, the network or a regular service can do
// to a message — read it, change any bit, replay it, move it to another
// address, deliver a publish as a send, swap replies, drop it — is either
// impossible (confidentiality, integrity) or detected (replay, reorder beyond
// the window, drops on ordered streams). Availability and traffic analysis
// (addresses, sizes, timing) are not protected.
//
// # Address keys and sender subkeys
//
// The coordinator gives every enclave that holds a right on a secured address
// an [AddressKey]: the address, a key epoch (a number that grows with every
// rotation) and 32 random bytes. Every [Sealer] draws a fresh random 16-byte
// [SenderID] when it is created and derives its own subkey
//
//	subkey = HKDF-SHA256(secret = address key, salt = none,
//	                     info = "cloister/secure/v1/sender" ‖ u16 len(address) ‖ address ‖ u32 epoch ‖ sender ID)
//
// so two senders sharing an address key never share an AEAD key. Nonces are
// counters: the 96-bit AES-GCM nonce is 4 zero bytes followed by the 64-bit
// sequence number, which starts at 1 and only grows (a Sealer refuses to wrap
// around). Restarts need no persistent counter: a restarted enclave makes new
// Sealers, which draw new sender IDs, hence new subkeys; a (subkey, nonce)
// pair can therefore only repeat if two random 128-bit sender IDs collide.
// There is no way to create a Sealer with a chosen sender ID, so the API
// cannot be misused into reusing a nonce.
//
// The sender ID separates nonces and keys replay windows; it does not
// authenticate one holder of an address key against another: every enclave
// that holds the key can read, and can seal under any sender ID. Rights are
// enforced when the coordinator hands out keys.
//
// A coordinator that keeps only a sealed root secret can derive address
// keys with [DeriveAddressKey] (HKDF-SHA256 over the root, the address and
// the epoch) and hand them out, encoded with [AddressKey.MarshalBinary] or
// as JSON, inside grants sealed with [SealTo].
//
// # Envelope wire format (version 1)
//
// All integers are big-endian.
//
//	offset size
//	0      3    magic "CSE"
//	3      1    version, 1
//	4      1    kind: 1 send, 2 publish, 3 request, 4 reply
//	5      4    key epoch
//	9      16   sender ID
//	25     8    sequence number (≥ 1)
//	33     24   reply only: the request's sender ID (16) and sequence number (8)
//	..     4    length of the protected-header block
//	..     n    protected-header block
//	..     ≥16  AES-256-GCM ciphertext and tag
//
// The protected-header block is the canonical encoding of a string map:
// u16 count, then for each entry in strictly increasing byte order of keys,
// u16 key length, key, u16 value length, value. Keys are not empty. A block
// that is not canonical (unsorted, duplicate keys, trailing bytes) is
// malformed. Protected headers are authenticated, not encrypted: anything
// confidential belongs in the payload.
//
// The associated data of the AEAD is
//
//	"cloister/secure/v1/envelope" ‖ u16 len(address) ‖ address ‖ every envelope byte before the ciphertext
//
// which binds the version, the address, the kind, the epoch, the sender ID,
// the sequence number, the request a reply answers, and the protected
// headers. An envelope moved to another address, re-labelled as another kind,
// given other headers, or altered in any bit fails authentication.
//
// # Replies
//
// A reply is sealed under the key of the address the request was sent to, by
// the responder's own Sealer for that address, with kind reply and the
// request's (sender ID, sequence number) — its [Ref] — in the header and
// the associated data. The requester opens it with [Opener.OpenReply] and the
// Ref of its request; a reply to another request, even a genuine one, is
// rejected with [ErrWrongRequest], so a host cannot swap replies.
//
// # Opening: epochs, replay window, gaps
//
// An [Opener] holds the keys of one address: the current epoch and any
// previous ones still in their grace period ([Opener.RetireAfter]) or until
// retired ([Opener.Retire]). An envelope of a retired epoch fails with
// [ErrEpochRetired], of an epoch never known with [ErrUnknownEpoch].
//
// Per epoch and sender, the Opener keeps a sliding window (by default 1024
// sequence numbers wide) above the highest sequence number authenticated so
// far. A sequence number seen before fails with [ErrReplay]; one that fell
// below the window fails with [ErrTooOld]; anything else in the window is
// accepted exactly once, so reordering within the window is harmless. The
// window moves only after authentication succeeds, so forged envelopes
// cannot move it.
//
// Drops are made detectable: when an accepted message jumps past sequence
// numbers not yet seen, [Opened.Skipped] names them. On an ordered stream (a
// durable address delivered in order) any skip is a loss; on an unordered one
// the skipped messages may still arrive within the window. [Opened.Expired]
// counts sequence numbers that left the window unseen at this step: they are
// lost for good, whatever the ordering. Sequence numbers start at 1, so a
// receiver sees the very first message of a sender it has not heard from as
// skipping 1..seq-1 (with [Opened.FirstFromSender] set, since a receiver that
// joined late legitimately misses earlier messages).
//
// A restarted receiver starts with empty windows and would accept envelopes
// its previous life already handled (for a durable address that is
// at-least-once redelivery; otherwise it is a replay). A trusted service
// that must not see them twice keeps [Opener.MarshalState] (the windows, not
// the keys) in sealed storage and hands it to [Opener.RestoreState] when it
// starts; see MarshalState for what a rolled-back snapshot still allows.
//
// The checks run in this order: format ([ErrMalformed]), epoch, replay
// window, authentication ([ErrAuth]), then whether the genuine envelope is
// what the delivery should carry ([ErrWrongKind], [ErrWrongRequest]); only
// an envelope that passes all of them moves the window.
//
// Rejections are reported by typed errors that errors.Is distinguishes:
// [ErrMalformed], [ErrUnknownEpoch], [ErrEpochRetired], [ErrAuth],
// [ErrReplay], [ErrTooOld], [ErrWrongKind], [ErrWrongRequest],
// [ErrTooManySenders], and for client sessions [ErrSessionUnknown],
// [ErrUnauthenticated], [ErrInProgress], [ErrClockSkew],
// [ErrTooManyHandshakes]. Counting them is the caller's job.
//
// # Client sessions (HPKE, protocol version 2)
//
// A client outside the bus (a sensor, a browser, the CLI) verifies the
// coordinator once, pins the manifest hash and obtains the target service's
// attested channel key ([ParsePublicKey]). It talks to the service in
// sessions: one HPKE key encapsulation per session, in which the client
// also proves a credential the application's manifest names, then only
// AES-256-GCM under keys exported from that HPKE context. HPKE is RFC 9180
// base mode with KEM ML-KEM-768+X25519 (X-Wing, the default, [SuiteHybrid])
// or DHKEM(X25519) ([SuiteX25519]), KDF HKDF-SHA256 and AEAD AES-256-GCM;
// the HPKE info is [ChannelInfo] (the protocol label, the service name and
// the pinned manifest hash), so a session meant for one service under one
// manifest opens nowhere else. A credential ([Credential]) is a client name
// (1 to [MaxClientName] bytes) and an Ed25519 key.
//
// All integers are big-endian. The first message of a session (and, with
// ClientSessionOptions.RepeatHandshake, up to [RepeatedHandshakes] first
// messages until a reply arrives) carries the handshake:
//
//	handshake = "CSH" ‖ 2 ‖ u16 KEM ID ‖ u64 client time (Unix ms) ‖ key ID (8)
//	            ‖ enc ‖ u16 n ‖ auth (n bytes) ‖ u64 seq ‖ data
//	message   = "CSM" ‖ 2 ‖ session ID (16) ‖ u64 seq ‖ data
//	reply     = "CSR" ‖ 2 ‖ session ID (16) ‖ u64 seq ‖ nonce (12) ‖ AES-256-GCM ciphertext
//
// where:
//
//   - key ID: the first 8 bytes of SHA-256 of the channel key's wire form
//     ([PublicKey.ID]), so a service holding another key tells "sealed to a
//     key I no longer hold" from a forgery;
//   - enc: the HPKE encapsulated key (1120 bytes for X-Wing, 32 for X25519);
//     session ID = the first 16 bytes of SHA-256(enc);
//   - auth = HPKE Seal(aad = the handshake's first 22 bytes,
//     u8 len(name) ‖ name ‖ Ed25519 signature), the signature over
//     "cloister/secure/v2/session-auth" ‖ u16 len(info) ‖ info ‖ the first 22
//     bytes ‖ enc: it binds the client's identity to this very encapsulation,
//     the service and the manifest, and is confidential (only the service
//     learns which client opens the session);
//   - keys: c2s = Export("cloister/secure/v2 client to service", 32),
//     s2c = Export("cloister/secure/v2 service to client", 32);
//   - data = AES-256-GCM(c2s, nonce = 0⁴ ‖ u64 seq, aad = "CSM" ‖ 2 ‖ session
//     ID ‖ u64 seq, plaintext): the same in both forms, so a handshake's data
//     is the message with that sequence number. Sequence numbers start at 1
//     and only grow; a client never seals two messages with one number (a
//     restored session, [UnmarshalClientSession], only opens);
//   - reply: AES-256-GCM(s2c, the random 96-bit nonce it carries, aad = its
//     first 40 bytes). The nonce is random because a host that replays a
//     session's handshake to a restarted service can have one message
//     answered twice. The client accepts a reply only for the session and
//     sequence number of its request.
//
// The service's side is a [SessionTable]. For a handshake it checks, in
// this order: format ([ErrMalformed]); key ID ([ErrSessionUnknown]: the
// client fetches the current key and seals the message again); age — a
// handshake older than HandshakeAge is ErrSessionUnknown, one dated more than
// MaxClockSkew ahead is [ErrClockSkew]; HPKE ([ErrAuth]); the credential — a
// name the manifest does not list, or a signature that is not that client's,
// is [ErrUnauthenticated]; then the data ([ErrAuth]). Only then does it keep
// the session: at most MaxSessions (least recently used forgotten),
// Lifetime after the handshake's time, MaxMessages each; a client's
// handshakes are remembered for HandshakeAge, at most HandshakesPerClient of
// them ([ErrTooManyHandshakes] beyond, for that client only). A remembered
// handshake whose session is gone is ErrSessionUnknown: it can only be a
// copy, so it never re-creates a session. Clients rekey (open a new session)
// before the lifetime and message limits.
//
// Each session keeps a replay window ([DefaultWindow] sequence numbers). A
// message that opens is reserved, not admitted: [SessionMessage.Commit]
// admits it once its handler succeeded (a copy is then [ErrReplay]),
// [SessionMessage.Release] gives it back when the handler failed (a retry of
// the same bytes is then handled); meanwhile a copy is [ErrInProgress]. So a
// retried request is never mistaken for a replay, and a replay never runs
// a handler twice while the session lives.
//
// What the host can still do: drop, delay and reorder messages; deliver a
// copy (refused as above); make the service forget sessions by restarting
// it — then messages of those sessions are ErrSessionUnknown and never reach
// a handler (the client seals them again), except that handshakes younger
// than HandshakeAge can be replayed to a restarted service, whose windows
// are empty: a service that must never apply a message twice across its
// restarts keeps its own sequence numbers in sealed state (the water
// monitor does). Sizes, timing and session IDs (which messages belong to
// one session) are visible.
//
// # One-shot client requests (protocol version 1)
//
// [SealRequest] and [ServiceKey.OpenRequest] are the earlier one-shot
// channel: one HPKE encapsulation per request, no client authentication
// (base mode proves the service to the client, not the client to the
// service). Services that do not know their clients (the water monitor's
// "channel" mode, which has no manifest) still use it; the trusted runtime
// refuses it on addresses open to clients.
//
//	request = "CSQ" ‖ 1 ‖ u16 KEM ID ‖ u64 client time (Unix ms) ‖ enc ‖ HPKE ciphertext
//	reply   = "CSR" ‖ 1 ‖ u64 reply number (≥ 1) ‖ AES-256-GCM ciphertext
//
// The request's first 14 bytes are the HPKE associated data. The reply key
// is Export("cloister reply", 32), its nonce 4 zero bytes ‖ the reply
// number, its first 12 bytes the associated data; a client accepts reply
// numbers in increasing order only. A service that cares about replays keeps
// a [ReplayCache]: it remembers the ID (SHA-256 of enc) of every request
// within a window of the authenticated client time, refuses requests older
// than the window or dated more than DefaultMaxClockSkew ahead, and, when
// full, refuses new requests rather than forgetting any early (the client's
// time never moves what the cache covers).
//
// # Sealing to a public key
//
// [SealTo] and [ServiceKey.OpenSealed] are single-shot HPKE (hpke.Seal and
// hpke.Open) with info "cloister/secure/v1/sealed" ‖ caller's info; the
// coordinator uses them to seal a grant to the public key a joining enclave
// bound into its evidence.
package secure
