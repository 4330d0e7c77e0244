package bus

import (
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/cloister-dev/cloister/wire"
)

// Codec turns Go values into bodies and back. Codecs are registered on a
// bus by name with [WithCodec] and chosen per message with [CodecName].
type Codec interface {
	// Name is carried in the HeaderCodec header; it must be unique per bus.
	Name() string
	Encode(v any) ([]byte, error)
	Decode(data []byte, v any) error
}

// Names of the built-in codecs.
const (
	CodecBytes  = wire.CodecBytes  // []byte, passed through; the default for []byte
	CodecString = wire.CodecString // string; the default for string
	CodecJSON   = wire.CodecJSON   // encoding/json; the default for other values
)

type bytesCodec struct{}

func (bytesCodec) Name() string { return CodecBytes }
func (bytesCodec) Encode(v any) ([]byte, error) {
	switch b := v.(type) {
	case []byte:
		return b, nil
	case string:
		return []byte(b), nil
	case nil:
		return nil, nil
	}
	return nil, fmt.Errorf("bytes codec cannot encode %T", v)
}
func (bytesCodec) Decode(data []byte, v any) error { return decodeRaw(data, v, CodecBytes) }

type stringCodec struct{}

func (stringCodec) Name() string                    { return CodecString }
func (stringCodec) Encode(v any) ([]byte, error)    { return bytesCodec{}.Encode(v) }
func (stringCodec) Decode(data []byte, v any) error { return decodeRaw(data, v, CodecString) }

func decodeRaw(data []byte, v any, name string) error {
	switch p := v.(type) {
	case *[]byte:
		*p = append((*p)[:0], data...)
	case *string:
		*p = string(data)
	default:
		return fmt.Errorf("%s codec decodes into *[]byte or *string, not %T", name, v)
	}
	return nil
}

type jsonCodec struct{}

func (jsonCodec) Name() string                 { return CodecJSON }
func (jsonCodec) Encode(v any) ([]byte, error) { return json.Marshal(v) }
func (jsonCodec) Decode(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("json codec: %w", err)
	}
	return nil
}

// codecs is an immutable set of codecs, built when the bus is created.
type codecs map[string]Codec

func newCodecs(extra []Codec) (codecs, error) {
	c := codecs{CodecBytes: bytesCodec{}, CodecString: stringCodec{}, CodecJSON: jsonCodec{}}
	for _, x := range extra {
		if x == nil || x.Name() == "" {
			return nil, fmt.Errorf("bus: codec without a name")
		}
		if _, dup := c[x.Name()]; dup {
			return nil, fmt.Errorf("bus: codec %q registered twice", x.Name())
		}
		c[x.Name()] = x
	}
	return c, nil
}

// encode turns body into bytes, returning the codec name to put in the
// header ("" for raw bytes).
func (c codecs) encode(body any, name string) ([]byte, string, error) {
	if name == "" {
		switch b := body.(type) {
		case []byte:
			return b, "", nil
		case string:
			return []byte(b), CodecString, nil
		case nil:
			return nil, "", nil
		}
		name = CodecJSON
	}
	codec, ok := c[name]
	if !ok {
		return nil, "", fmt.Errorf("unknown codec %q", name)
	}
	data, err := codec.Encode(body)
	if err != nil {
		return nil, "", fmt.Errorf("codec %q cannot encode %s: %w", name, typeName(body), err)
	}
	if name == CodecBytes {
		name = ""
	}
	return data, name, nil
}

func (c codecs) decode(data []byte, name string, v any) error {
	if name == "" {
		name = CodecBytes
		// Raw bytes decode into JSON values too when asked (a body sent
		// as bytes by a non-Go client).
		switch v.(type) {
		case *[]byte, *string:
		default:
			name = CodecJSON
		}
	}
	codec, ok := c[name]
	if !ok {
		return fmt.Errorf("unknown codec %q", name)
	}
	return codec.Decode(data, v)
}

func typeName(v any) string {
	if v == nil {
		return "nil"
	}
	return reflect.TypeOf(v).String()
}
