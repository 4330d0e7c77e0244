package trusted

import (
	"strings"
	"testing"
	"time"
)

// storeOCALLs returns the StoreGet and StorePut OCALLs the host has seen.
func (h *testHost) storeOCALLs() (gets, puts int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gets, h.puts
}

// TestStoreCacheServesWithoutOCALLs: values read or written (and keys found
// absent) are served from enclave memory; beyond the entry bound the least
// recently used are read from the host again.
func TestStoreCacheServesWithoutOCALLs(t *testing.T) {
	h := startInproc(t, testApp(Options{Workers: 2, StoreCacheEntries: 2}), testInit(), nil)
	defer h.shutdown()
	for _, k := range []string{"a", "b", "c"} {
		h.reply("put", map[string]string{"key": k}, []byte("value of "+k))
	}
	get := func(key, want string) {
		t.Helper()
		if r := h.reply("get", map[string]string{"key": key}, nil); string(r.Body) != want {
			t.Fatalf("get %s: %q, want %q", key, r.Body, want)
		}
	}
	get("c", "value of c")
	get("b", "value of b")
	if gets, puts := h.storeOCALLs(); gets != 0 || puts != 3 {
		t.Fatalf("%d StoreGet and %d StorePut OCALLs, want 0 and 3", gets, puts)
	}
	get("a", "value of a") // evicted: read from the host, and cached again
	get("a", "value of a")
	if gets, _ := h.storeOCALLs(); gets != 1 {
		t.Fatalf("%d StoreGet OCALLs, want 1", gets)
	}
	for range 2 {
		if f := h.fail("get", map[string]string{"key": "nobody"}, nil); f.Code != 404 {
			t.Fatalf("missing key: %+v", f)
		}
	}
	if gets, _ := h.storeOCALLs(); gets != 2 {
		t.Fatalf("%d StoreGet OCALLs after two reads of an absent key, want 2", gets)
	}
}

// TestSyncStoreAsksTheHost: with Options.SyncStore every Get is an OCALL
// and every Put waits for the host's answer (the host's error reaches the
// handler, without the key's name).
func TestSyncStoreAsksTheHost(t *testing.T) {
	h := startInproc(t, testApp(Options{Workers: 2, SyncStore: true, ShutdownGrace: 5 * time.Second}), testInit(), nil)
	defer h.shutdown()
	h.reply("put", map[string]string{"key": "alice"}, []byte("v"))
	h.reply("get", map[string]string{"key": "alice"}, nil)
	h.reply("get", map[string]string{"key": "alice"}, nil)
	if gets, puts := h.storeOCALLs(); gets != 2 || puts != 1 {
		t.Fatalf("%d StoreGet and %d StorePut OCALLs, want 2 and 1", gets, puts)
	}
	h.mu.Lock()
	h.storeErr = "disk full"
	h.mu.Unlock()
	f := h.fail("put", map[string]string{"key": "alice"}, []byte("w"))
	if !strings.Contains(f.Message, "disk full") || strings.Contains(f.Message, "alice") {
		t.Fatalf("store error: %+v", f)
	}
}

// TestStoreCacheBound: the cache never holds more than its byte and entry
// bounds, and a value too large for it replaces nothing stale.
func TestStoreCacheBound(t *testing.T) {
	c := &storeCache{}
	c.limits(&Options{StoreCacheBytes: 1000, StoreCacheEntries: 50})
	for i := range 200 {
		c.set(strings.Repeat("k", i%7+1)+string(rune('a'+i%26))+string(rune('a'+i/26)), make([]byte, i%150), true)
		if n, b := len(c.byKey), c.bytes; n > 50 || b > 1000 || n != c.lru.Len() {
			t.Fatalf("after %d sets: %d entries (list %d), %d bytes", i+1, n, c.lru.Len(), b)
		}
	}
	c.set("big", []byte("old"), true)
	c.set("big", make([]byte, 2000), true)
	if _, _, ok := c.lookup("big"); ok {
		t.Fatal("a value larger than the cache is cached, or its stale value kept")
	}
	c = &storeCache{}
	c.limits(&Options{StoreCacheEntries: 3})
	for _, k := range []string{"a", "b", "c", "d"} {
		c.set(k, nil, false)
	}
	if _, _, ok := c.lookup("a"); ok || len(c.byKey) != 3 {
		t.Fatalf("entry bound: %d entries, oldest kept: %v", len(c.byKey), ok)
	}
	if v, found, ok := c.lookup("d"); !ok || found || v != nil {
		t.Fatalf("cached absence: %v %v %v", v, found, ok)
	}
}
