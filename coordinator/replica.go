package coordinator

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/freshness"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/trusted"
)

// Operations of the replicas' own protocol (provision.ReplicaPeerOp).
const (
	opRead    = "read"
	opWrite   = "write"
	opSecrets = "secrets"
)

// Labels of the replica protocol.
const (
	labelReplica    = "cloister/coordinator/v1/replica"       // report data of an incarnation
	labelPeerSig    = "cloister/coordinator/v1/peer"          // signatures of requests and answers
	labelStateKey   = "cloister/coordinator/v1/replica-state" // AEAD key of the shared state in transit
	labelSecrets    = "cloister/coordinator/v1/secrets"       // HPKE info of the secrets handed to an admitted replica
	labelFreshKey   = "cloister/coordinator/v1/freshness"     // a service's checkpoint MAC key
	labelChallenges = "cloister/coordinator/v1/challenge"     // the replicas' common challenge key
)

// Timing of the replica protocol.
const (
	peerTimeout    = 3 * time.Second
	admissionRetry = 500 * time.Millisecond
)

// peerID is one incarnation of a replica slot as it introduces itself:
// Evidence binds Slot, Key and Box (replicaReportData); Number is the
// incarnation number it was admitted as (0 while admitting).
type peerID struct {
	Slot     int    `json:"slot"`
	Number   uint64 `json:"number"`
	Key      []byte `json:"key"`
	Box      []byte `json:"box"`
	Evidence []byte `json:"evidence"`
}

// peerRequest is a request of the replica protocol, signed by From.Key.
type peerRequest struct {
	Op string `json:"op"`
	// WantState asks a read's answer to carry the shared state.
	WantState bool                `json:"want_state,omitempty"`
	From      peerID              `json:"from"`
	Nonce     []byte              `json:"nonce"`
	Register  *provision.Register `json:"register,omitempty"`
	State     []byte              `json:"state,omitempty"`
	Signature []byte              `json:"signature,omitempty"`
}

// peerAnswer answers a peerRequest, signed by From.Key; Nonce is the
// request's.
type peerAnswer struct {
	From     peerID               `json:"from"`
	Nonce    []byte               `json:"nonce"`
	Replicas int                  `json:"replicas"`
	Holds    []provision.Register `json:"holds,omitempty"`
	Members  map[int]uint64       `json:"members"`
	Ack      *provision.Register  `json:"ack,omitempty"`
	// State is, for a read, the shared state at the coordinator version
	// held (sealed under the root's replica-state key); for secrets, the
	// whole secret set sealed to the requester's Box.
	State     []byte `json:"state,omitempty"`
	Signature []byte `json:"signature,omitempty"`
}

// signPeer signs v (a *peerRequest or *peerAnswer whose Signature is nil).
func signPeer(key ed25519.PrivateKey, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("coordinator: encode peer message: %w", err)
	}
	return ed25519.Sign(key, append([]byte(labelPeerSig), b...)), nil
}

// verifyPeerSig checks a signature made by signPeer over v with its
// Signature field cleared by the caller.
func verifyPeerSig(pub []byte, v any, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize {
		return false
	}
	b, err := json.Marshal(v)
	return err == nil && ed25519.Verify(pub, append([]byte(labelPeerSig), b...), sig)
}

// replicaReportData binds an incarnation's slot and keys into its
// evidence.
func replicaReportData(slot int, key, box []byte) [64]byte {
	return sha512.Sum512([]byte(frame(labelReplica, strconv.Itoa(slot), string(key), string(box))))
}

// coordinatorService is the manifest service whose identities, when the
// manifest lists it, every replica must satisfy.
const coordinatorService = "coordinator"

// Replica phases (provision.Replica*).
const (
	phaseAdmitting     = provision.ReplicaAdmitting
	phaseLive          = provision.ReplicaLive
	phaseNeedsRecovery = provision.ReplicaNeedsRecovery
)

// group is one replica's part in the coordinator group: its incarnation,
// its quorum memory and its view of the other slots.
type group struct {
	in   *instance
	slot int
	key  ed25519.PrivateKey
	box  *secure.ServiceKey
	me   peerID // Number set once admitted

	ownClaims *attest.Claims // of this incarnation's own evidence

	mu            sync.Mutex
	mem           *freshness.Replica
	phase         string
	reason        string
	recoveryNonce []byte
	replicas      int // N, from the manifest (1 before one is set)
	rollbacks     uint64
	verified      map[[32]byte]peerID // evidence hash → verified identity
}

// newGroup makes this start's incarnation: fresh keys and evidence.
func newGroup(ctx context.Context, in *instance, slot int) (*group, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("coordinator: incarnation key: %w", err)
	}
	box, err := secure.NewServiceKey()
	if err != nil {
		return nil, fmt.Errorf("coordinator: incarnation box key: %w", err)
	}
	g := &group{in: in, slot: slot, key: key, box: box, phase: phaseAdmitting, replicas: 1, verified: map[[32]byte]peerID{}}
	g.me = peerID{Slot: slot, Key: pub, Box: box.PublicKeyBytes()}
	g.mem = freshness.NewReplica(freshness.Slot(slot), sha256.Sum256(pub))
	ev, err := in.rt.Evidence(ctx, replicaReportData(slot, g.me.Key, g.me.Box))
	if err != nil {
		return nil, fmt.Errorf("coordinator: incarnation evidence: %w", err)
	}
	if g.me.Evidence, err = provision.EncodeEvidence(ev.Type, ev.Quote); err != nil {
		return nil, err
	}
	in.evType = ev.Type
	// Our own claims are what a peer must match: verified like a peer's.
	id, claims, err := g.verifyEvidence(ctx, g.me)
	if err != nil {
		return nil, fmt.Errorf("coordinator: own incarnation evidence does not verify (the replicas could not admit each other): %w", err)
	}
	g.ownClaims = claims
	g.verified[sha256.Sum256(g.me.Evidence)] = id
	return g, nil
}

// verifyEvidence checks that id's evidence verifies and binds its slot and
// keys; it returns id as verified (Number cleared) and the claims.
func (g *group) verifyEvidence(ctx context.Context, id peerID) (peerID, *attest.Claims, error) {
	var ev attest.Evidence
	if err := ev.UnmarshalBinary(id.Evidence); err != nil {
		return peerID{}, nil, fmt.Errorf("replica evidence: %w", err)
	}
	opts := attest.VerifyOptions{At: g.in.opts.Now(), Collateral: g.in.opts.Collateral}
	if g.in.cfg.collateral != nil {
		opts.Collateral = g.in.cfg.collateral
	}
	if ev.Type == attest.EvidenceSimulated {
		keys := g.in.simPlatformKeys()
		if len(keys) == 0 {
			return peerID{}, nil, errors.New("simulated replica evidence, and no simulation platform key is configured")
		}
		opts.AllowSimulation, opts.SimPlatformKeys = true, keys
	}
	claims, err := attest.Verifier{}.Verify(ctx, &ev, opts)
	if err != nil {
		return peerID{}, nil, fmt.Errorf("replica evidence does not verify: %w", err)
	}
	if claims.ReportData != replicaReportData(id.Slot, id.Key, id.Box) {
		return peerID{}, nil, errors.New("replica evidence does not bind its slot and keys")
	}
	id.Number = 0
	return id, claims, nil
}

// checkPeer verifies a peer's identity (cached by evidence) and that it
// runs what this replica runs: the same kind of evidence, measurement and
// signer, and no debug enclave unless this one is.
func (g *group) checkPeer(ctx context.Context, id peerID) error {
	if id.Slot < 0 || id.Slot >= g.groupSize() {
		return fmt.Errorf("slot %d is not among the group's %d", id.Slot, g.groupSize())
	}
	h := sha256.Sum256(id.Evidence)
	g.mu.Lock()
	known, ok := g.verified[h]
	g.mu.Unlock()
	if ok {
		if known.Slot != id.Slot || !bytes.Equal(known.Key, id.Key) || !bytes.Equal(known.Box, id.Box) {
			return errors.New("replica evidence does not bind its slot and keys")
		}
		return nil
	}
	v, claims, err := g.verifyEvidence(ctx, id)
	if err != nil {
		return err
	}
	own := g.ownClaims
	switch {
	case claims.Simulated() != own.Simulated():
		return fmt.Errorf("replica evidence of another kind (simulated %v, this replica's %v)", claims.Simulated(), own.Simulated())
	case claims.MREnclave != own.MREnclave || claims.MRSigner != own.MRSigner:
		return fmt.Errorf("replica measurement %x (signer %x) is not this coordinator's %x", claims.MREnclave, claims.MRSigner, own.MREnclave)
	case claims.Debug && !own.Debug:
		return errors.New("replica is a debug enclave")
	}
	// When the manifest names the coordinator's identities (an
	// application's manifest does), a replica must satisfy them too.
	g.in.mu.Lock()
	m := g.in.m
	g.in.mu.Unlock()
	if m != nil {
		if svc, err := m.Service(coordinatorService); err == nil && svc.Trusted() {
			if err := m.Check(coordinatorService, claims); err != nil {
				return fmt.Errorf("replica is not among the manifest's coordinator identities: %w", err)
			}
		}
	}
	g.mu.Lock()
	if len(g.verified) > 1024 { // incarnations come and go: forget old ones
		clear(g.verified)
	}
	g.verified[h] = v
	g.mu.Unlock()
	return nil
}

// groupSize is N.
func (g *group) groupSize() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.replicas
}

// setReplicas takes N from the manifest (1 without freshness).
func (g *group) setReplicas(n int) {
	g.mu.Lock()
	g.replicas = max(n, 1)
	g.mu.Unlock()
}

// phaseIs reports whether the replica is in phase.
func (g *group) phaseIs(phase string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.phase == phase
}

// live reports whether this replica answers.
func (g *group) live() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.phase == phaseLive
}

// unavailable is the refusal of a replica that is not live.
func (g *group) unavailable() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.phase == phaseLive {
		return nil
	}
	return refuse(provision.CodeUnavailable, "coordinator replica %d is %s (%s): another replica may answer; retry", g.slot, g.phase, g.reason)
}

func (g *group) setPhase(phase, reason string) {
	g.mu.Lock()
	changed := g.phase != phase || g.reason != reason
	g.phase, g.reason = phase, reason
	g.mu.Unlock()
	if changed {
		g.in.rt.Logger().Info("coordinator: replica "+phase, "slot", g.slot, "reason", reason)
	}
}

// stateKey derives the AEAD key that seals the shared state between
// replicas (every admitted replica holds the root).
func stateAEAD(root []byte) (cipher.AEAD, error) {
	k, err := derive(root, 32, labelStateKey)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// sealShared seals the shared state of version for the other replicas:
// AES-256-GCM under the root's replica-state key, a random nonce, the
// version as additional data.
func sealShared(root []byte, version uint64, plain []byte) ([]byte, error) {
	a, err := stateAEAD(root)
	if err != nil {
		return nil, fmt.Errorf("coordinator: seal shared state: %w", err)
	}
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(plain)+a.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("coordinator: seal shared state: %w", err)
	}
	return a.Seal(nonce, nonce, plain, binary.BigEndian.AppendUint64(nil, version)), nil
}

// openShared opens what sealShared sealed and checks it against the
// version's digest.
func openShared(root []byte, v provision.Register, blob []byte) (*shared, error) {
	a, err := stateAEAD(root)
	if err != nil {
		return nil, err
	}
	if len(blob) < a.NonceSize() {
		return nil, errors.New("coordinator: shared state: too short")
	}
	plain, err := a.Open(nil, blob[:a.NonceSize()], blob[a.NonceSize():], binary.BigEndian.AppendUint64(nil, v.Counter))
	if err != nil {
		return nil, fmt.Errorf("coordinator: shared state of version %d does not open: %w", v.Counter, err)
	}
	if d := sha256.Sum256(plain); !bytes.Equal(d[:], v.Digest) {
		return nil, fmt.Errorf("coordinator: shared state of version %d does not match its digest", v.Counter)
	}
	var sh shared
	if err := json.Unmarshal(plain, &sh); err != nil {
		return nil, fmt.Errorf("coordinator: shared state: %w", err)
	}
	if len(sh.Root) != rootSize || len(sh.SigningSeed) != ed25519.SeedSize || sh.Epoch == 0 || !bytes.Equal(sh.Root, root) {
		return nil, errors.New("coordinator: shared state: not a valid state of this group")
	}
	return &sh, nil
}

// register and version convert between the two spellings of a version.
func register(subject string, v freshness.Version) provision.Register {
	r := provision.Register{Subject: subject, Counter: v.Counter}
	if v.Digest != ([32]byte{}) {
		r.Digest = slices.Clone(v.Digest[:])
	}
	return r
}

func version(r provision.Register) freshness.Version {
	v := freshness.Version{Counter: r.Counter}
	copy(v.Digest[:], r.Digest)
	return v
}

func registers(m map[string]freshness.Version) []provision.Register {
	out := make([]provision.Register, 0, len(m))
	for _, s := range slices.Sorted(maps.Keys(m)) {
		out = append(out, register(s, m[s]))
	}
	return out
}

func membersOut(m map[freshness.Slot]uint64) map[int]uint64 {
	out := make(map[int]uint64, len(m))
	for s, n := range m {
		out[int(s)] = n
	}
	return out
}

func membersIn(m map[int]uint64) map[freshness.Slot]uint64 {
	out := make(map[freshness.Slot]uint64, len(m))
	for s, n := range m {
		out[freshness.Slot(s)] = n
	}
	return out
}

func incarnation(id peerID) freshness.Incarnation {
	return freshness.Incarnation{Slot: freshness.Slot(id.Slot), Number: id.Number, KeyHash: sha256.Sum256(id.Key)}
}

// ---- the peer handler -------------------------------------------------

// peer answers the replica protocol on ReplicaAddress(slot, "peer").
func (in *instance) peer(ctx context.Context, call *trusted.Call) ([]byte, error) {
	g := in.g()
	slot, _, _ := provision.ParseReplicaAddress(call.Address())
	if g == nil || slot != g.slot {
		return nil, refuse(provision.CodeNotFound, "this coordinator replica is not slot %d", slot)
	}
	var req peerRequest
	if err := provision.Decode(call.Body(), &req); err != nil {
		return nil, badRequest(err)
	}
	if err := provision.CheckNonce(req.Nonce); err != nil {
		return nil, badRequest(err)
	}
	sig := req.Signature
	req.Signature = nil
	if !verifyPeerSig(req.From.Key, &req, sig) {
		return nil, refuse(provision.CodeUnauthorized, "peer request not signed by its incarnation key")
	}
	if err := g.checkPeer(ctx, req.From); err != nil {
		return nil, refuse(provision.CodeRefused, "peer refused: %v", err)
	}
	if err := g.unavailable(); err != nil {
		return nil, err
	}
	var a *peerAnswer
	var err error
	switch req.Op {
	case opRead:
		a, err = g.answerRead(&req)
	case opWrite:
		a, err = g.answerWrite(ctx, &req)
	case opSecrets:
		a, err = g.answerSecrets(&req)
	default:
		return nil, refuse(provision.CodeBadRequest, "unknown peer operation %q", req.Op)
	}
	if err != nil {
		return nil, err
	}
	return g.signAnswer(a)
}

func (g *group) signAnswer(a *peerAnswer) ([]byte, error) {
	a.From = g.me
	a.Replicas = g.groupSize()
	sig, err := signPeer(g.key, a)
	if err != nil {
		return nil, err
	}
	a.Signature = sig
	return provision.Encode(a)
}

// answerRead answers everything this replica holds, and the shared state
// at the coordinator version it holds.
func (g *group) answerRead(req *peerRequest) (*peerAnswer, error) {
	g.mu.Lock()
	holds := g.mem.Holds()
	members := g.mem.Members()
	g.mu.Unlock()
	a := &peerAnswer{Nonce: req.Nonce, Holds: registers(holds), Members: membersOut(members)}
	if req.WantState {
		blob, err := g.in.sealedShared()
		if err != nil {
			return nil, err
		}
		a.State = blob
	}
	return a, nil
}

// answerWrite applies a write: a member register of the writer's own slot
// (its admission), or any register from a current incarnation.
func (g *group) answerWrite(ctx context.Context, req *peerRequest) (*peerAnswer, error) {
	r := req.Register
	if r == nil || provision.CheckRegisters([]provision.Register{*r}) != nil || len(r.Digest) != provision.DigestSize {
		return nil, refuse(provision.CodeBadRequest, "peer write without a valid register")
	}
	from := incarnation(req.From)
	v := version(*r)
	g.mu.Lock()
	members := g.mem.Members()
	g.mu.Unlock()
	if r.Subject == freshness.MemberSubject(from.Slot) {
		if v.Digest != from.KeyHash || v.Counter != from.Number {
			return nil, refuse(provision.CodeRefused, "member register of slot %d does not name the writer's key and incarnation", from.Slot)
		}
	} else if cur := members[from.Slot]; from.Number == 0 || from.Number < cur {
		return nil, refuse(provision.CodeRefused, "incarnation %d of slot %d is not current (%d is)", from.Number, from.Slot, cur)
	}
	var sh *shared
	if r.Subject == provision.CoordinatorSubject {
		if req.State == nil {
			return nil, refuse(provision.CodeBadRequest, "coordinator version without its state")
		}
		var err error
		if sh, err = openShared(g.in.root(), *r, req.State); err != nil {
			return nil, refuse(provision.CodeRefused, "%v", err)
		}
	}
	g.mu.Lock()
	ack, err := g.mem.Write(r.Subject, v)
	if err == nil && from.Number > members[from.Slot] && r.Subject != freshness.MemberSubject(from.Slot) {
		// A newer incarnation than we knew: a quorum admitted it.
		g.mem.Learn(map[string]freshness.Version{freshness.MemberSubject(from.Slot): {Counter: from.Number, Digest: from.KeyHash}})
	}
	g.mu.Unlock()
	if err != nil {
		g.countRefused(r.Subject, err)
		return nil, refuse(provision.CodeConflict, "%v", err)
	}
	if sh != nil {
		g.in.adopt(ctx, sh, r.Counter)
	}
	g.in.saveSoon()
	return &peerAnswer{Nonce: req.Nonce, Ack: r, Members: membersOut(ack.Members)}, nil
}

// countRefused counts and logs a refused stale write.
func (g *group) countRefused(subject string, err error) {
	if !errors.Is(err, freshness.ErrStale) && !errors.Is(err, freshness.ErrFork) {
		return
	}
	g.mu.Lock()
	g.rollbacks++
	g.mu.Unlock()
	g.in.rt.Logger().Warn("coordinator: refused a rolled-back or forked version", "subject", subject, "err", err.Error())
}

// answerSecrets hands the root and the state to an incarnation the group
// admitted (its member register here names its key).
func (g *group) answerSecrets(req *peerRequest) (*peerAnswer, error) {
	from := incarnation(req.From)
	g.mu.Lock()
	held, ok := g.mem.Holds()[freshness.MemberSubject(from.Slot)]
	g.mu.Unlock()
	if !ok || held.Digest != from.KeyHash || held.Counter != from.Number {
		return nil, refuse(provision.CodeRefused, "slot %d incarnation %d is not admitted here", from.Slot, from.Number)
	}
	pub, err := secure.ParsePublicKey(req.From.Box)
	if err != nil {
		return nil, refuse(provision.CodeBadRequest, "box key: %v", err)
	}
	g.in.mu.Lock()
	plain, err := json.Marshal(struct {
		Version uint64 `json:"version"`
		*shared
	}{g.in.st.Version, &g.in.st.shared})
	g.in.mu.Unlock()
	if err != nil {
		return nil, err
	}
	sealed, err := secure.SealTo(pub, []byte(frame(labelSecrets, string(req.Nonce))), plain)
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("coordinator: seal secrets: %w", err)
	}
	g.in.rt.Logger().Info("coordinator: secrets handed to an admitted replica", "slot", from.Slot, "incarnation", from.Number)
	return &peerAnswer{Nonce: req.Nonce, State: sealed}, nil
}

// ---- asking the other replicas -----------------------------------------

// peerResult is one other replica's answer, or why there is none.
type peerResult struct {
	slot   int
	answer *peerAnswer
	// notLive: the replica answered that it is not live (it counts as
	// answered when deciding whether the quorum is lost).
	notLive bool
	err     error
}

// askOthers sends req to every other slot; see askSlots.
func (g *group) askOthers(ctx context.Context, req peerRequest, enough func([]peerResult) bool) ([]peerResult, []byte, error) {
	var others []int
	n := g.groupSize()
	if n <= g.slot { // N unknown yet: ask every slot there may be
		n = manifest.MaxReplicas
	}
	for s := range n {
		if s != g.slot {
			others = append(others, s)
		}
	}
	return g.askSlots(ctx, others, req, enough)
}

// askSlots sends one request to each of slots and returns the answers as
// they come, until every slot answered or failed, enough (if not nil)
// says the answers so far suffice, or the time is up.
func (g *group) askSlots(ctx context.Context, slots []int, req peerRequest, enough func([]peerResult) bool) ([]peerResult, []byte, error) {
	nonce := make([]byte, provision.NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	g.mu.Lock()
	me := g.me
	g.mu.Unlock()
	req.From, req.Nonce = me, nonce
	sig, err := signPeer(g.key, &req)
	if err != nil {
		return nil, nil, err
	}
	req.Signature = sig
	body, err := provision.Encode(&req)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan peerResult, len(slots))
	ctx, cancel := context.WithTimeout(ctx, peerTimeout+time.Second)
	defer cancel()
	for _, s := range slots {
		go func() { ch <- g.askOne(ctx, s, body, nonce) }()
	}
	var out []peerResult
	for range slots {
		select {
		case r := <-ch:
			out = append(out, r)
		case <-ctx.Done():
			return out, nonce, nil
		}
		if enough != nil && enough(out) {
			break
		}
	}
	return out, nonce, nil
}

func (g *group) askOne(ctx context.Context, slot int, body, nonce []byte) peerResult {
	resp, err := g.in.rt.Request(ctx, provision.ReplicaAddress(slot, provision.ReplicaPeerOp), nil, body, peerTimeout)
	if err != nil {
		var re *trusted.RequestError
		if errors.As(err, &re) && re.Code == provision.CodeUnavailable {
			return peerResult{slot: slot, notLive: true, err: err}
		}
		return peerResult{slot: slot, err: err}
	}
	var a peerAnswer
	if err := provision.Decode(resp.Body, &a); err != nil {
		return peerResult{slot: slot, err: err}
	}
	sig := a.Signature
	a.Signature = nil
	switch {
	case a.From.Slot != slot:
		return peerResult{slot: slot, err: fmt.Errorf("answer of slot %d from slot %d", slot, a.From.Slot)}
	case !bytes.Equal(a.Nonce, nonce):
		return peerResult{slot: slot, err: errors.New("answer to another request")}
	case !verifyPeerSig(a.From.Key, &a, sig):
		return peerResult{slot: slot, err: errors.New("answer not signed by its incarnation key")}
	}
	if err := g.checkPeer(ctx, a.From); err != nil {
		return peerResult{slot: slot, err: err}
	}
	return peerResult{slot: slot, answer: &a}
}

// quorumRead reads every register from the other slots (and, when live,
// from this replica): the highest version of each subject over a quorum,
// with the answers that hold them.
func (g *group) quorumRead(ctx context.Context, exclude, wantState bool) (map[string]freshness.Version, []peerResult, error) {
	results, nonce, err := g.askOthers(ctx, peerRequest{Op: opRead, WantState: wantState}, nil)
	if err != nil {
		return nil, results, err
	}
	q := freshness.Quorum{N: g.groupSize(), Exclude: -1}
	if exclude {
		q.Exclude = freshness.Slot(g.slot)
	}
	var answers []freshness.Answer
	nonceN := binary.BigEndian.Uint64(nonce)
	for _, r := range results {
		if r.answer == nil {
			continue
		}
		holds := map[string]freshness.Version{}
		for _, h := range r.answer.Holds {
			holds[h.Subject] = version(h)
		}
		answers = append(answers, freshness.Answer{From: incarnation(r.answer.From), Nonce: nonceN, Holds: holds, Members: membersIn(r.answer.Members)})
	}
	if !exclude {
		g.mu.Lock()
		own, err := g.mem.Read(nonceN)
		g.mu.Unlock()
		if err == nil {
			answers = append(answers, own)
		}
	}
	latest, err := q.Latest(nonceN, answers)
	return latest, results, err
}

// quorumWrite writes one register to a quorum (this replica first) and
// returns once a quorum acked it. state goes with a coordinator version.
func (g *group) quorumWrite(ctx context.Context, r provision.Register, state []byte, exclude bool) error {
	v := version(r)
	var acks []freshness.Ack
	if !exclude {
		g.mu.Lock()
		own, err := g.mem.Write(r.Subject, v)
		g.mu.Unlock()
		if err != nil {
			g.countRefused(r.Subject, err)
			return refuse(provision.CodeConflict, "%v", err)
		}
		acks = append(acks, own)
	}
	q := freshness.Quorum{N: g.groupSize(), Exclude: -1}
	if exclude {
		q.Exclude = freshness.Slot(g.slot)
	}
	collect := func(results []peerResult) []freshness.Ack {
		out := slices.Clone(acks)
		for _, res := range results {
			if a := res.answer; a != nil && a.Ack != nil {
				out = append(out, freshness.Ack{From: incarnation(a.From), Subject: a.Ack.Subject, Version: version(*a.Ack), Members: membersIn(a.Members)})
			}
		}
		return out
	}
	if q.Acked(r.Subject, v, acks) { // a group of one
		return nil
	}
	results, _, err := g.askOthers(ctx, peerRequest{Op: opWrite, Register: &r, State: state}, func(res []peerResult) bool { return q.Acked(r.Subject, v, collect(res)) })
	if err != nil {
		return err
	}
	if q.Acked(r.Subject, v, collect(results)) {
		return nil
	}
	var why []string
	for _, res := range results {
		if res.err != nil {
			why = append(why, fmt.Sprintf("replica %d: %v", res.slot, res.err))
			var re *trusted.RequestError
			if errors.As(res.err, &re) && re.Code == provision.CodeConflict {
				return refuse(provision.CodeConflict, "replica %d refused version %d of %s: %s", res.slot, r.Counter, r.Subject, re.Message)
			}
		}
	}
	return refuse(provision.CodeUnavailable, "no quorum of replicas acknowledged version %d of %s (%s): retry", r.Counter, r.Subject, strings.Join(why, "; "))
}

// ---- admission --------------------------------------------------------

// admit runs until this replica is live, needs the owner's recovery
// statement, or ctx ends. local is the version of the state read from
// this replica's own storage (nil: none).
func (g *group) admit(ctx context.Context, local *provision.Register) {
	log := g.in.rt.Logger()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(admissionRetry):
			}
		}
		done, err := g.admitOnce(ctx, local)
		if done {
			return
		}
		if err != nil && g.phaseIs(phaseNeedsRecovery) {
			// Waiting for the owner, it still tries the others: once
			// enough of them are live (another replica recovered), an
			// ordinary admission brings it the latest versions.
			continue
		}
		if err != nil {
			g.setPhase(phaseAdmitting, err.Error())
			if attempt%20 == 0 {
				log.Info("coordinator: replica not admitted yet", "slot", g.slot, "reason", err.Error())
			}
		}
	}
}

// admitOnce is one attempt at the three steps of an admission (see the
// package documentation); done when live or waiting for recovery.
func (g *group) admitOnce(ctx context.Context, local *provision.Register) (bool, error) {
	if g.live() { // the owner's recovery statement came first
		return true, nil
	}
	// Step 1: read from a quorum of the other slots.
	latest, results, err := g.quorumRead(ctx, true, false)
	liveAnswers, notLive, missing := 0, 0, 0
	for _, r := range results {
		switch {
		case r.answer != nil:
			liveAnswers++
			g.setReplicas(max(g.groupSize(), r.answer.Replicas))
		case r.notLive:
			notLive++
		default:
			missing++
		}
	}
	n := g.groupSize()
	if g.slot >= n {
		return false, fmt.Errorf("slot %d is not among the manifest's %d replicas", g.slot, n)
	}
	if err != nil {
		// Without a freshness section in the stored manifest there is
		// nothing to protect: slot 0 goes on alone.
		fresh := g.in.declaresFreshness()
		switch {
		case liveAnswers == 0 && g.slot == 0 && !fresh:
			return true, g.genesis(ctx)
		case local == nil:
			return false, fmt.Errorf("waiting for the group (%d of %d other replicas live): %w", liveAnswers, n-1, err)
		case fresh && (n == 1 || missing == 0 && liveAnswers < n/2+1):
			// Every other slot answered and too few are live: the
			// latest versions are gone from every enclave memory.
			g.needRecovery(ctx, fmt.Sprintf("a majority of the %d replicas restarted (%d others live): the latest versions are lost; the owner's recovery statement is needed", n, liveAnswers))
			return n == 1, err
		default:
			return false, fmt.Errorf("waiting for a quorum (%d live, %d not live, %d not answering): %w", liveAnswers, notLive, missing, err)
		}
	}
	// Replicas join the group the first time in slot order: two slots
	// registered at once, neither live yet, would each wait for the other
	// (once every slot is registered, a quorum is a majority).
	if latest[freshness.MemberSubject(freshness.Slot(g.slot))].Counter == 0 {
		for s := range g.slot {
			if !slices.ContainsFunc(results, func(r peerResult) bool { return r.slot == s && r.answer != nil }) {
				return false, fmt.Errorf("waiting for replica %d to join the group first (replicas join in slot order)", s)
			}
		}
	}
	// Step 2: register this incarnation as the next of its slot.
	g.mu.Lock()
	number := latest[freshness.MemberSubject(freshness.Slot(g.slot))].Counter + 1
	g.me.Number = number
	me := g.me
	g.mu.Unlock()
	reg := register(freshness.MemberSubject(freshness.Slot(g.slot)), freshness.Version{Counter: number, Digest: sha256.Sum256(me.Key)})
	if err := g.quorumWrite(ctx, reg, nil, true); err != nil {
		return false, fmt.Errorf("registering incarnation %d: %w", number, err)
	}
	// Step 3: read again; writes the old incarnation acked before step 2
	// are seen now.
	latest, results, err = g.quorumRead(ctx, true, true)
	if err != nil {
		return false, fmt.Errorf("second read: %w", err)
	}
	if err := g.in.catchUp(ctx, latest, results, local); err != nil {
		return false, err
	}
	g.mu.Lock()
	if g.phase == phaseLive { // recovered by the owner meanwhile
		g.mu.Unlock()
		return true, nil
	}
	g.mem.Learn(latest)
	g.mem.Admit(number)
	g.phase, g.reason, g.recoveryNonce = phaseLive, "", nil
	g.mu.Unlock()
	g.in.rt.Logger().Info("coordinator: replica live", "slot", g.slot, "incarnation", number, "replicas", g.groupSize(),
		"coordinator_version", latest[provision.CoordinatorSubject].Counter)
	return true, nil
}

// genesis makes slot 0 the first member of a new group.
func (g *group) genesis(ctx context.Context) error {
	g.mu.Lock()
	g.me.Number = 1
	g.mem.Admit(1)
	g.phase, g.reason = phaseLive, ""
	g.mu.Unlock()
	g.in.rt.Logger().Info("coordinator: new replica group (slot 0, incarnation 1)")
	return g.in.registerState(ctx)
}

// needRecovery waits for the owner: a fresh recovery nonce, state
// needs-recovery.
func (g *group) needRecovery(_ context.Context, reason string) {
	g.mu.Lock()
	if g.phase == phaseNeedsRecovery {
		g.mu.Unlock()
		return // the nonce the owner may be signing stays
	}
	nonce := make([]byte, provision.NonceSize)
	_, _ = rand.Read(nonce)
	g.recoveryNonce = nonce
	g.mu.Unlock()
	g.setPhase(phaseNeedsRecovery, reason)
	g.in.rt.Logger().Warn("coordinator: replica refuses to serve until the manifest owner signs a recovery statement ('cloister coordinator recover')",
		"slot", g.slot, "reason", reason)
}

// status is this replica's provision.ReplicaStatus.
func (g *group) status() *provision.ReplicaStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := &provision.ReplicaStatus{Slot: g.slot, Replicas: g.replicas, State: g.phase, Reason: g.reason,
		Incarnation: g.me.Number, Rollbacks: g.rollbacks}
	if g.phase == phaseNeedsRecovery {
		s.RecoveryNonce = slices.Clone(g.recoveryNonce)
	}
	return s
}

// hexDigest is for logs.
func hexDigest(d []byte) string {
	if len(d) < 4 {
		return hex.EncodeToString(d)
	}
	return hex.EncodeToString(d[:4])
}
