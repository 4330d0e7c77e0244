package boundary

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Limits bound what a decoder accepts. Zero fields take the defaults.
type Limits struct {
	// MaxFrame is the largest frame (type byte + payload) accepted and
	// announced in the handshake. Default DefaultMaxFrame.
	MaxFrame int
	// MaxAddress is the longest address in bytes. Default 1024.
	MaxAddress int
	// MaxString is the longest other string (header keys and values, failure
	// and log messages, store keys, evidence type). Default 64 KiB.
	MaxString int
	// MaxHeaders is the most header entries (or log attributes) per frame.
	// Default 256.
	MaxHeaders int
	// MaxList is the most entries in a string list (Ready addresses). Default
	// 4096.
	MaxList int
}

// Default limits.
const (
	DefaultMaxFrame   = 16 << 20
	DefaultMaxAddress = 1024
	DefaultMaxString  = 64 << 10
	DefaultMaxHeaders = 256
	DefaultMaxList    = 4096
	// MinMaxFrame is the smallest frame limit a handshake accepts.
	MinMaxFrame = 4 << 10
	// MaxMaxFrame is the largest frame limit a handshake accepts (1 GiB).
	MaxMaxFrame = 1 << 30
)

// WithDefaults returns l with zero fields set to their defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxFrame <= 0 {
		l.MaxFrame = DefaultMaxFrame
	}
	if l.MaxAddress <= 0 {
		l.MaxAddress = DefaultMaxAddress
	}
	if l.MaxString <= 0 {
		l.MaxString = DefaultMaxString
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	if l.MaxList <= 0 {
		l.MaxList = DefaultMaxList
	}
	return l
}

// ---- encoding ----

func appendU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendStr(b []byte, s string) []byte {
	b = appendU32(b, uint32(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, p []byte) []byte {
	b = appendU32(b, uint32(len(p)))
	return append(b, p...)
}

func appendDuration(b []byte, d time.Duration) []byte {
	if d < 0 {
		d = 0
	}
	return appendU64(b, uint64(d))
}

func appendHeaders(b []byte, h map[string]string) []byte {
	b = appendU32(b, uint32(len(h)))
	for k, v := range h {
		b = appendStr(b, k)
		b = appendStr(b, v)
	}
	return b
}

func appendStrings(b []byte, l []string) []byte {
	b = appendU32(b, uint32(len(l)))
	for _, s := range l {
		b = appendStr(b, s)
	}
	return b
}

// ---- decoding ----

type decoder struct {
	b   []byte
	t   Type
	lim Limits
	err *DecodeError
	id  uint64 // correlation ID decoded so far

	// While at is set, field names in errors are field[atIdx]atSub; built
	// only on error, so that decoding allocates no names.
	at    bool
	atIdx int
	atSub string
}

// strAt decodes element i of a list field (sub names the part, e.g. ".key").
func (d *decoder) strAt(field string, i int, sub string, max int, flags int) string {
	d.at, d.atIdx, d.atSub = true, i, sub
	v := d.str(field, max, flags)
	d.at = false
	return v
}

func (d *decoder) fail(field string, err error) {
	if d.at {
		field += "[" + strconv.Itoa(d.atIdx) + "]" + d.atSub
	}
	if d.err == nil {
		d.err = &DecodeError{Type: d.t, Field: field, Err: err, ID: d.id}
	}
}

func (d *decoder) take(field string, n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.fail(field, fmt.Errorf("%w: need %d bytes, %d left", ErrTruncated, n, len(d.b)))
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

// id64 decodes a u64 that correlates the frame with a call (the ID a
// DecodeError carries).
func (d *decoder) id64(field string) uint64 {
	d.id = d.u64(field)
	return d.id
}

// token decodes a correlation token that must not be zero.
func (d *decoder) token(field string) uint64 {
	v := d.id64(field)
	if d.err == nil && v == 0 {
		d.fail(field, fmt.Errorf("%w: zero token", ErrInvalidValue))
	}
	return v
}

func (d *decoder) u8(field string) uint8 {
	p := d.take(field, 1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *decoder) u16(field string) uint16 {
	p := d.take(field, 2)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func (d *decoder) u32(field string) uint32 {
	p := d.take(field, 4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (d *decoder) u64(field string) uint64 {
	p := d.take(field, 8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (d *decoder) boolean(field string) bool {
	v := d.u8(field)
	if v > 1 {
		d.fail(field, fmt.Errorf("%w: boolean byte %d", ErrInvalidValue, v))
	}
	return v == 1
}

func (d *decoder) duration(field string) time.Duration {
	v := d.u64(field)
	if v > math.MaxInt64 {
		d.fail(field, fmt.Errorf("%w: negative duration", ErrInvalidValue))
		return 0
	}
	return time.Duration(v)
}

// length reads a u32 length and checks it against max and the bytes left.
func (d *decoder) length(field string, max int) int {
	n := d.u32(field)
	if d.err != nil {
		return 0
	}
	if uint64(n) > uint64(max) {
		d.fail(field, fmt.Errorf("%w: length %d > %d", ErrTooLong, n, max))
		return 0
	}
	if uint64(n) > uint64(len(d.b)) {
		d.fail(field, fmt.Errorf("%w: length %d, %d bytes left", ErrTruncated, n, len(d.b)))
		return 0
	}
	return int(n)
}

// bytes returns a sub-slice of the frame (nil when empty).
func (d *decoder) bytes(field string) []byte {
	n := d.length(field, math.MaxInt32)
	if n == 0 {
		return nil
	}
	return d.take(field, n)
}

const (
	strUTF8 = 1 << iota
	strNonEmpty
)

func (d *decoder) str(field string, max int, flags int) string {
	n := d.length(field, max)
	if d.err != nil {
		return ""
	}
	p := d.take(field, n)
	if flags&strNonEmpty != 0 && n == 0 {
		d.fail(field, ErrEmpty)
		return ""
	}
	if flags&strUTF8 != 0 && !utf8.Valid(p) {
		d.fail(field, ErrInvalidUTF8)
		return ""
	}
	return string(p)
}

func (d *decoder) address(field string) string {
	return d.str(field, d.lim.MaxAddress, strUTF8|strNonEmpty)
}

func (d *decoder) headers(field string) map[string]string {
	n := d.length(field, d.lim.MaxHeaders)
	if d.err != nil || n == 0 {
		return nil
	}
	// Each entry needs at least 8 bytes; length() only checked n bytes.
	if uint64(n)*8 > uint64(len(d.b)) {
		d.fail(field, fmt.Errorf("%w: %d entries cannot fit in %d bytes", ErrTruncated, n, len(d.b)))
		return nil
	}
	h := make(map[string]string, n)
	for i := range n {
		k := d.strAt(field, i, ".key", d.lim.MaxString, strUTF8|strNonEmpty)
		v := d.strAt(field, i, ".value", d.lim.MaxString, 0)
		if d.err != nil {
			return nil
		}
		if _, dup := h[k]; dup {
			d.fail(field+"["+strconv.Itoa(i)+"].key", fmt.Errorf("%w %q", ErrDuplicate, k))
			return nil
		}
		h[k] = v
	}
	return h
}

func (d *decoder) strings(field string, maxLen int) []string {
	n := d.length(field, d.lim.MaxList)
	if d.err != nil || n == 0 {
		return nil
	}
	if uint64(n)*4 > uint64(len(d.b)) {
		d.fail(field, fmt.Errorf("%w: %d entries cannot fit in %d bytes", ErrTruncated, n, len(d.b)))
		return nil
	}
	l := make([]string, n)
	for i := range l {
		l[i] = d.strAt(field, i, "", maxLen, strUTF8|strNonEmpty)
		if d.err != nil {
			return nil
		}
	}
	return l
}

// AppendFrame appends m as a complete frame (length prefix, type, payload)
// to dst.
func AppendFrame(dst []byte, m Message) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, byte(m.Type()))
	dst = m.appendPayload(dst)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// Decode decodes one frame body (the type byte and payload, without the
// length prefix) under lim. Byte-slice fields of the result alias b.
func Decode(b []byte, lim Limits) (Message, error) {
	lim = lim.WithDefaults()
	return decode(b, &lim)
}

func decode(b []byte, lim *Limits) (Message, error) {
	if len(b) == 0 {
		return nil, &DecodeError{Field: "type", Err: ErrTruncated}
	}
	if len(b) > lim.MaxFrame {
		return nil, &DecodeError{Type: Type(b[0]), Err: fmt.Errorf("%w: %d bytes > %d", ErrFrameTooLarge, len(b), lim.MaxFrame)}
	}
	t := Type(b[0])
	m := newMessage(t)
	if m == nil {
		return nil, &DecodeError{Type: t, Field: "type", Err: fmt.Errorf("%w %d", ErrUnknownType, uint8(t))}
	}
	d := decoder{b: b[1:], t: t, lim: *lim}
	decodeInto(m, &d)
	if d.err == nil && len(d.b) != 0 {
		d.fail("", fmt.Errorf("%w: %d", ErrTrailingBytes, len(d.b)))
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

// decodeInto calls m's decodePayload through concrete types, so that the
// decoder does not escape to the heap.
func decodeInto(m Message, d *decoder) {
	switch m := m.(type) {
	case *Init:
		m.decodePayload(d)
	case *Deliver:
		m.decodePayload(d)
	case *RequestResult:
		m.decodePayload(d)
	case *StoreResult:
		m.decodePayload(d)
	case *EvidenceResult:
		m.decodePayload(d)
	case *Health:
		m.decodePayload(d)
	case *Shutdown:
		m.decodePayload(d)
	case *Ready:
		m.decodePayload(d)
	case *Reply:
		m.decodePayload(d)
	case *Done:
		m.decodePayload(d)
	case *Fail:
		m.decodePayload(d)
	case *Send:
		m.decodePayload(d)
	case *Publish:
		m.decodePayload(d)
	case *Request:
		m.decodePayload(d)
	case *Log:
		m.decodePayload(d)
	case *StorePut:
		m.decodePayload(d)
	case *StoreGet:
		m.decodePayload(d)
	case *GetEvidence:
		m.decodePayload(d)
	case *HealthStatus:
		m.decodePayload(d)
	case *Stopped:
		m.decodePayload(d)
	case *Fatal:
		m.decodePayload(d)
	default:
		panic("boundary: decodeInto: unhandled " + m.Type().String())
	}
}
