package secured

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cloister-dev/cloister/trusted"
)

// Replay windows in protected storage.
//
// A restarted enclave starts with empty replay windows, so without help it
// would accept, once more, every envelope of the current epochs its previous
// life had already handled. The runtime therefore keeps the windows of the
// secured addresses it consumes (not durable ones: their at-least-once
// redelivery after a crash is meant to be accepted again) in protected
// storage: saved every windowSaveInterval when something was opened, and on
// Shutdown; restored after the first join. Without freshness the host can
// drop or roll back what is stored, so this bounds replays to what came
// after the snapshot it keeps; rotating the epoch bounds them completely.
// With freshness, every checkpoint saves them instead (see the package
// doc), and a rolled-back copy is refused.

// windowSaveInterval is how often changed replay windows are saved.
const windowSaveInterval = time.Second

// windowKey is the protected-storage key of an address's replay windows,
// per instance (instances of one service may share the host's store).
func (k *keys) windowKey(address string) string {
	return "cloister/trusted/windows/v1/" + strconv.FormatUint(uint64(k.rt.Instance()), 10) + "/" + address
}

// persisted reports whether the windows of a are kept in storage.
func (a *granted) persisted() bool { return a.Secured && a.Consume && !a.Durable && a.opener != nil }

// restoreWindows merges the stored windows into the openers, and the
// stored record of handled handshakes. A rolled-back copy (with
// freshness) is an error: the instance must not start. Other failures are
// logged: the enclave then starts with empty windows.
func (k *keys) restoreWindows(ctx context.Context) error {
	k.mu.RLock()
	addrs := make([]*granted, 0, len(k.addresses))
	for _, a := range k.addresses {
		if a.persisted() {
			addrs = append(addrs, a)
		}
	}
	k.mu.RUnlock()
	restored := 0
	for _, a := range addrs {
		b, found, err := k.rt.Get(ctx, k.windowKey(a.Address))
		if errors.Is(err, trusted.ErrRolledBack) {
			return fmt.Errorf("secured: replay windows of %q: %w", a.Address, err)
		}
		if err != nil {
			k.log.Warn("replay windows not restored", "address", a.Address, "err", err.Error())
			continue
		}
		if !found {
			continue
		}
		if err := a.opener.RestoreState(b); err != nil {
			k.log.Warn("replay windows not restored", "address", a.Address, "err", err.Error())
			continue
		}
		restored++
	}
	if restored > 0 {
		k.log.Info("replay windows restored", "addresses", restored)
	}
	b, found, err := k.rt.Get(ctx, k.handshakeKey())
	switch {
	case errors.Is(err, trusted.ErrRolledBack):
		return fmt.Errorf("secured: record of handled handshakes: %w", err)
	case err != nil:
		k.log.Warn("handled handshakes not restored", "err", err.Error())
	case found:
		if err := k.hs.restore(b); err != nil {
			k.log.Warn("handled handshakes not restored", "err", err.Error())
		}
	}
	return nil
}

// saveWindows stores the windows of every address something was opened on
// since the last save, and the record of handled handshakes if it changed.
func (k *keys) saveWindows(ctx context.Context) error {
	k.mu.RLock()
	addrs := make([]*granted, 0, len(k.addresses))
	for _, a := range k.addresses {
		if a.persisted() && a.dirty.Load() {
			addrs = append(addrs, a)
		}
	}
	k.mu.RUnlock()
	for _, a := range addrs {
		a.dirty.Store(false)
		if err := k.rt.Put(ctx, k.windowKey(a.Address), a.opener.MarshalState()); err != nil {
			a.dirty.Store(true)
			return fmt.Errorf("secured: save replay windows of %q: %w", a.Address, err)
		}
	}
	if len(addrs) > 0 {
		k.log.Debug("replay windows saved", "addresses", len(addrs))
	}
	if b, changed := k.hs.marshal(time.Now()); changed {
		if err := k.rt.Put(ctx, k.handshakeKey(), b); err != nil {
			k.hs.mu.Lock()
			k.hs.dirty = true
			k.hs.mu.Unlock()
			return fmt.Errorf("secured: save handled handshakes: %w", err)
		}
	}
	return nil
}

// persistWindows saves changed windows every windowSaveInterval until ctx
// ends.
func (k *keys) persistWindows(ctx context.Context) {
	t := time.NewTicker(windowSaveInterval)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := k.saveWindows(ctx); err != nil && !warned && ctx.Err() == nil {
			warned = true
			k.log.Warn("replay windows not saved: a restarted enclave may accept envelopes it handled before", "err", err.Error())
		}
	}
}
