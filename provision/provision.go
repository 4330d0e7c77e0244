// Package provision is the provisioning protocol between enclaves, outside
// clients and the coordinator: the addresses the coordinator serves, the
// messages on them, and what each piece of evidence binds. It is shared by
// the coordinator (which answers), the trusted runtime (which joins) and the
// client SDK (which verifies the coordinator), so it holds types and
// encodings only, on the standard library alone — it is compiled into
// enclave images, and the join side must not pull in attest's crypto/x509
// (hence [EncodeEvidence]).
//
// # Attesting the coordinator (clients, once)
//
//	client → AddressAttest     AttestRequest{Nonce: 32 fresh random bytes}
//	         ← AttestResponse{Evidence, SigningKey, ManifestHash, ManifestVersion}
//
// The evidence's report data is [AttestReportData](SigningKey,
// ManifestHash, Nonce). A client verifies the evidence against its policy
// for the coordinator image, checks the report data with its own nonce, and
// compares ManifestHash with the hash it pinned. From then on it trusts
// SigningKey (Ed25519) to speak for the coordinator.
//
// # A service's client-channel key
//
//	client → AddressServiceKey ServiceKeyRequest{Service}
//	         ← ServiceKeyResponse{Service, PublicKey, ManifestHash, Signature}
//
// Signature is the coordinator's Ed25519 signature over
// [ServiceKeyMessage](ManifestHash, Service, PublicKey). PublicKey is the
// HPKE public key (secure.PublicKey bytes) that every instance of the
// service holds the private half of (it arrives in their grants); the
// client seals requests to it with secure.SealRequest under
// secure.ChannelInfo(Service, ManifestHash).
//
// # Joining (enclaves, at start-up)
//
//	enclave → AddressChallenge  (empty body)
//	          ← Challenge{Nonce: 32 bytes, single use, short-lived}
//	enclave → AddressJoin       JoinRequest{Service, PublicKey, Nonce, Evidence}
//	          ← JoinResponse{Grant: secure.SealTo(PublicKey, GrantInfo(Service, Nonce), Grant JSON)}
//
// The nonce is opaque to the enclave: it is fresh and unpredictable, and
// the coordinator can check on its own that it issued it and when it
// expires (it is authenticated by a key only the coordinator holds), so
// issuing challenges costs it no state and a flood of challenge requests
// cannot crowd out joins. It is spent by the first join whose evidence
// binds it.
//
// PublicKey is a fresh secure.ServiceKey made inside the enclave; the
// evidence's report data is [JoinReportData](PublicKey, Nonce). The
// coordinator verifies the evidence against the manifest's identities for
// Service (and its TCB and simulation policy), spends the nonce, and seals
// the [Grant] to PublicKey, so only that enclave can read its keys and
// secrets. Refusals are bus recipient failures whose message names the
// reason; their codes are the Code* constants.
//
// # Keys and epochs
//
// Address keys live in epochs. A rotation (AddressRotate, signed by the
// manifest owner over [RotateMessage]: manifest hash, next epoch and grace
// period) starts a new epoch; the coordinator publishes an
// [EpochNotice] on AddressEpoch, joined enclaves re-join to fetch the new
// keys, and the previous epoch stays valid until the grant's GraceUntil.
//
// # Following manifest updates (clients)
//
//	client → AddressManifestHistory ManifestHistoryRequest{Pinned: the pinned manifest hash}
//	         ← ManifestHistory{Entries: [pinned manifest, next + owner signature, …, current + owner signature]}
//
// The coordinator keeps the manifests it accepted since the first one, each
// with the owner's signature that made it current, at most
// MaxHistoryEntries of them and MaxHistoryBytes in all (the oldest go
// first). It answers with the entries from the pinned manifest to the
// current one, or refuses with CodeNotFound when the pinned hash is not
// among those it keeps (never set, or dropped by the bound: the client must
// pin again). The answer carries no coordinator signature: a client checks
// that Entries[0] is the manifest it pinned (its hash), that each later
// entry is an update of the one before signed by that one's owner key with
// a higher version (manifest.VerifyUpdate), and that the last is the
// manifest the coordinator's evidence binds. Entries[0].Signature is the
// signature that once made the pinned manifest current (empty for the
// first manifest); the pinned hash vouches for that entry, so it is not
// checked.
//
// # Freshness (services, when the manifest declares it)
//
//	enclave → AddressCheckpoint Checkpoint{Service, Instance, Counter, Digest, Nonce, MAC}
//	          ← Registered{Subject, Counter, Digest, Nonce, Signature}
//	enclave → AddressFreshRead  FreshRead{Service, Instance, Nonce, MAC}
//	          ← Registered{…}
//
// A service instance's state has a version: a counter that grows with
// every write and the digest of its sealed index. A Checkpoint asks the
// coordinator group to remember it; the answering replica writes it to a
// quorum of replicas before it answers. A FreshRead asks for the version a
// quorum remembers (Counter 0 and no digest: none). MAC is HMAC-SHA256
// under the service's FreshnessGrant.Key over [CheckpointMessage] or
// [FreshReadMessage], so only an enclave holding the service's grant
// registers or reads its subject. The answer's Signature is the
// coordinator's Ed25519 signature (Grant.CoordinatorKey) over
// [RegisteredMessage]; the caller's Nonce makes an old answer useless.
// Refusals: CodeConflict for a counter below the one remembered (a
// rolled-back state) or an equal counter with another digest (two
// instances wrote from the same state), CodeUnavailable while the group
// has no quorum (retry).
//
// # Coordinator replicas
//
// When the manifest declares freshness, the coordinator runs as replicas in
// slots 0 to Replicas-1. Every address above reaches any live replica; the
// addresses made by [ReplicaAddress] reach one slot: its [ReplicaStatus],
// the owner's [RecoveryStatement] after a lost quorum, and the replicas'
// own protocol (documented in package coordinator).
package provision

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Addresses served by the coordinator.
const (
	AddressAttest         = "cloister.coordinator.attest"
	AddressServiceKey     = "cloister.coordinator.service-key"
	AddressChallenge      = "cloister.coordinator.challenge"
	AddressJoin           = "cloister.coordinator.join"
	AddressManifestSet    = "cloister.coordinator.manifest.set"
	AddressManifestUpdate = "cloister.coordinator.manifest.update"
	// AddressManifestHistory serves the owner-signed updates since a
	// manifest (ManifestHistoryRequest → ManifestHistory).
	AddressManifestHistory = "cloister.coordinator.manifest.history"
	AddressRotate          = "cloister.coordinator.rotate"
	AddressStatus          = "cloister.coordinator.status"
	// AddressEpoch is published on when a rotation starts a new epoch.
	AddressEpoch = "cloister.coordinator.epoch"
)

// Failure codes of coordinator refusals (bus recipient failures).
const (
	CodeBadRequest       = 400 // malformed request
	CodeUnauthorized     = 401 // bad owner signature
	CodeRefused          = 403 // evidence or identity not allowed by the manifest
	CodeNotFound         = 404 // unknown service
	CodeConflict         = 409 // manifest already set, or version not higher
	CodeNoManifest       = 412 // no manifest set yet
	CodeTooMany          = 429 // too many joins at once: retry shortly
	CodeInternal         = 500
	NonceSize            = 32
	MaxMessageSize       = 1 << 20 // bound on every provisioning message
	DefaultNonceLifetime = 2 * time.Minute
	HashSize             = 32 // of a manifest hash
)

// Bounds of the manifest history a coordinator keeps and serves: at most
// MaxHistoryEntries manifests (the current one included) of at most
// MaxHistoryBytes canonical manifest and signature bytes in all, so that
// an answer always fits in MaxMessageSize. Beyond them the oldest entries
// go, and a client that pinned one of those must pin again.
const (
	MaxHistoryEntries = 64
	MaxHistoryBytes   = 640 << 10
)

// AttestRequest asks the coordinator for its evidence.
type AttestRequest struct {
	Nonce []byte `json:"nonce"`
}

// AttestResponse is the coordinator's evidence and what it binds.
type AttestResponse struct {
	// Evidence is attest.Evidence in its binary encoding.
	Evidence        []byte `json:"evidence"`
	SigningKey      []byte `json:"signing_key"`
	ManifestHash    []byte `json:"manifest_hash"`
	ManifestVersion uint64 `json:"manifest_version"`
}

// ServiceKeyRequest asks for a service's client-channel public key.
type ServiceKeyRequest struct {
	Service string `json:"service"`
}

// ServiceKeyResponse is a service's client-channel key, signed by the
// coordinator.
type ServiceKeyResponse struct {
	Service      string `json:"service"`
	PublicKey    []byte `json:"public_key"`
	ManifestHash []byte `json:"manifest_hash"`
	Signature    []byte `json:"signature"`
}

// Challenge is a single-use nonce for a join.
type Challenge struct {
	Nonce []byte `json:"nonce"`
}

// JoinRequest asks for a grant.
type JoinRequest struct {
	Service   string `json:"service"`
	PublicKey []byte `json:"public_key"`
	Nonce     []byte `json:"nonce"`
	// Evidence is attest.Evidence in its binary encoding.
	Evidence []byte `json:"evidence"`
}

// JoinResponse carries the grant sealed to the joining enclave's key.
type JoinResponse struct {
	Grant []byte `json:"grant"`
}

// Grant is what a joined enclave may know: its keys and secrets.
type Grant struct {
	Service         string `json:"service"`
	ManifestHash    []byte `json:"manifest_hash"`
	ManifestVersion uint64 `json:"manifest_version"`
	// Epoch is the current key epoch.
	Epoch uint32 `json:"epoch"`
	// GraceUntil ends the validity of the previous epoch's keys.
	GraceUntil time.Time      `json:"grace_until"`
	Addresses  []AddressGrant `json:"addresses"`
	// Secrets are the service's secrets by name.
	Secrets map[string][]byte `json:"secrets,omitempty"`
	// ChannelKey is the private half of the service's client-channel key
	// (secure.ServiceKey bytes), shared by all its instances.
	ChannelKey []byte `json:"channel_key,omitempty"`
	// Clients are the manifest's clients (name → Ed25519 public key), for
	// a service that consumes an address open to clients: it accepts a
	// client session only with a handshake one of them signed.
	Clients map[string][]byte `json:"clients,omitempty"`
	// CoordinatorKey is the coordinator's Ed25519 signing key: epoch
	// notices are signed with it.
	CoordinatorKey []byte `json:"coordinator_key,omitempty"`
	// Freshness is set when the manifest declares freshness: the service
	// registers its state versions with the coordinator group.
	Freshness *FreshnessGrant `json:"freshness,omitempty"`
}

// AddressGrant is one address the service may use, with its rights and,
// for a secured address, its keys.
type AddressGrant struct {
	Address string `json:"address"`
	Secured bool   `json:"secured"`
	Durable bool   `json:"durable"`
	// Clients: outside clients may send client-channel messages (HPKE,
	// secure.SealRequest to the service's channel key) to the address.
	Clients bool `json:"clients,omitempty"`
	Consume bool `json:"consume"`
	Send    bool `json:"send"`
	Publish bool `json:"publish"`
	// Keys holds the current epoch's key and, during a grace period, the
	// previous one.
	Keys []EpochKey `json:"keys,omitempty"`
}

// EpochKey is an address key of one epoch.
type EpochKey struct {
	Epoch uint32 `json:"epoch"`
	Key   []byte `json:"key"`
}

// ManifestSet sets the coordinator's first manifest, in its canonical JSON
// form (manifest.Manifest.Canonical; the coordinator refuses any other).
type ManifestSet struct {
	Manifest []byte `json:"manifest"`
}

// ManifestUpdate replaces the manifest with a higher version, signed by
// the owner key of the current one; Manifest is in canonical JSON form.
type ManifestUpdate struct {
	Manifest  []byte `json:"manifest"`
	Signature []byte `json:"signature"`
}

// ManifestHistoryRequest asks for the manifests accepted since the one
// with hash Pinned (HashSize bytes).
type ManifestHistoryRequest struct {
	Pinned []byte `json:"pinned"`
}

// ManifestHistory is the chain of manifests from the pinned one to the
// current one, oldest first (see the package documentation). Each entry is
// the ManifestUpdate that made its manifest current (the first manifest
// ever set, accepted unsigned, has no signature).
type ManifestHistory struct {
	Entries []ManifestUpdate `json:"entries"`
}

// Check checks the shape of a history answer: 1 to MaxHistoryEntries
// entries, each with a manifest, every entry after the first signed. It
// checks no signature (that takes the manifests: package client does it).
func (h *ManifestHistory) Check() error {
	if n := len(h.Entries); n == 0 || n > MaxHistoryEntries {
		return fmt.Errorf("%w: manifest history of %d entries, want 1 to %d", ErrMalformed, n, MaxHistoryEntries)
	}
	for i, e := range h.Entries {
		if len(e.Manifest) == 0 {
			return fmt.Errorf("%w: manifest history entry %d has no manifest", ErrMalformed, i)
		}
		if i > 0 && len(e.Signature) == 0 {
			return fmt.Errorf("%w: manifest history entry %d has no owner signature", ErrMalformed, i)
		}
	}
	return nil
}

// CheckHash reports whether a manifest hash has the right size.
func CheckHash(hash []byte) error {
	if len(hash) != HashSize {
		return fmt.Errorf("%w: manifest hash of %d bytes, want %d", ErrMalformed, len(hash), HashSize)
	}
	return nil
}

// RotateRequest starts a new key epoch; Signature is the owner's over
// RotateMessage(ManifestHash, NextEpoch, Grace), so the host can change
// neither the epoch nor the grace period.
type RotateRequest struct {
	NextEpoch uint32 `json:"next_epoch"`
	Grace     string `json:"grace"` // a Go duration; how long the old epoch stays valid
	Signature []byte `json:"signature"`
}

// EpochNotice announces a new epoch. Signature is the coordinator's
// (Ed25519, the key its evidence binds and every grant names as
// Grant.CoordinatorKey) over EpochNoticeMessage(ManifestHash, Epoch): a
// notice the host forged is ignored, so it cannot make enclaves re-join.
type EpochNotice struct {
	Epoch        uint32 `json:"epoch"`
	ManifestHash []byte `json:"manifest_hash"`
	Signature    []byte `json:"signature"`
}

// EpochNoticeMessage is what the coordinator signs in an EpochNotice.
func EpochNoticeMessage(manifestHash []byte, epoch uint32) []byte {
	return bind(labelEpoch, manifestHash, binary.BigEndian.AppendUint32(nil, epoch))
}

// Status is the coordinator's public state.
type Status struct {
	ManifestSet     bool      `json:"manifest_set"`
	ManifestHash    string    `json:"manifest_hash,omitempty"`
	ManifestVersion uint64    `json:"manifest_version,omitempty"`
	Epoch           uint32    `json:"epoch"`
	GraceUntil      time.Time `json:"grace_until,omitzero"`
	Joins           uint64    `json:"joins"`
	Refusals        uint64    `json:"refusals"`
	EvidenceType    string    `json:"evidence_type"`
	Measurement     string    `json:"measurement,omitempty"`
	// Replica is the answering replica's view of the group when the
	// manifest declares freshness (nil otherwise).
	Replica *ReplicaStatus `json:"replica,omitempty"`
}

// Domain-separation labels.
const (
	labelAttest     = "cloister/provision/v1/attest"
	labelJoin       = "cloister/provision/v1/join"
	labelServiceKey = "cloister/provision/v1/service-key"
	labelGrant      = "cloister/provision/v1/grant"
	labelRotate     = "cloister/provision/v1/rotate"
	labelEpoch      = "cloister/provision/v1/epoch-notice"
)

// appendField appends a length-prefixed field, so that no two different
// field lists encode to the same bytes.
func appendField(b, field []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(field)))
	return append(b, field...)
}

func bind(label string, fields ...[]byte) []byte {
	b := appendField(nil, []byte(label))
	for _, f := range fields {
		b = appendField(b, f)
	}
	return b
}

func digest(label string, fields ...[]byte) [64]byte {
	return sha512.Sum512(bind(label, fields...))
}

// AttestReportData is the report data of the coordinator's evidence.
func AttestReportData(signingKey, manifestHash, nonce []byte) [64]byte {
	return digest(labelAttest, signingKey, manifestHash, nonce)
}

// JoinReportData is the report data of a joining enclave's evidence.
func JoinReportData(publicKey, nonce []byte) [64]byte {
	return digest(labelJoin, publicKey, nonce)
}

// ServiceKeyMessage is what the coordinator signs to vouch for a service's
// client-channel key.
func ServiceKeyMessage(manifestHash []byte, service string, publicKey []byte) []byte {
	return bind(labelServiceKey, manifestHash, []byte(service), publicKey)
}

// GrantInfo is the HPKE info a grant is sealed under.
func GrantInfo(service string, nonce []byte) []byte {
	return bind(labelGrant, []byte(service), nonce)
}

// RotateMessage is what the manifest owner signs to start epoch next,
// keeping the previous epoch valid for grace (RotateRequest.Grace, as sent).
func RotateMessage(manifestHash []byte, next uint32, grace string) []byte {
	return bind(labelRotate, manifestHash, binary.BigEndian.AppendUint32(nil, next), []byte(grace))
}

// Evidence types as carried by trusted.Evidence and attest.EvidenceType.
const (
	EvidenceSimulated = "simulated"
	EvidenceSGXDCAP   = "sgx-dcap"
)

// EncodeEvidence returns evidence in attest's binary encoding ("CLEV" ‖
// version 1 ‖ type: 1 simulated, 2 sgx-dcap ‖ u32 quote length ‖ quote) for
// JoinRequest.Evidence. It exists so that the join side (the trusted
// runtime) need not import attest, which pulls in crypto/x509; the
// coordinator decodes it with attest.Evidence.UnmarshalBinary.
func EncodeEvidence(typ string, quote []byte) ([]byte, error) {
	var t byte
	switch typ {
	case EvidenceSimulated:
		t = 1
	case EvidenceSGXDCAP:
		t = 2
	default:
		return nil, fmt.Errorf("provision: evidence of unknown type %q", typ)
	}
	if len(quote) > MaxMessageSize {
		return nil, fmt.Errorf("provision: evidence quote of %d bytes, more than %d", len(quote), MaxMessageSize)
	}
	b := append(make([]byte, 0, 10+len(quote)), "CLEV"...)
	b = append(b, 1, t)
	b = binary.BigEndian.AppendUint32(b, uint32(len(quote)))
	return append(b, quote...), nil
}

// ErrMalformed is returned for a provisioning message that does not decode.
var ErrMalformed = errors.New("provision: malformed message")

// Decode decodes a provisioning message strictly: at most MaxMessageSize
// bytes, one JSON value, no unknown fields.
func Decode(data []byte, v any) error {
	if len(data) > MaxMessageSize {
		return fmt.Errorf("%w: %T: %d bytes, more than %d", ErrMalformed, v, len(data), MaxMessageSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %T: %v", ErrMalformed, v, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: %T: trailing data", ErrMalformed, v)
	}
	return nil
}

// Encode encodes a provisioning message.
func Encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("provision: encode %T: %w", v, err)
	}
	return b, nil
}

// CheckNonce reports whether nonce has the right size.
func CheckNonce(nonce []byte) error {
	if len(nonce) != NonceSize {
		return fmt.Errorf("%w: nonce of %d bytes, want %d", ErrMalformed, len(nonce), NonceSize)
	}
	return nil
}
