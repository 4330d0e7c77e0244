package enclave

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// MaxStoreKey is the longest store key FileStore accepts, in bytes.
const MaxStoreKey = 1024

// MaxBlobSize is the largest blob FileStore accepts.
const MaxBlobSize = 64 << 20

// FileStore is a Store in a directory: one file per key, named by the hex
// of the key, written atomically (temporary file, fsync, rename), so a
// crash leaves either the old or the new blob.
type FileStore struct {
	dir string
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

// Put implements Store.
func (s *FileStore) Put(ctx context.Context, key string, blob []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if len(blob) > MaxBlobSize {
		return fmt.Errorf("enclave: store: blob of %d bytes exceeds %d", len(blob), MaxBlobSize)
	}
	if err := writeFileAtomic(p, blob, 0o600); err != nil {
		return fmt.Errorf("enclave: store: put: %w", err)
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
