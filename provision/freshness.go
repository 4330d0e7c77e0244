package provision

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Addresses of the freshness protocol and of the coordinator replicas.
const (
	AddressCheckpoint = "cloister.coordinator.fresh.checkpoint"
	AddressFreshRead  = "cloister.coordinator.fresh.read"
	// replicaPrefix starts every address of one replica slot; see
	// ReplicaAddress.
	replicaPrefix = "cloister.coordinator.replica."
)

// CodeUnavailable refuses a request a replica cannot answer now: it is
// still being admitted to the group, or the group lost its quorum and waits
// for the owner's recovery statement. Another replica may answer; retry.
const CodeUnavailable = 503

// Per-replica operations: ReplicaAddress(slot, op).
const (
	// ReplicaStatusOp answers (empty) → ReplicaStatus.
	ReplicaStatusOp = "status"
	// ReplicaRecoverOp takes a RecoveryStatement → ReplicaStatus.
	ReplicaRecoverOp = "recover"
	// ReplicaPeerOp carries the replicas' own protocol (package coordinator).
	ReplicaPeerOp = "peer"
)

// ReplicaAddress is the address of operation op of replica slot (0 to
// manifest.MaxReplicas-1): a request reaches that replica, not the group.
func ReplicaAddress(slot int, op string) string {
	return replicaPrefix + strconv.Itoa(slot) + "." + op
}

// ReplicaPattern is the bus pattern of every address of replica slot.
func ReplicaPattern(slot int) string { return replicaPrefix + strconv.Itoa(slot) + ".>" }

// ParseReplicaAddress splits an address made by ReplicaAddress; ok is
// false for any other address.
func ParseReplicaAddress(address string) (slot int, op string, ok bool) {
	rest, found := strings.CutPrefix(address, replicaPrefix)
	if !found {
		return 0, "", false
	}
	num, op, found := strings.Cut(rest, ".")
	n, err := strconv.Atoi(num)
	if !found || err != nil || n < 0 || strconv.Itoa(n) != num || op == "" {
		return 0, "", false
	}
	return n, op, true
}

// FreshnessGrant is what a service needs for freshness, in its grant when
// the manifest declares freshness.
type FreshnessGrant struct {
	// Key authenticates the service's Checkpoint and FreshRead requests
	// (HMAC-SHA256); every instance of the service holds it.
	Key []byte `json:"key"`
	// Checkpoint is the manifest's checkpoint interval (a Go duration).
	Checkpoint string `json:"checkpoint"`
	// Group is the SHA-256 of the coordinator group's signing key: a
	// service's sealed index names the group it registered with.
	Group []byte `json:"group"`
}

// Checkpoint registers a service instance's state version.
type Checkpoint struct {
	Service  string `json:"service"`
	Instance uint32 `json:"instance"`
	Counter  uint64 `json:"counter"`
	Digest   []byte `json:"digest"`
	Nonce    []byte `json:"nonce"`
	MAC      []byte `json:"mac"`
}

// FreshRead asks for the state version the group remembers for a service
// instance.
type FreshRead struct {
	Service  string `json:"service"`
	Instance uint32 `json:"instance"`
	Nonce    []byte `json:"nonce"`
	MAC      []byte `json:"mac"`
}

// Registered is the group's answer to a Checkpoint or a FreshRead.
type Registered struct {
	Subject   string `json:"subject"`
	Counter   uint64 `json:"counter"`
	Digest    []byte `json:"digest,omitempty"`
	Nonce     []byte `json:"nonce"`
	Signature []byte `json:"signature"`
}

// DigestSize is the size of a state digest (SHA-256).
const DigestSize = 32

// ServiceSubject is the subject under which the group remembers a service
// instance's state: "service/NAME/INSTANCE".
func ServiceSubject(service string, instance uint32) string {
	return "service/" + service + "/" + strconv.FormatUint(uint64(instance), 10)
}

// CoordinatorSubject is the subject of the coordinator's own state.
const CoordinatorSubject = "coordinator"

// CheckpointMessage is what a Checkpoint's MAC covers.
func CheckpointMessage(subject string, counter uint64, digest, nonce []byte) []byte {
	return bind(labelCheckpoint, []byte(subject), binary.BigEndian.AppendUint64(nil, counter), digest, nonce)
}

// FreshReadMessage is what a FreshRead's MAC covers.
func FreshReadMessage(subject string, nonce []byte) []byte {
	return bind(labelFreshRead, []byte(subject), nonce)
}

// RegisteredMessage is what the coordinator signs in a Registered answer.
func RegisteredMessage(subject string, counter uint64, digest, nonce []byte) []byte {
	return bind(labelRegistered, []byte(subject), binary.BigEndian.AppendUint64(nil, counter), digest, nonce)
}

// FreshnessMAC computes the MAC of a Checkpoint or FreshRead message.
func FreshnessMAC(key, message []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(message)
	return m.Sum(nil)
}

// CheckFreshnessMAC reports whether mac authenticates message under key.
func CheckFreshnessMAC(key, message, mac []byte) bool {
	return hmac.Equal(FreshnessMAC(key, message), mac)
}

// NewCheckpoint is the Checkpoint of a service instance's version,
// authenticated with key (FreshnessGrant.Key); nonce is the caller's fresh
// NonceSize bytes, which the answer must echo.
func NewCheckpoint(key []byte, service string, instance uint32, counter uint64, digest, nonce []byte) Checkpoint {
	subject := ServiceSubject(service, instance)
	return Checkpoint{Service: service, Instance: instance, Counter: counter, Digest: digest, Nonce: nonce,
		MAC: FreshnessMAC(key, CheckpointMessage(subject, counter, digest, nonce))}
}

// NewFreshRead is the FreshRead of a service instance's registered
// version, authenticated with key; see NewCheckpoint.
func NewFreshRead(key []byte, service string, instance uint32, nonce []byte) FreshRead {
	return FreshRead{Service: service, Instance: instance, Nonce: nonce,
		MAC: FreshnessMAC(key, FreshReadMessage(ServiceSubject(service, instance), nonce))}
}

// Check reports whether r answers the request for subject with nonce and
// is signed by coordinatorKey (Grant.CoordinatorKey); the error says what
// is wrong.
func (r *Registered) Check(coordinatorKey []byte, subject string, nonce []byte) error {
	switch {
	case r.Subject != subject || !bytes.Equal(r.Nonce, nonce):
		return fmt.Errorf("an answer for subject %q or to another request", r.Subject)
	case len(coordinatorKey) != ed25519.PublicKeySize ||
		!ed25519.Verify(coordinatorKey, RegisteredMessage(r.Subject, r.Counter, r.Digest, r.Nonce), r.Signature):
		return errors.New("the signature does not verify with the grant's coordinator key")
	case len(r.Digest) != 0 && len(r.Digest) != DigestSize:
		return fmt.Errorf("digest of %d bytes", len(r.Digest))
	}
	return nil
}

// Register is one remembered version, as listed in a ReplicaStatus and in
// a RecoveryStatement.
type Register struct {
	Subject string `json:"subject"`
	Counter uint64 `json:"counter"`
	Digest  []byte `json:"digest,omitempty"`
}

// ReplicaStatus is one replica's view of the group.
type ReplicaStatus struct {
	Slot     int `json:"slot"`
	Replicas int `json:"replicas"`
	// State is ReplicaLive, ReplicaAdmitting or ReplicaNeedsRecovery.
	State string `json:"state"`
	// Reason says why a replica is not live.
	Reason      string `json:"reason,omitempty"`
	Incarnation uint64 `json:"incarnation"`
	// ManifestHash is of the manifest the replica holds (hex), if any.
	ManifestHash string `json:"manifest_hash,omitempty"`
	// RecoveryNonce, while the replica needs recovery, is what a recovery
	// statement for it must name.
	RecoveryNonce []byte `json:"recovery_nonce,omitempty"`
	// Local lists the versions the replica read from its own sealed state
	// (a hint, which the host may have rolled back: the owner decides).
	Local []Register `json:"local,omitempty"`
	// Rollbacks counts rolled-back state refused: stale checkpoints, and
	// local state older than the quorum's.
	Rollbacks uint64 `json:"rollbacks"`
}

// Replica states.
const (
	ReplicaLive          = "live"
	ReplicaAdmitting     = "admitting"
	ReplicaNeedsRecovery = "needs-recovery"
)

// RecoveryStatement ends a lost quorum: the manifest owner names the
// versions to continue from. Signature is the owner's over
// [RecoveryMessage]; a replica accepts it only when it holds the manifest
// with ManifestHash and its RecoveryNonce is among Nonces.
type RecoveryStatement struct {
	ManifestHash []byte     `json:"manifest_hash"`
	Nonces       [][]byte   `json:"nonces"`
	Registers    []Register `json:"registers"`
	Signature    []byte     `json:"signature"`
}

// RecoveryMessage is what the owner signs in a RecoveryStatement; the
// registers must be sorted by subject, without duplicates.
func RecoveryMessage(manifestHash []byte, nonces [][]byte, registers []Register) []byte {
	fields := [][]byte{manifestHash, binary.BigEndian.AppendUint32(nil, uint32(len(nonces)))}
	fields = append(fields, nonces...)
	for _, r := range registers {
		fields = append(fields, []byte(r.Subject), binary.BigEndian.AppendUint64(nil, r.Counter), r.Digest)
	}
	return bind(labelRecovery, fields...)
}

// CheckRegisters reports whether registers are sorted by subject without
// duplicates, each digest empty or DigestSize bytes.
func CheckRegisters(registers []Register) error {
	for i, r := range registers {
		if r.Subject == "" || len(r.Subject) > 256 {
			return fmt.Errorf("%w: register %d: subject of %d bytes", ErrMalformed, i, len(r.Subject))
		}
		if len(r.Digest) != 0 && len(r.Digest) != DigestSize {
			return fmt.Errorf("%w: register %s: digest of %d bytes, want %d", ErrMalformed, r.Subject, len(r.Digest), DigestSize)
		}
		if i > 0 && registers[i-1].Subject >= r.Subject {
			return fmt.Errorf("%w: registers not sorted by subject at %s", ErrMalformed, r.Subject)
		}
	}
	return nil
}

// Domain-separation labels of the freshness messages.
const (
	labelCheckpoint = "cloister/provision/v1/checkpoint"
	labelFreshRead  = "cloister/provision/v1/fresh-read"
	labelRegistered = "cloister/provision/v1/registered"
	labelRecovery   = "cloister/provision/v1/recovery"
)
