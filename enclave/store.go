package enclave

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
)

// Store keeps an enclave's protected blobs for it. The enclave seals every
// value before it leaves (package trusted), so a Store only ever sees
// sealed blobs under key names the enclave chose; it cannot read them, but
// it can lose or roll them back, which the enclave cannot prevent.
// Implementations must be safe for concurrent use.
type Store interface {
	// Put stores blob under key, replacing any previous blob.
	Put(ctx context.Context, key string, blob []byte) error
	// Get returns the blob under key; found is false when there is none.
	Get(ctx context.Context, key string) (blob []byte, found bool, err error)
}

// StoreWrite is one blob to store under Key, in a batch.
type StoreWrite struct {
	Key  string
	Blob []byte
}

// BatchStore is a Store that makes many writes durable together (group
// commit). The host's store writer uses PutBatch when the Store has it, and
// Put for each write otherwise.
type BatchStore interface {
	Store
	// PutBatch stores every write, a later write of a key replacing an
	// earlier one, and returns once all of them are durable. On error any
	// subset of them may have been applied, each whole or not at all.
	PutBatch(ctx context.Context, writes []StoreWrite) error
}

// MaxStoreKey is the longest store key FileStore accepts, in bytes.
const MaxStoreKey = 1024

// MaxBlobSize is the largest blob FileStore accepts.
const MaxBlobSize = 64 << 20

// FileStore is a Store in a directory: one file per key, named by the hex
// of the key (".blob"), and a write-ahead journal ("journal") that makes a
// batch of writes durable with one file sync.
//
// PutBatch appends the batch to the journal as one record (magic "CLJ1",
// u32 payload length, payload of u32 count and (u32 key length, key, u32
// blob length, blob) entries, CRC-32C of the payload; big-endian) and syncs
// the journal: from then on the batch is durable, and Get returns the new
// blobs (kept in memory, the latest per key, until the next checkpoint).
// Once the journal holds more than journalCheckpoint bytes, and at Close,
// the blobs kept in memory are written to their files (a temporary file
// renamed over the key's), the files and the directory are synced and the
// journal is emptied: a key written a thousand times between checkpoints
// costs one file write, not a thousand. NewFileStore
// replays the journal's complete records (a torn last record was never
// acknowledged: its sync did not return) into the blob files, syncs them
// and empties it, so a crash at any point leaves each key with the blob of
// its last durable batch.
//
// After an I/O error the FileStore refuses every further write and read
// with that error (a failed sync may have dropped data the journal was to
// hold); a new FileStore on the same directory recovers from the journal.
// One FileStore at a time may use a directory (opening one recovers, and
// empties, the journal).
type FileStore struct {
	dir string

	mu         sync.Mutex
	journal    *os.File          // nil until the first write
	size       int64             // bytes in the journal
	pending    map[string][]byte // path → its latest blob, durable in the journal only
	broken     error
	beforeSync func() error // tests: runs before the journal sync; an error stops the batch there, as a crash would
}

// Journal format and checkpoint threshold.
const (
	journalName       = "journal"
	journalMagic      = "CLJ1"
	journalCheckpoint = 8 << 20
	// checkpointWriters bounds the blob files a checkpoint writes and
	// syncs at once.
	checkpointWriters = 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewFileStore returns a FileStore in dir, creating it (mode 0700), after
// applying what a crash left in its journal.
func NewFileStore(dir string) (*FileStore, error) {
	if dir == "" {
		return nil, errors.New("enclave: store: empty state directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("enclave: store: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("enclave: store: %w", err)
	}
	s := &FileStore{dir: abs, pending: map[string][]byte{}}
	if err := s.recover(); err != nil {
		return nil, fmt.Errorf("enclave: store: recovering %s: %w", filepath.Join(abs, journalName), err)
	}
	return s, nil
}

// recover removes the temporary files of interrupted writes, applies the
// complete records of the journal, syncs them and empties it.
func (s *FileStore) recover() error {
	tmps, _ := filepath.Glob(filepath.Join(s.dir, ".*.blob.tmp-*"))
	for _, t := range tmps {
		os.Remove(t)
	}
	data, err := os.ReadFile(filepath.Join(s.dir, journalName))
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(data) == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	total := len(data)
	for len(data) > 0 {
		writes, rest, ok := decodeJournalRecord(data)
		if !ok {
			if !lastRecord(data) {
				// Damage before the last record: later records were
				// acknowledged, and dropping them would lose them
				// silently.
				return fmt.Errorf("%w: journal damaged at byte %d of %d (records follow it)", ErrStoreDamaged, total-len(data), total)
			}
			break // a torn last record: its sync never returned, never acknowledged
		}
		data = rest
		for _, w := range writes {
			p, err := s.path(w.Key)
			if err != nil {
				return err
			}
			if err := writeFileAtomic(p, w.Blob, 0o600); err != nil {
				return err
			}
		}
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	return os.Truncate(filepath.Join(s.dir, journalName), 0)
}

// JournalWrites returns the writes the journal of the FileStore directory
// dir holds (durable, and not yet checkpointed into blob files), oldest
// first, for inspection; a torn last record is left out. The blobs are
// sealed: only their enclave can open them.
func JournalWrites(dir string) ([]StoreWrite, error) {
	data, err := os.ReadFile(filepath.Join(dir, journalName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("enclave: store: %w", err)
	}
	var out []StoreWrite
	for len(data) > 0 {
		writes, rest, ok := decodeJournalRecord(data)
		if !ok {
			break
		}
		out, data = append(out, writes...), rest
	}
	return out, nil
}

// ErrStoreDamaged: a FileStore's journal is damaged before its last record,
// so writes that were acknowledged cannot be recovered. The store refuses
// to open rather than lose them silently.
var ErrStoreDamaged = errors.New("enclave: store damaged")

// lastRecord reports whether b, which does not decode as a record, is the
// journal's last one: its length field, when readable, reaches the end of
// the file (a write the crash cut short, or whose sync never returned).
func lastRecord(b []byte) bool {
	if len(b) < 8 || string(b[:4]) != journalMagic {
		// Too short to name a length, or not a record's start: the torn
		// last record, unless another record follows.
		return !bytes.Contains(b[1:], []byte(journalMagic))
	}
	n := uint64(binary.BigEndian.Uint32(b[4:8]))
	return uint64(len(b)) <= 8+n+4
}

// appendJournalRecord appends the journal record of writes to b.
func appendJournalRecord(b []byte, writes []StoreWrite) []byte {
	b = append(b, journalMagic...)
	lenAt := len(b)
	b = binary.BigEndian.AppendUint32(b, 0)
	start := len(b)
	b = binary.BigEndian.AppendUint32(b, uint32(len(writes)))
	for _, w := range writes {
		b = binary.BigEndian.AppendUint32(b, uint32(len(w.Key)))
		b = append(b, w.Key...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(w.Blob)))
		b = append(b, w.Blob...)
	}
	binary.BigEndian.PutUint32(b[lenAt:], uint32(len(b)-start))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// decodeJournalRecord decodes the record at the start of b; ok is false
// for a truncated, damaged or malformed record.
func decodeJournalRecord(b []byte) (writes []StoreWrite, rest []byte, ok bool) {
	if len(b) < 8 || string(b[:4]) != journalMagic {
		return nil, nil, false
	}
	n := uint64(binary.BigEndian.Uint32(b[4:8]))
	if uint64(len(b)-8) < n+4 {
		return nil, nil, false
	}
	p := b[8 : 8+n]
	if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(b[8+n:]) {
		return nil, nil, false
	}
	rest = b[12+n:]
	field := func() ([]byte, bool) {
		if len(p) < 4 {
			return nil, false
		}
		l := uint64(binary.BigEndian.Uint32(p))
		if uint64(len(p)-4) < l {
			return nil, false
		}
		f := p[4 : 4+l]
		p = p[4+l:]
		return f, true
	}
	if len(p) < 4 {
		return nil, nil, false
	}
	count := binary.BigEndian.Uint32(p)
	p = p[4:]
	if uint64(count) > uint64(len(p))/8 {
		return nil, nil, false
	}
	writes = make([]StoreWrite, 0, count)
	for range count {
		k, ok1 := field()
		v, ok2 := field()
		if !ok1 || !ok2 {
			return nil, nil, false
		}
		writes = append(writes, StoreWrite{Key: string(k), Blob: v})
	}
	if len(p) != 0 {
		return nil, nil, false
	}
	return writes, rest, true
}

// Dir returns the store's directory.
func (s *FileStore) Dir() string { return s.dir }

func (s *FileStore) path(key string) (string, error) {
	if key == "" || len(key) > MaxStoreKey {
		return "", fmt.Errorf("enclave: store: key of %d bytes (need 1 to %d)", len(key), MaxStoreKey)
	}
	return filepath.Join(s.dir, hex.EncodeToString([]byte(key))+".blob"), nil
}

// Put implements Store (a batch of one).
func (s *FileStore) Put(ctx context.Context, key string, blob []byte) error {
	return s.PutBatch(ctx, []StoreWrite{{Key: key, Blob: blob}})
}

// PutBatch implements BatchStore: the batch is durable after one append to
// the journal and one sync of it (see FileStore).
func (s *FileStore) PutBatch(ctx context.Context, writes []StoreWrite) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	paths := make([]string, len(writes))
	for i, w := range writes {
		p, err := s.path(w.Key)
		if err != nil {
			return err
		}
		if len(w.Blob) > MaxBlobSize {
			return fmt.Errorf("enclave: store: blob of %d bytes exceeds %d", len(w.Blob), MaxBlobSize)
		}
		paths[i] = p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return s.broken
	}
	if err := s.appendJournal(writes); err != nil {
		return err
	}
	// Durable. Now visible: a later write of a key in the batch wins. The
	// caller may reuse the blobs' memory: keep copies.
	for i, w := range writes {
		s.pending[paths[i]] = bytes.Clone(w.Blob)
	}
	if s.size >= journalCheckpoint {
		return s.checkpoint()
	}
	return nil
}

// appendJournal appends writes to the journal and syncs it (under s.mu).
func (s *FileStore) appendJournal(writes []StoreWrite) error {
	if s.journal == nil {
		f, err := os.OpenFile(filepath.Join(s.dir, journalName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("enclave: store: journal: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("enclave: store: journal: %w", err)
		}
		if err := syncDir(s.dir); err != nil { // the journal's own entry
			f.Close()
			return fmt.Errorf("enclave: store: journal: %w", err)
		}
		s.journal, s.size = f, st.Size()
	}
	rec := appendJournalRecord(nil, writes)
	_, err := s.journal.Write(rec)
	if err == nil && s.beforeSync != nil {
		err = s.beforeSync()
	}
	if err == nil {
		err = s.journal.Sync()
	}
	if err != nil {
		// Not durable, so not acknowledged: take the record back. Should
		// that fail too, a later record could follow a torn one.
		if terr := s.journal.Truncate(s.size); terr != nil {
			return s.fail(fmt.Errorf("enclave: store: journal: %w (and undoing the record: %v)", err, terr))
		}
		return fmt.Errorf("enclave: store: journal: %w", err)
	}
	s.size += int64(len(rec))
	return nil
}

// checkpoint writes the blobs kept in memory to their files, syncs them and
// the directory, then empties the journal (under s.mu).
func (s *FileStore) checkpoint() error {
	errs := make(chan error, len(s.pending))
	var wg sync.WaitGroup
	sem := make(chan struct{}, checkpointWriters)
	for p, blob := range s.pending {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs <- writeSynced(p, blob)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return s.fail(fmt.Errorf("enclave: store: checkpoint: %w", err))
		}
	}
	if err := syncDir(s.dir); err != nil {
		return s.fail(fmt.Errorf("enclave: store: checkpoint: %w", err))
	}
	if err := s.journal.Truncate(0); err != nil {
		return s.fail(fmt.Errorf("enclave: store: checkpoint: %w", err))
	}
	if err := s.journal.Sync(); err != nil {
		return s.fail(fmt.Errorf("enclave: store: checkpoint: %w", err))
	}
	s.size = 0
	clear(s.pending)
	return nil
}

// fail makes err permanent (under s.mu).
func (s *FileStore) fail(err error) error {
	s.broken = fmt.Errorf("%w (the store refuses further use; reopen it to recover from its journal)", err)
	return err
}

// Close syncs what the journal holds into the blob files, empties the
// journal and closes it. The FileStore must not be used afterwards.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.journal == nil {
		return s.broken
	}
	err := s.broken
	if err == nil {
		err = s.checkpoint()
	}
	s.journal.Close()
	s.journal = nil
	s.broken = errors.New("enclave: store: closed")
	return err
}

// writeSynced writes data to a temporary file next to path, syncs it and
// renames it over path (the directory is synced by the caller).
func writeSynced(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// Get implements Store.
func (s *FileStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	p, err := s.path(key)
	if err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	broken := s.broken
	blob, ok := s.pending[p]
	s.mu.Unlock()
	if broken != nil {
		return nil, false, broken
	}
	if ok {
		return bytes.Clone(blob), true, nil
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("enclave: store: get: %w", err)
	}
	return b, true, nil
}
