package trusted

import (
	"bytes"
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/sha256"
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

const storeAADPrefix = "cloister/trusted/store/v1\x00"

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
	blob, err := rt.sealer.Seal(value, []byte(storeAADPrefix+key))
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
	c := &rt.store
	c.mu.Lock()
	defer c.mu.Unlock()
	// Under c.mu, so that the cache and the order of the frames agree.
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
	if r.Found {
		if value, err = rt.sealer.Unseal(r.Blob, []byte(storeAADPrefix+key)); err != nil {
			return nil, false, fmt.Errorf("trusted: get %s: %w", name, err)
		}
	}
	c.mu.Lock()
	if c.writes == writes {
		// No write since the read was asked for: the answer is current.
		c.set(key, bytes.Clone(value), r.Found)
	}
	c.mu.Unlock()
	return value, r.Found, nil
}
