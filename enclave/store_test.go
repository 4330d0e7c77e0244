package enclave

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestFileStoreRecoversFromItsJournal: blobs whose files never reached the
// disk (the host crashed before a checkpoint) come back from the journal,
// and a torn last record (its sync never returned) is ignored.
func TestFileStoreRecoversFromItsJournal(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 5 {
		if err := s.PutBatch(ctx, []StoreWrite{{"a", []byte{'a', byte(i)}}, {"b", []byte{'b', byte(i)}}, {"a", []byte{'A', byte(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	// Before a checkpoint the blobs are in the journal (and in memory)
	// only: a crash loses no file. A half-written record follows.
	if blobs, _ := filepath.Glob(filepath.Join(dir, "*.blob")); len(blobs) != 0 {
		t.Fatalf("%d blob files before a checkpoint, want none", len(blobs))
	}
	if got, found, err := s.Get(ctx, "a"); err != nil || !found || !bytes.Equal(got, []byte{'A', 4}) {
		t.Fatalf("a before a checkpoint: %q %v %v", got, found, err)
	}
	torn := appendJournalRecord(nil, []StoreWrite{{"a", []byte("never acknowledged")}})
	f, _ := os.OpenFile(filepath.Join(dir, journalName), os.O_WRONLY|os.O_APPEND, 0)
	f.Write(torn[:len(torn)-3])
	f.Close()
	os.WriteFile(filepath.Join(dir, ".61.blob.tmp-123"), []byte("junk"), 0o600)

	s2, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string][]byte{"a": {'A', 4}, "b": {'b', 4}} {
		if got, found, err := s2.Get(ctx, k); err != nil || !found || !bytes.Equal(got, want) {
			t.Fatalf("%s after recovery: %q %v %v, want %q", k, got, found, err, want)
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, journalName)); st.Size() != 0 {
		t.Fatalf("journal of %d bytes after recovery, want it emptied", st.Size())
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}
}

// TestFileStoreCheckpoints: a journal past its threshold is emptied once
// the blob files are synced, and Close leaves an empty journal.
func TestFileStoreCheckpoints(t *testing.T) {
	s, err := NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	big := make([]byte, 1<<20)
	for range 10 {
		if err := s.Put(ctx, "k", big); err != nil {
			t.Fatal(err)
		}
	}
	if s.size >= journalCheckpoint {
		t.Fatalf("journal of %d bytes, threshold %d", s.size, journalCheckpoint)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(s.Dir(), journalName)); st.Size() != 0 {
		t.Fatalf("journal of %d bytes after Close", st.Size())
	}
	if err := s.Put(ctx, "k", nil); err == nil {
		t.Fatal("Put after Close accepted")
	}
}

// TestFileStoreFailedSyncTakesTheRecordBack: a batch whose journal sync
// fails is not applied, and the store goes on.
func TestFileStoreFailedSyncTakesTheRecordBack(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s.Put(ctx, "k", []byte("old"))
	boom := errors.New("sync failed")
	s.beforeSync = func() error { return boom }
	if err := s.Put(ctx, "k", []byte("new")); !errors.Is(err, boom) {
		t.Fatalf("put: %v", err)
	}
	s.beforeSync = nil
	if b, _, err := s.Get(ctx, "k"); err != nil || string(b) != "old" {
		t.Fatalf("get after a failed put: %q %v", b, err)
	}
	s2, err := NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, _, err := s2.Get(ctx, "k"); err != nil || string(b) != "old" {
		t.Fatalf("recovered after a failed put: %q %v", b, err)
	}
}

// FuzzJournalRecord: the journal decoder (the disk is untrusted) never
// panics, and what it accepts re-encodes to the same bytes.
func FuzzJournalRecord(f *testing.F) {
	f.Add(appendJournalRecord(nil, []StoreWrite{{"s1.00", []byte("blob")}, {"s1.01", nil}}))
	f.Add(appendJournalRecord(nil, nil))
	f.Add([]byte(journalMagic + "\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		writes, rest, ok := decodeJournalRecord(b)
		if !ok {
			return
		}
		if enc := appendJournalRecord(nil, writes); !bytes.Equal(enc, b[:len(b)-len(rest)]) {
			t.Fatalf("accepted record does not re-encode to itself")
		}
	})
}

// TestFileStoreRefusesADamagedJournal: damage before the journal's last
// record is an error, not a torn tail: the records after it were
// acknowledged, and dropping them would lose them silently.
func TestFileStoreRefusesADamagedJournal(t *testing.T) {
	for _, at := range []string{"payload", "magic"} {
		t.Run(at, func(t *testing.T) {
			dir := t.TempDir()
			s, err := NewFileStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for i := range 3 {
				if err := s.PutBatch(ctx, []StoreWrite{{"k", []byte{byte(i)}}}); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, journalName)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			off := 14 // inside the first record's payload
			if at == "magic" {
				off = 0
			}
			b[off] ^= 0x40
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := NewFileStore(dir); !errors.Is(err, ErrStoreDamaged) {
				t.Fatalf("damaged journal opened: %v", err)
			}
		})
	}
}
