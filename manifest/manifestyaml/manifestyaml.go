// Package manifestyaml parses the manifest an application's owner writes,
// in YAML (or JSON, a subset), into a manifest.Manifest, reporting every
// error with its field and line. It is the host's side: the enclave images
// that take manifests (the coordinator) accept only their canonical JSON
// form (manifest.ParseCanonical) and never link this package or its YAML
// parser. Hand them Manifest.Canonical, whose hash is the one clients pin.
package manifestyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cloister-dev/cloister/manifest"
	"go.yaml.in/yaml/v3"
)

// Parse decodes and validates a manifest (YAML or JSON). On failure the
// error joins every [*manifest.FieldError] found (see manifest.FieldErrors).
func Parse(data []byte) (*manifest.Manifest, error) {
	if len(data) > manifest.MaxSize {
		return nil, manifest.Fail(0, 0, "%d bytes, more than the %d allowed", len(data), manifest.MaxSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, manifest.Fail(0, 0, "empty manifest")
		}
		return nil, manifest.Fail(0, 0, "not valid YAML: %v", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, manifest.Fail(extra.Line, extra.Column, "more than one YAML document")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, manifest.Fail(doc.Line, doc.Column, "empty manifest")
	}
	return manifest.Decode(tree(doc.Content[0]))
}

// ParseFile reads and parses the manifest at path.
func ParseFile(path string) (*manifest.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, manifest.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: %s: %w", path, err)
	}
	return Parse(b)
}

var kinds = map[yaml.Kind]manifest.NodeKind{
	yaml.ScalarNode: manifest.ScalarNode, yaml.MappingNode: manifest.MappingNode,
	yaml.SequenceNode: manifest.SequenceNode, yaml.AliasNode: manifest.AliasNode,
}

// tree converts a YAML node (and what it holds) to the manifest's tree.
func tree(n *yaml.Node) *manifest.Node {
	t := &manifest.Node{Kind: kinds[n.Kind], Value: n.Value, Line: n.Line, Column: n.Column}
	if n.Kind == yaml.ScalarNode {
		t.Tag = n.ShortTag()
	}
	if n.Kind != yaml.AliasNode {
		for _, c := range n.Content {
			t.Content = append(t.Content, tree(c))
		}
	}
	return t
}
