package fresh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cloister-dev/cloister/trusted"
)

// ErrBadIndex is wrapped when a sealed index does not decode.
var ErrBadIndex = errors.New("fresh: malformed state index")

// index is what an instance seals at a checkpoint and registers the
// SHA-256 of (its encoding) with the coordinator group.
type index struct {
	subject string // provision.ServiceSubject(service, instance)
	group   []byte // the coordinator group it registered with
	counter uint64 // the version registered with it
	gen     uint64 // the incarnation that wrote it
	salt    [16]byte
	entries map[string]trusted.Version // every key written: its current blob's version
}

const indexMagic = "cloister/fresh/index/v1\n"

// Bounds of an index's fields.
const (
	maxSubject = 256
	maxGroup   = 64
	maxKey     = 1 << 16
)

// encode is the index's byte form: magic, subject, group (each length-
// prefixed), counter, gen, salt, then the entries sorted by key (length-
// prefixed key, Gen, Seq), all big-endian.
func (x *index) encode() []byte {
	keys := make([]string, 0, len(x.entries))
	size := len(indexMagic) + 2 + len(x.subject) + 1 + len(x.group) + 16 + 16 + 4
	for k := range x.entries {
		keys = append(keys, k)
		size += 4 + len(k) + 16
	}
	slices.Sort(keys)
	b := make([]byte, 0, size)
	b = append(b, indexMagic...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(x.subject)))
	b = append(b, x.subject...)
	b = append(b, byte(len(x.group)))
	b = append(b, x.group...)
	b = binary.BigEndian.AppendUint64(b, x.counter)
	b = binary.BigEndian.AppendUint64(b, x.gen)
	b = append(b, x.salt[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		v := x.entries[k]
		b = binary.BigEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint64(b, v.Gen)
		b = binary.BigEndian.AppendUint64(b, v.Seq)
	}
	return b
}

// decodeIndex parses an encoded index strictly: every field in bounds,
// keys sorted without duplicates, nothing after the last entry.
func decodeIndex(b []byte) (*index, error) {
	r := reader{b: b}
	if !bytes.HasPrefix(b, []byte(indexMagic)) {
		return nil, fmt.Errorf("%w: not a version 1 index", ErrBadIndex)
	}
	r.b = b[len(indexMagic):]
	x := &index{entries: map[string]trusted.Version{}}
	x.subject = string(r.bytes(int(r.uint(2)), maxSubject, "subject"))
	x.group = bytes.Clone(r.bytes(int(r.uint(1)), maxGroup, "group"))
	x.counter, x.gen = r.uint(8), r.uint(8)
	copy(x.salt[:], r.bytes(16, 16, "salt"))
	n := r.uint(4)
	last := ""
	for i := uint64(0); i < n && r.err == nil; i++ {
		k := string(r.bytes(int(r.uint(4)), maxKey, "key"))
		v := trusted.Version{Gen: r.uint(8), Seq: r.uint(8)}
		if r.err == nil && i > 0 && k <= last {
			r.err = fmt.Errorf("%w: entry %d not sorted after the one before", ErrBadIndex, i)
		}
		x.entries[k], last = v, k
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%w: %d bytes after the last entry", ErrBadIndex, len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	return x, nil
}

// reader reads big-endian fields, remembering the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uint(n int) uint64 {
	if r.err != nil || len(r.b) < n {
		if r.err == nil {
			r.err = fmt.Errorf("%w: truncated", ErrBadIndex)
		}
		return 0
	}
	var v uint64
	for _, c := range r.b[:n] {
		v = v<<8 | uint64(c)
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n, limit int, field string) []byte {
	switch {
	case r.err != nil:
		return nil
	case n > limit:
		r.err = fmt.Errorf("%w: %s of %d bytes, at most %d", ErrBadIndex, field, n, limit)
		return nil
	case len(r.b) < n:
		r.err = fmt.Errorf("%w: truncated in the %s", ErrBadIndex, field)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
