package enclave

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
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

// batchSyncs is how many blobs of one batch FileStore writes and syncs at
// once.
const batchSyncs = 16

// MaxBlobSize is the largest blob FileStore accepts.
const MaxBlobSize = 64 << 20

// FileStore is a Store in a directory: one file per key, named by the hex
// of the key, written atomically (temporary file, fsync, rename), so a
// crash leaves either the old or the new blob.
type FileStore struct {
	dir string
	// beforeDirSync, if set (tests), runs in PutBatch after the blobs were
	// written, synced and renamed and before the directory is synced; an
	// error stops the batch there, as a crash would.
	beforeDirSync func() error
}

// NewFileStore returns a FileStore in dir, creating it (mode 0700).
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
	return &FileStore{dir: abs}, nil
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

// PutBatch implements BatchStore: every blob goes to a temporary file that
// is synced, then all are renamed into place and the directory is synced
// once, so a batch costs one sync per blob written plus one, and a crash
// leaves each key with its old or its new blob.
func (s *FileStore) PutBatch(ctx context.Context, writes []StoreWrite) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	last := make(map[string]int, len(writes))
	for i, w := range writes {
		last[w.Key] = i
	}
	type staged struct {
		tmp, path string
		blob      []byte
	}
	var done []staged
	defer func() {
		for _, st := range done {
			if st.tmp != "" {
				os.Remove(st.tmp)
			}
		}
	}()
	for i, w := range writes {
		if last[w.Key] != i {
			continue // replaced later in the same batch
		}
		p, err := s.path(w.Key)
		if err != nil {
			return err
		}
		if len(w.Blob) > MaxBlobSize {
			return fmt.Errorf("enclave: store: blob of %d bytes exceeds %d", len(w.Blob), MaxBlobSize)
		}
		done = append(done, staged{path: p, blob: w.Blob})
	}
	// The temporary files are written and synced in parallel, so that the
	// file system commits their syncs together.
	errs := make([]error, len(done))
	var wg sync.WaitGroup
	sem := make(chan struct{}, batchSyncs)
	for i := range done {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			done[i].tmp, errs[i] = writeTemp(done[i].path, done[i].blob, 0o600)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("enclave: store: put: %w", err)
	}
	for i := range done {
		if err := os.Rename(done[i].tmp, done[i].path); err != nil {
			return fmt.Errorf("enclave: store: put: %w", err)
		}
		done[i].tmp = ""
	}
	if s.beforeDirSync != nil {
		if err := s.beforeDirSync(); err != nil {
			return fmt.Errorf("enclave: store: put: %w", err)
		}
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("enclave: store: sync %s: %w", s.dir, err)
	}
	return nil
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
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("enclave: store: get: %w", err)
	}
	return b, true, nil
}
