package trusted

import (
	"bytes"
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/cloister-dev/cloister/boundary"
)

// Defaults of the protected-storage cache (Options.StoreCacheBytes and
// Options.StoreCacheEntries).
const (
	DefaultStoreCacheBytes   = 4 << 20
	DefaultStoreCacheEntries = 4096
)

// storeEntryOverhead is what one cached entry is charged beyond its key and
// value bytes (list element, map slot, slice headers), so that many empty
// values are bounded too.
const storeEntryOverhead = 96

// ErrStorage wraps failures the host reports for protected storage.
var ErrStorage = errors.New("trusted: host storage failed")

// ErrRolledBack is wrapped by a Get that found a blob older than the one
// the instance wrote or registered last (see StoreTracker): the host rolled
// protected storage back.
var ErrRolledBack = errors.New("trusted: protected storage rolled back")

// StoreFormat is the format of a protected-storage blob's contents,
// inside the seal (seal.Version is the seal's own): 2 since blobs carry a
// Version; format 1 blobs still open.
const StoreFormat = 2

// Associated-data prefixes of protected-storage blobs: version 1 (no
// longer written) holds the value; version 2 holds the blob's Version (16
// bytes, big-endian Gen then Seq) and then the value.
const (
	storeAADPrefix   = "cloister/trusted/store/v1\x00"
	storeAADPrefixV2 = "cloister/trusted/store/v2\x00"
)

// Version orders the blobs of one instance's protected storage: Gen is the
// instance's incarnation, Seq its write count within it. A version 1 blob
// has the zero Version.
type Version struct{ Gen, Seq uint64 }

// Less reports whether v is older than w.
func (v Version) Less(w Version) bool { return v.Gen < w.Gen || (v.Gen == w.Gen && v.Seq < w.Seq) }

// A StoreTracker makes protected storage refuse rolled-back blobs
// (package trusted/fresh implements it; see Runtime.TrackStore).
type StoreTracker interface {
	// Next returns the Version of the blob a Put of key seals; it is
	// called in the order the writes go out.
	Next(key string) Version
	// Expect is called before the host is asked for key's blob (in the
	// order of the writes, like Next); the function it returns checks the
	// answer — found, and v the blob's Version — and returns an error
	// wrapping ErrRolledBack when it is older than what the tracker knew
	// when it was asked.
	Expect(key string) func(v Version, found bool) error
	// Hold returns once a message may leave the enclave: a reply, a Done,
	// a send, a publish or a request (ctx is the request's, or the
	// instance's).
	Hold(ctx context.Context) error
}

// TrackStore installs t: from then on Put seals blobs with t's versions,
// Get hands every blob the host returns to t's check, and messages wait
// for t.Hold before they leave. Only a Layer's Start may call it (before
// the instance serves), once.
func (rt *Runtime) TrackStore(t StoreTracker) { rt.tracker = t }

// hold waits for the tracker (if any) before a message leaves.
func (rt *Runtime) hold(ctx context.Context) error {
	if rt.tracker != nil {
		return rt.tracker.Hold(ctx)
	}
	return nil
}

// seal seals value for key, with t's next version (the zero Version
// without a tracker).
func (rt *Runtime) seal(t StoreTracker, key string, value []byte) ([]byte, error) {
	var v Version
	if t != nil {
		v = t.Next(key)
	}
	p := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, 16+len(value)), v.Gen), v.Seq)
	return rt.sealer.Seal(append(p, value...), []byte(storeAADPrefixV2+key))
}

// unseal opens key's blob (either version) and checks it with check (if
// set).
func (rt *Runtime) unseal(check func(Version, bool) error, key string, blob []byte, found bool) ([]byte, error) {
	var v Version
	if found {
		value, err := rt.sealer.Unseal(blob, []byte(storeAADPrefixV2+key))
		if err == nil && len(value) >= 16 {
			v, blob = Version{binary.BigEndian.Uint64(value), binary.BigEndian.Uint64(value[8:])}, value[16:]
		} else if blob, err = rt.sealer.Unseal(blob, []byte(storeAADPrefix+key)); err != nil {
			return nil, err
		}
	}
	if check != nil {
		return blob, check(v, found)
	}
	return blob, nil
}

// storeName is the name the host stores key's blob under: an HMAC of the
// key, so the host never learns key names. Errors that cross the boundary
// name a key by it, never by the key itself.
func (rt *Runtime) storeName(key string) string {
	m := hmac.New(sha256.New, rt.nameKey)
	m.Write([]byte(key))
	return "s1." + hex.EncodeToString(m.Sum(nil)[:20])
}

// storeCache is the enclave-memory view of protected storage: the values
// (or the absence of a value) of the keys the runtime read or wrote,
// least recently used first out, bounded by entries and by bytes. Because
// every write goes through it in the order its StorePut frames go out, and
// the host makes a write durable before it serves a later StoreGet, a
// cached entry always equals what the host will hold once the writes in
// flight are applied.
type storeCache struct {
	mu         sync.Mutex
	maxBytes   int // ≤ 0: nothing is cached
	maxEntries int
	bytes      int
	lru        list.List // of *storeEntry, most recently used at the front
	byKey      map[string]*list.Element
	writes     uint64 // writes so far: a read result older than a write is not cached
}

type storeEntry struct {
	key   string
	value []byte
	found bool
}

func (e *storeEntry) size() int { return len(e.key) + len(e.value) + storeEntryOverhead }

// limits applies the options, before the cache is used.
func (c *storeCache) limits(o *Options) {
	c.byKey = map[string]*list.Element{}
	c.maxBytes, c.maxEntries = o.StoreCacheBytes, o.StoreCacheEntries
	if c.maxBytes == 0 {
		c.maxBytes = DefaultStoreCacheBytes
	}
	if c.maxEntries == 0 {
		c.maxEntries = DefaultStoreCacheEntries
	}
	if o.SyncStore || c.maxEntries < 0 {
		c.maxBytes = 0
	}
}

// lookup returns a copy of key's cached value (under c.mu).
func (c *storeCache) lookup(key string) (value []byte, found, ok bool) {
	el := c.byKey[key]
	if el == nil {
		return nil, false, false
	}
	c.lru.MoveToFront(el)
	e := el.Value.(*storeEntry)
	return bytes.Clone(e.value), e.found, true
}

// set records key's value (under c.mu); value must not be modified
// afterwards. A value too large to cache only removes the old entry.
func (c *storeCache) set(key string, value []byte, found bool) {
	if el := c.byKey[key]; el != nil {
		c.bytes -= el.Value.(*storeEntry).size()
		c.lru.Remove(el)
		delete(c.byKey, key)
	}
	e := &storeEntry{key: key, value: value, found: found}
	if e.size() > c.maxBytes {
		return
	}
	c.byKey[key] = c.lru.PushFront(e)
	c.bytes += e.size()
	for c.bytes > c.maxBytes || len(c.byKey) > c.maxEntries {
		old := c.lru.Back()
		oe := old.Value.(*storeEntry)
		c.bytes -= oe.size()
		c.lru.Remove(old)
		delete(c.byKey, oe.key)
	}
}

// Put stores value under key in protected storage: it is sealed inside the
// enclave and the host stores only the blob.
//
// Put does not wait for the host: it posts the blob (a StorePut OCALL that
// gets no answer) and keeps value in the enclave's storage cache, so a
// later Get of key costs no OCALL. The host makes the write durable before
// it releases anything the enclave sends after it — a reply, a Done, a
// send, a publish, a request — so a requester that sees the reply knows the
// write is on disk. If the host cannot write it, it fails those replies and
// restarts the enclave, dropping the cache with it. With Options.SyncStore,
// Put waits for the host's answer instead, as it did before posted writes.
//
// Errors never name key (the host reads them); they name the storage name
// the host sees.
func (rt *Runtime) Put(ctx context.Context, key string, value []byte) error {
	if rt.sealErr != nil {
		return rt.sealErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	name := rt.storeName(key)
	c := &rt.store
	t := rt.tracker
	if t != nil {
		// Versions must go out in the order they are drawn.
		c.mu.Lock()
		defer c.mu.Unlock()
	}
	blob, err := rt.seal(t, key, value)
	if err != nil {
		return fmt.Errorf("trusted: put %s: %w", name, err)
	}
	if rt.s.opts.SyncStore {
		m, err := rt.s.call(ctx, func(id uint64) boundary.Message {
			return &boundary.StorePut{CallID: id, Key: name, Blob: blob}
		})
		if err != nil {
			return fmt.Errorf("trusted: put %s: %w", name, err)
		}
		if r := m.(*boundary.StoreResult); r.Error != "" {
			return fmt.Errorf("trusted: put %s: %w: %s", name, ErrStorage, r.Error)
		}
		return nil
	}
	value = bytes.Clone(value)
	if value == nil {
		value = []byte{}
	}
	if t == nil {
		// Under c.mu, so that the cache and the order of the frames agree.
		c.mu.Lock()
		defer c.mu.Unlock()
	}
	if err := rt.s.conn.Send(&boundary.StorePut{Key: name, Blob: blob}); err != nil {
		return fmt.Errorf("trusted: put %s: %w", name, err)
	}
	c.writes++
	c.set(key, value, true)
	return nil
}

// Get loads the value stored under key. found is false if the host has no
// blob for it. A value the enclave read or wrote before is served from the
// enclave's storage cache without an OCALL (also a key found absent);
// otherwise the host is asked (StoreGet OCALL), after every write made
// before. A blob that does not unseal (tampered with, swapped from another
// key, sealed by another identity) is an error wrapping the seal package's
// cause. Errors never name key (see Put).
func (rt *Runtime) Get(ctx context.Context, key string) (value []byte, found bool, err error) {
	if rt.sealErr != nil {
		return nil, false, rt.sealErr
	}
	c := &rt.store
	c.mu.Lock()
	if v, found, ok := c.lookup(key); ok {
		c.mu.Unlock()
		return v, found, nil
	}
	writes := c.writes
	var check func(Version, bool) error
	if rt.tracker != nil {
		check = rt.tracker.Expect(key)
	}
	c.mu.Unlock()

	name := rt.storeName(key)
	m, err := rt.s.call(ctx, func(id uint64) boundary.Message {
		return &boundary.StoreGet{CallID: id, Key: name}
	})
	if err != nil {
		return nil, false, fmt.Errorf("trusted: get %s: %w", name, err)
	}
	r := m.(*boundary.StoreResult)
	if r.Error != "" {
		return nil, false, fmt.Errorf("trusted: get %s: %w: %s", name, ErrStorage, r.Error)
	}
	if value, err = rt.unseal(check, key, r.Blob, r.Found); err != nil {
		return nil, false, fmt.Errorf("trusted: get %s: %w", name, err)
	}
	c.mu.Lock()
	if c.writes == writes {
		// No write since the read was asked for: the answer is current.
		c.set(key, bytes.Clone(value), r.Found)
	}
	c.mu.Unlock()
	return value, r.Found, nil
}
