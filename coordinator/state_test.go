package coordinator

import (
	"bytes"
	"testing"

	"github.com/cloister-dev/cloister/provision"
)

func entry(size int, tag byte) provision.ManifestUpdate {
	return provision.ManifestUpdate{Manifest: bytes.Repeat([]byte{tag}, size-64), Signature: make([]byte, 64)}
}

// TestTrimHistory: the history keeps the newest entries that fit, with
// the current manifest, in MaxHistoryEntries and MaxHistoryBytes.
func TestTrimHistory(t *testing.T) {
	var h []provision.ManifestUpdate
	for i := range provision.MaxHistoryEntries + 5 {
		h = append(h, entry(1000, byte(i)))
	}
	cur := entry(1000, 0xff)
	got := trimHistory(h, cur)
	if len(got) != provision.MaxHistoryEntries-1 || got[len(got)-1].Manifest[0] != h[len(h)-1].Manifest[0] || got[0].Manifest[0] != h[6].Manifest[0] {
		t.Fatalf("by count: kept %d entries from %d", len(got), got[0].Manifest[0])
	}
	// By bytes: 100 KiB entries, so 6 fit beside the current one in 640 KiB.
	big := []provision.ManifestUpdate{entry(100<<10, 1), entry(100<<10, 2), entry(100<<10, 3), entry(100<<10, 4),
		entry(100<<10, 5), entry(100<<10, 6), entry(100<<10, 7), entry(100<<10, 8)}
	got = trimHistory(big, entry(100<<10, 9))
	size := 100 << 10
	for _, e := range got {
		size += historySize(e)
	}
	if len(got) != 5 || got[0].Manifest[0] != 4 || size > provision.MaxHistoryBytes {
		t.Fatalf("by bytes: kept %d entries (%d bytes), from %d", len(got), size, got[0].Manifest[0])
	}
	// A current manifest alone over the budget: no history.
	if got = trimHistory(big, entry(provision.MaxHistoryBytes+1, 9)); len(got) != 0 {
		t.Fatalf("kept %d entries beside an oversized manifest", len(got))
	}
	// Whatever is kept, the answer to the oldest pin fits in one message.
	var all []provision.ManifestUpdate
	for i := range provision.MaxHistoryEntries * 2 {
		all = append(all, entry(provision.MaxHistoryBytes/provision.MaxHistoryEntries, byte(i)))
	}
	kept := trimHistory(all, entry(provision.MaxHistoryBytes/provision.MaxHistoryEntries, 0xff))
	b, err := provision.Encode(provision.ManifestHistory{Entries: append(kept, entry(provision.MaxHistoryBytes/provision.MaxHistoryEntries, 0xff))})
	if err != nil || len(b) > provision.MaxMessageSize {
		t.Fatalf("the longest answer: %d bytes, %v", len(b), err)
	}
}
