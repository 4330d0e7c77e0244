package manifest

// Node is one node of a manifest source's parse tree, as a front-end hands
// it to Decode: the YAML source's (package manifestyaml) or the canonical
// JSON form's (ParseCanonical). It mirrors a YAML node, the richer of the
// two.
type Node struct {
	Kind NodeKind
	// Tag is a scalar's resolved type: "!!str", "!!int", "!!float",
	// "!!bool" or "!!null".
	Tag string
	// Value is a scalar's text.
	Value string
	// Content holds a mapping's keys and values, alternating, or a list's
	// entries.
	Content []*Node
	// Line and Column locate the node in its source (1-based; 0 unknown).
	Line, Column int
}

// NodeKind is the kind of a Node.
type NodeKind uint8

// Node kinds.
const (
	ScalarNode NodeKind = iota + 1
	MappingNode
	SequenceNode
	// AliasNode is a YAML alias, which a manifest may not use.
	AliasNode
)
