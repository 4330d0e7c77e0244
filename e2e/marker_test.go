package e2e

import (
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
)

// needles returns what a marker looks like in every encoding checked: raw,
// hex (both cases), URL-escaped, and every base64 and base32 alphabet at
// every alignment the marker can have inside a longer encoded string (the
// characters that depend only on the marker's own bytes).
func needles(marker string) [][]byte {
	m := []byte(marker)
	out := [][]byte{m, []byte(hex.EncodeToString(m)), []byte(strings.ToUpper(hex.EncodeToString(m))),
		[]byte(url.QueryEscape(marker)), []byte(url.PathEscape(marker))}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for off := range 3 {
			s := enc.EncodeToString(append(make([]byte, off), m...))
			// Skip the characters that mix in the padding bytes before
			// and the unknown bytes after the marker.
			start := (off*8 + 5) / 6
			end := (off + len(m)) * 8 / 6
			out = append(out, []byte(s[start:end]))
		}
	}
	for _, enc := range []*base32.Encoding{base32.StdEncoding, base32.HexEncoding} {
		for off := range 5 {
			s := enc.EncodeToString(append(make([]byte, off), m...))
			start := (off*8 + 4) / 5
			end := (off + len(m)) * 8 / 5
			out = append(out, []byte(s[start:end]), bytes.ToLower([]byte(s[start:end])))
		}
	}
	return out
}

// findMarker returns the encoding in which data holds marker, or "".
func findMarker(data []byte, marker string) string {
	for i, n := range needles(marker) {
		if bytes.Contains(data, n) {
			return []string{"raw", "hex", "HEX", "query-escaped", "path-escaped"}[min(i, 4)] + " (needle " + string(n) + ")"
		}
	}
	return ""
}

func TestNeedlesFindEncodedMarkers(t *testing.T) {
	marker := newMarker()
	m := []byte(marker)
	for pre := range 6 {
		prefix := bytes.Repeat([]byte{0x5a}, pre)
		full := append(append(prefix, m...), 0x01, 0x02, 0x03)
		for name, enc := range map[string]string{
			"raw":       string(full),
			"hex":       hex.EncodeToString(full),
			"base64":    base64.StdEncoding.EncodeToString(full),
			"base64url": base64.RawURLEncoding.EncodeToString(full),
			"base32":    base32.StdEncoding.EncodeToString(full),
			"base32hex": strings.ToLower(base32.HexEncoding.EncodeToString(full)),
			"url":       url.QueryEscape(string(full)),
		} {
			if findMarker([]byte(enc), marker) == "" {
				t.Errorf("%s with %d bytes before: not found", name, pre)
			}
		}
	}
	if findMarker([]byte(newMarker()), marker) != "" {
		t.Error("another marker matched")
	}
}
