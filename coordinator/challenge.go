package coordinator

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/provision"
)

// Layout of a challenge nonce (provision.NonceSize = 32 bytes; opaque to
// the joining enclave, which only binds it into its evidence):
//
//	[0:12)  random
//	[12:16) expiry, Unix seconds, big-endian
//	[16:32) HMAC-SHA256(challenge key, bytes [0:16)), first 16 bytes
const (
	challengeRandomSize = 12
	challengeSignedSize = challengeRandomSize + 4
	challengeMACSize    = provision.NonceSize - challengeSignedSize
)

// challenges mints and checks the coordinator's join challenges without
// keeping state per challenge: a challenge carries its own expiry under a
// MAC keyed by a secret that lives only in this instance's memory. The
// only table is the set of spent challenges, which admits a challenge only
// once a join's evidence verified and bound it — a flood of challenge
// requests costs nothing — and keeps it until it expires.
type challenges struct {
	keyMu    sync.RWMutex
	key      [32]byte
	lifetime time.Duration
	max      int

	mu    sync.Mutex
	spent map[[provision.NonceSize]byte]time.Time // by nonce, until its expiry
}

// newChallenges draws a fresh MAC key: challenges issued before a restart
// are not valid after it (the joiner asks again).
func newChallenges(lifetime time.Duration, max int) (*challenges, error) {
	c := &challenges{lifetime: lifetime, max: max, spent: map[[provision.NonceSize]byte]time.Time{}}
	if _, err := rand.Read(c.key[:]); err != nil {
		return nil, fmt.Errorf("coordinator: challenge key: %w", err)
	}
	return c, nil
}

// setKey replaces the MAC key: a replica group's members share one,
// derived from the root secret, so that a challenge one issued is valid
// at any of them. Challenges issued under the old key are no longer
// valid.
func (c *challenges) setKey(key []byte) {
	c.keyMu.Lock()
	copy(c.key[:], key)
	c.keyMu.Unlock()
}

func (c *challenges) mac(signed []byte) []byte {
	c.keyMu.RLock()
	defer c.keyMu.RUnlock()
	h := hmac.New(sha256.New, c.key[:])
	h.Write(signed)
	return h.Sum(nil)[:challengeMACSize]
}

// mint returns a fresh challenge valid until now + lifetime.
func (c *challenges) mint(now time.Time) ([]byte, error) {
	exp := now.Add(c.lifetime).Unix()
	if exp < 0 || exp > 1<<32-1 {
		return nil, fmt.Errorf("coordinator: challenge expiry %d (Unix seconds) out of range: is the clock right?", exp)
	}
	n := make([]byte, provision.NonceSize)
	if _, err := rand.Read(n[:challengeRandomSize]); err != nil {
		return nil, fmt.Errorf("coordinator: nonce: %w", err)
	}
	binary.BigEndian.PutUint32(n[challengeRandomSize:], uint32(exp))
	copy(n[challengeSignedSize:], c.mac(n[:challengeSignedSize]))
	return n, nil
}

// check verifies a challenge's MAC and expiry; it changes nothing.
func (c *challenges) check(nonce []byte, now time.Time) (expiry time.Time, err error) {
	if len(nonce) != provision.NonceSize {
		return time.Time{}, refuse(provision.CodeBadRequest, "nonce of %d bytes, want %d", len(nonce), provision.NonceSize)
	}
	if !hmac.Equal(nonce[challengeSignedSize:], c.mac(nonce[:challengeSignedSize])) {
		return time.Time{}, refuse(provision.CodeRefused, "nonce %x… was not issued by this coordinator instance (its MAC does not verify; challenges do not survive a coordinator restart): ask for a new challenge", nonce[:4])
	}
	expiry = time.Unix(int64(binary.BigEndian.Uint32(nonce[challengeRandomSize:])), 0)
	if !now.Before(expiry) {
		return time.Time{}, refuse(provision.CodeRefused, "nonce %x… expired at %s: ask for a new challenge", nonce[:4], expiry.UTC().Format(time.RFC3339))
	}
	return expiry, nil
}

// spend records a checked challenge as used by a join whose evidence bound
// it. A challenge spent before is refused (a replay). When max challenges
// are spent and none has expired yet, the join is refused with
// provision.CodeTooMany (the joiner retries): spent challenges are never
// forgotten before they expire, so a replay never slips through.
func (c *challenges) spend(nonce []byte, expiry, now time.Time) error {
	var n [provision.NonceSize]byte
	copy(n[:], nonce)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.spent[n]; ok {
		return refuse(provision.CodeRefused, "nonce %x… was already used (a replay?): ask for a new challenge", nonce[:4])
	}
	if len(c.spent) >= c.max {
		for k, exp := range c.spent {
			if !now.Before(exp) {
				delete(c.spent, k)
			}
		}
	}
	if len(c.spent) >= c.max {
		return refuse(provision.CodeTooMany, "%d joins within the challenge lifetime, the most this coordinator remembers: try again shortly", len(c.spent))
	}
	c.spent[n] = expiry
	return nil
}
