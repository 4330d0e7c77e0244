package node

import (
	"context"
	"sync/atomic"

	"github.com/cloister-dev/cloister/enclave"
)

// meteredStore counts the protected-storage operations of one enclave
// deployment (sealed blobs only; keys are never reported).
type meteredStore struct {
	enclave.BatchStore
	reads, writes, commits, failures atomic.Uint64
}

// Get implements enclave.Store.
func (s *meteredStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	s.reads.Add(1)
	b, ok, err := s.BatchStore.Get(ctx, key)
	if err != nil {
		s.failures.Add(1)
	}
	return b, ok, err
}

// Put implements enclave.Store.
func (s *meteredStore) Put(ctx context.Context, key string, blob []byte) error {
	return s.PutBatch(ctx, []enclave.StoreWrite{{Key: key, Blob: blob}})
}

// PutBatch implements enclave.BatchStore: one commit (one fsync) of many
// writes.
func (s *meteredStore) PutBatch(ctx context.Context, writes []enclave.StoreWrite) error {
	s.commits.Add(1)
	s.writes.Add(uint64(len(writes)))
	err := s.BatchStore.PutBatch(ctx, writes)
	if err != nil {
		s.failures.Add(1)
	}
	return err
}
