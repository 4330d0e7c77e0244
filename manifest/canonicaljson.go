package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxDepth bounds the nesting ParseCanonical follows; the canonical form
// nests five deep.
const maxDepth = 16

// ParseCanonical decodes and validates a manifest in its canonical JSON
// form ([Manifest.Canonical]) and nothing else: the bytes must be exactly
// the canonical encoding of the manifest they describe, so the hash pinned
// over them is the hash of what was decoded. It is how enclave images (the
// coordinator) take a manifest without linking a YAML parser; the host
// parses the owner's YAML (package manifestyaml) and hands over the
// canonical form. Errors join [*FieldError]s, as Decode's do.
func ParseCanonical(data []byte) (*Manifest, error) {
	if len(data) > MaxSize {
		return nil, Fail(0, 0, "%d bytes, more than the %d allowed", len(data), MaxSize)
	}
	j := &jsonTree{data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	j.dec.UseNumber()
	root, err := j.node(0)
	if err == nil {
		if _, terr := j.dec.Token(); !errors.Is(terr, io.EOF) {
			err = j.fail("more than one JSON value")
		}
	}
	if err != nil {
		return nil, err
	}
	m, err := Decode(root)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(m.Canonical(), data) {
		return nil, Fail(1, 1, "not in canonical form (want Manifest.Canonical's encoding: sorted keys, every field, no spaces)")
	}
	return m, nil
}

// jsonTree builds a parse tree from JSON tokens.
type jsonTree struct {
	data []byte
	dec  *json.Decoder
}

// pos returns the line and column of the next token.
func (j *jsonTree) pos() (int, int) {
	off := int(j.dec.InputOffset())
	for off < len(j.data) && strings.IndexByte(" \t\r\n,:", j.data[off]) >= 0 {
		off++
	}
	line := 1 + bytes.Count(j.data[:off], []byte("\n"))
	return line, off - bytes.LastIndexByte(j.data[:off], '\n')
}

func (j *jsonTree) fail(format string, a ...any) error {
	line, col := j.pos()
	return Fail(line, col, format, a...)
}

// node reads one JSON value as a Node.
func (j *jsonTree) node(depth int) (*Node, error) {
	if depth > maxDepth {
		return nil, j.fail("nested more than %d deep", maxDepth)
	}
	line, col := j.pos()
	tok, err := j.dec.Token()
	if errors.Is(err, io.EOF) {
		return nil, Fail(line, col, "empty manifest")
	}
	if err != nil {
		return nil, Fail(line, col, "not valid JSON: %v", err)
	}
	n := &Node{Kind: ScalarNode, Line: line, Column: col}
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '{':
			n.Kind = MappingNode
		case '[':
			n.Kind = SequenceNode
		default:
			return nil, Fail(line, col, "not valid JSON: unexpected %q", rune(v))
		}
		for j.dec.More() {
			if n.Kind == MappingNode {
				kl, kc := j.pos()
				key, err := j.dec.Token()
				if err != nil {
					return nil, Fail(kl, kc, "not valid JSON: %v", err)
				}
				n.Content = append(n.Content, &Node{Kind: ScalarNode, Tag: "!!str", Value: key.(string), Line: kl, Column: kc})
			}
			e, err := j.node(depth + 1)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, e)
		}
		if _, err := j.dec.Token(); err != nil { // the closing delimiter
			return nil, j.fail("not valid JSON: %v", err)
		}
	case string:
		n.Tag, n.Value = "!!str", v
	case json.Number:
		n.Tag, n.Value = "!!int", v.String()
		if strings.ContainsAny(n.Value, ".eE") {
			n.Tag = "!!float"
		}
	case bool:
		n.Tag, n.Value = "!!bool", fmt.Sprint(v)
	case nil:
		n.Tag, n.Value = "!!null", "null"
	}
	return n, nil
}
