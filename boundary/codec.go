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

// ---- the codec ----

// codec encodes the fields of a frame or decodes them: every frame type
// describes its payload once, in its fields method, and that description
// serves both directions. Encoding appends to b and never fails (nor
// writes to the message); decoding consumes b, checks every field, and
// keeps the first error.
type codec struct {
	enc bool
	b   []byte // encoding: the frame so far; decoding: the bytes left
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

// fail records why field did not decode (the first error only; nothing
// when encoding).
func (c *codec) fail(field string, err error) {
	if c.enc || c.err != nil {
		return
	}
	if c.at {
		field += "[" + strconv.Itoa(c.atIdx) + "]" + c.atSub
	}
	c.err = &DecodeError{Type: c.t, Field: field, Err: err, ID: c.id}
}

// take consumes the next n bytes (decoding only).
func (c *codec) take(field string, n int) []byte {
	if c.err != nil {
		return nil
	}
	if n > len(c.b) {
		c.fail(field, fmt.Errorf("%w: need %d bytes, %d left", ErrTruncated, n, len(c.b)))
		return nil
	}
	p := c.b[:n:n]
	c.b = c.b[n:]
	return p
}

// fixed is a fixed-size field: p itself is encoded, or decoded into.
func (c *codec) fixed(field string, p []byte) {
	if c.enc {
		c.b = append(c.b, p...)
	} else {
		copy(p, c.take(field, len(p)))
	}
}

func u8[T ~uint8](c *codec, field string, v *T) {
	if c.enc {
		c.b = append(c.b, byte(*v))
	} else if p := c.take(field, 1); p != nil {
		*v = T(p[0])
	}
}

func (c *codec) u16(field string, v *uint16) {
	if c.enc {
		c.b = binary.BigEndian.AppendUint16(c.b, *v)
	} else if p := c.take(field, 2); p != nil {
		*v = binary.BigEndian.Uint16(p)
	}
}

// u32 is a u32 field, or an i32 one in two's complement.
func u32[T ~uint32 | ~int32](c *codec, field string, v *T) {
	if c.enc {
		c.b = binary.BigEndian.AppendUint32(c.b, uint32(*v))
	} else if p := c.take(field, 4); p != nil {
		*v = T(binary.BigEndian.Uint32(p))
	}
}

func (c *codec) u64(field string, v *uint64) {
	if c.enc {
		c.b = binary.BigEndian.AppendUint64(c.b, *v)
	} else if p := c.take(field, 8); p != nil {
		*v = binary.BigEndian.Uint64(p)
	}
}

// id64 is a u64 that correlates the frame with a call (the ID a
// DecodeError carries).
func (c *codec) id64(field string, v *uint64) {
	c.u64(field, v)
	c.id = *v
}

// token is a correlation token that must not be zero.
func (c *codec) token(field string, v *uint64) {
	c.id64(field, v)
	if c.err == nil && *v == 0 {
		c.fail(field, fmt.Errorf("%w: zero token", ErrInvalidValue))
	}
}

// check fails field, holding v, unless ok (v is an allowed value).
func (c *codec) check(ok bool, field string, v any) {
	if !ok {
		c.fail(field, fmt.Errorf("%w: %d", ErrInvalidValue, v))
	}
}

func (c *codec) boolean(field string, v *bool) {
	var b uint8
	if *v {
		b = 1
	}
	u8(c, field, &b)
	if c.enc {
		return
	}
	if b > 1 {
		c.fail(field, fmt.Errorf("%w: boolean byte %d", ErrInvalidValue, b))
	}
	*v = b == 1
}

// duration is a duration in nanoseconds; a negative one is sent as 0, and
// refused when received.
func (c *codec) duration(field string, v *time.Duration) {
	u := uint64(max(*v, 0))
	c.u64(field, &u)
	if c.enc {
		return
	}
	if u > math.MaxInt64 {
		c.fail(field, fmt.Errorf("%w: negative duration", ErrInvalidValue))
		return
	}
	*v = time.Duration(u)
}

// length is the u32 length of what follows, when decoding checked against
// max and the bytes left.
func (c *codec) length(field string, n, max int) int {
	v := uint32(n)
	u32(c, field, &v)
	switch {
	case c.enc || c.err != nil:
	case uint64(v) > uint64(max):
		c.fail(field, fmt.Errorf("%w: length %d > %d", ErrTooLong, v, max))
	case uint64(v) > uint64(len(c.b)):
		c.fail(field, fmt.Errorf("%w: length %d, %d bytes left", ErrTruncated, v, len(c.b)))
	}
	if c.err != nil {
		return 0
	}
	return int(v)
}

// count is the u32 entry count of a list whose entries take at least size
// bytes each (when decoding, 0 after an error).
func (c *codec) count(field string, n, max, size int) int {
	n = c.length(field, n, max)
	// length only checked n bytes.
	if !c.enc && uint64(n)*uint64(size) > uint64(len(c.b)) {
		c.fail(field, fmt.Errorf("%w: %d entries cannot fit in %d bytes", ErrTruncated, n, len(c.b)))
		return 0
	}
	return n
}

// bytes is a bytes field; decoded, a sub-slice of the frame (nil when
// empty).
func (c *codec) bytes(field string, v *[]byte) {
	n := c.length(field, len(*v), math.MaxInt32)
	if c.enc {
		c.b = append(c.b, *v...)
	} else if n > 0 {
		*v = c.take(field, n)
	}
}

const (
	strUTF8 = 1 << iota
	strNonEmpty
)

// str is a string field of at most max bytes; flags say what else a
// decoded one must be.
func (c *codec) str(field string, v *string, max int, flags int) {
	n := c.length(field, len(*v), max)
	if c.enc {
		c.b = append(c.b, *v...)
		return
	}
	p := c.take(field, n)
	switch {
	case c.err != nil:
	case flags&strNonEmpty != 0 && n == 0:
		c.fail(field, ErrEmpty)
	case flags&strUTF8 != 0 && !utf8.Valid(p):
		c.fail(field, ErrInvalidUTF8)
	default:
		*v = string(p)
	}
}

// strAt is element i of a list field (sub names the part, e.g. ".key").
func (c *codec) strAt(field string, i int, sub string, v *string, max int, flags int) {
	c.at, c.atIdx, c.atSub = true, i, sub
	c.str(field, v, max, flags)
	c.at = false
}

func (c *codec) address(field string, v *string) {
	c.str(field, v, c.lim.MaxAddress, strUTF8|strNonEmpty)
}

func (c *codec) headers(field string, v *map[string]string) {
	n := c.count(field, len(*v), c.lim.MaxHeaders, 8)
	if c.enc {
		for k, val := range *v {
			c.str(field, &k, 0, 0)
			c.str(field, &val, 0, 0)
		}
		return
	}
	if n == 0 {
		return
	}
	h := make(map[string]string, n)
	for i := range n {
		var k, val string
		c.strAt(field, i, ".key", &k, c.lim.MaxString, strUTF8|strNonEmpty)
		c.strAt(field, i, ".value", &val, c.lim.MaxString, 0)
		if c.err != nil {
			return
		}
		if _, dup := h[k]; dup {
			c.fail(field+"["+strconv.Itoa(i)+"].key", fmt.Errorf("%w %q", ErrDuplicate, k))
			return
		}
		h[k] = val
	}
	*v = h
}

func (c *codec) strings(field string, v *[]string, maxLen int) {
	n := c.count(field, len(*v), c.lim.MaxList, 4)
	if !c.enc && n > 0 {
		*v = make([]string, n)
	}
	for i := range *v {
		c.strAt(field, i, "", &(*v)[i], maxLen, strUTF8|strNonEmpty)
		if c.err != nil {
			*v = nil
			return
		}
	}
}

// AppendFrame appends m as a complete frame (length prefix, type, payload)
// to dst.
func AppendFrame(dst []byte, m Message) []byte {
	return new(codec).appendFrame(dst, m)
}

// appendFrame is AppendFrame with c (a Sender's own, so that encoding
// allocates nothing).
func (c *codec) appendFrame(dst []byte, m Message) []byte {
	start := len(dst)
	*c = codec{enc: true, b: append(dst, 0, 0, 0, 0, byte(m.Type()))}
	m.fields(c)
	dst, c.b = c.b, nil
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// Decode decodes one frame body (the type byte and payload, without the
// length prefix) under lim. Byte-slice fields of the result alias b.
func Decode(b []byte, lim Limits) (Message, error) {
	return (&codec{lim: lim.WithDefaults()}).decode(b)
}

// decode is Decode under c's limits with c (a Reader's own, so that
// decoding allocates only the message).
func (c *codec) decode(b []byte) (Message, error) {
	if len(b) == 0 {
		return nil, &DecodeError{Field: "type", Err: ErrTruncated}
	}
	if len(b) > c.lim.MaxFrame {
		return nil, &DecodeError{Type: Type(b[0]), Err: fmt.Errorf("%w: %d bytes > %d", ErrFrameTooLarge, len(b), c.lim.MaxFrame)}
	}
	t := Type(b[0])
	m := newMessage(t)
	if m == nil {
		return nil, &DecodeError{Type: t, Field: "type", Err: fmt.Errorf("%w %d", ErrUnknownType, uint8(t))}
	}
	*c = codec{b: b[1:], t: t, lim: c.lim}
	m.fields(c)
	if len(c.b) != 0 {
		c.fail("", fmt.Errorf("%w: %d", ErrTrailingBytes, len(c.b)))
	}
	if c.err != nil {
		return nil, c.err
	}
	return m, nil
}
