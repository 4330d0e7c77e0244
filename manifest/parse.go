package manifest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/wire"
)

// Decode validates a manifest's parse tree (from a front-end: the YAML
// source's, package manifestyaml, or the canonical JSON form's,
// ParseCanonical) and builds the manifest. On failure the error joins every
// [*FieldError] found (see [FieldErrors]), with the node's line and column.
func Decode(root *Node) (*Manifest, error) {
	p := &parser{}
	m := p.root(root)
	return m, p.err()
}

// Fail returns the error of a source that has no tree to decode (too
// large, not parsable): one [*FieldError] at line and column (0 when
// unknown), joined as Decode's are.
func Fail(line, column int, format string, a ...any) error {
	p := &parser{}
	p.errorf("", &Node{Line: line, Column: column}, format, a...)
	return p.err()
}

// err returns the field errors found, sorted by position, joined.
func (p *parser) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(p.errs, func(a, b *FieldError) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		errs[i] = e
	}
	return joinErrors(errs)
}

// joinedErrors is errors.Join with one error per line and no prefix.
type joinedErrors struct{ errs []error }

func joinErrors(errs []error) error { return &joinedErrors{errs: errs} }

// Error returns one error per line.
func (j *joinedErrors) Error() string {
	var b strings.Builder
	for i, e := range j.errs {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the errors, for errors.Is and errors.As.
func (j *joinedErrors) Unwrap() []error { return j.errs }

type parser struct {
	errs []*FieldError
}

func (p *parser) errorf(path string, n *Node, format string, a ...any) {
	e := &FieldError{Path: path, Msg: fmt.Sprintf(format, a...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func kindName(n *Node) string {
	switch n.Kind {
	case MappingNode:
		return "a mapping"
	case SequenceNode:
		return "a list"
	case AliasNode:
		return "an alias"
	case ScalarNode:
		switch n.Tag {
		case "!!null":
			return "null"
		case "!!bool":
			return "a boolean"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		}
		return "a string"
	}
	return "something else"
}

// pair is one key and value of a mapping.
type pair struct {
	key   string
	kNode *Node
	value *Node
}

// mapping returns n's entries, checking it is a mapping with unique string
// keys.
func (p *parser) mapping(path string, n *Node) ([]pair, bool) {
	if n.Kind != MappingNode {
		p.errorf(path, n, "want a mapping, got %s", kindName(n))
		return nil, false
	}
	var out []pair
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != ScalarNode || k.Tag == "!!null" {
			p.errorf(path, k, "keys must be strings, got %s", kindName(k))
			continue
		}
		if seen[k.Value] {
			p.errorf(join(path, k.Value), k, "duplicate key")
			continue
		}
		seen[k.Value] = true
		if v.Kind == AliasNode {
			p.errorf(join(path, k.Value), v, "aliases are not allowed")
			continue
		}
		out = append(out, pair{key: k.Value, kNode: k, value: v})
	}
	return out, true
}

// fields dispatches a mapping's entries to handlers by key; unknown keys are
// errors. It returns the keys present.
func (p *parser) fields(path string, n *Node, handlers map[string]func(path string, v *Node)) map[string]*Node {
	pairs, ok := p.mapping(path, n)
	if !ok {
		return nil
	}
	present := map[string]*Node{}
	for _, kv := range pairs {
		h, ok := handlers[kv.key]
		if !ok {
			known := make([]string, 0, len(handlers))
			for k := range handlers {
				known = append(known, k)
			}
			slices.Sort(known)
			p.errorf(join(path, kv.key), kv.kNode, "unknown field (known: %s)", strings.Join(known, ", "))
			continue
		}
		present[kv.key] = kv.value
		h(join(path, kv.key), kv.value)
	}
	return present
}

func (p *parser) list(path string, n *Node) ([]*Node, bool) {
	if n.Kind != SequenceNode {
		p.errorf(path, n, "want a list, got %s", kindName(n))
		return nil, false
	}
	for i, e := range n.Content {
		if e.Kind == AliasNode {
			p.errorf(fmt.Sprintf("%s[%d]", path, i), e, "aliases are not allowed")
			return nil, false
		}
	}
	return n.Content, true
}

func (p *parser) boolean(path string, n *Node) bool {
	if n.Kind != ScalarNode || n.Tag != "!!bool" {
		p.errorf(path, n, "want true or false, got %s", kindName(n))
		return false
	}
	v, err := strconv.ParseBool(strings.ToLower(n.Value))
	if err != nil {
		p.errorf(path, n, "want true or false, got %q", n.Value)
	}
	return v
}

func (p *parser) uint(path string, n *Node, lo, hi uint64) (uint64, bool) {
	if n.Kind != ScalarNode || n.Tag != "!!int" {
		p.errorf(path, n, "want an integer, got %s", kindName(n))
		return 0, false
	}
	v, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
	if err != nil || v < lo || v > hi {
		if hi == math.MaxUint64 {
			p.errorf(path, n, "want an integer ≥ %d, got %s", lo, n.Value)
		} else {
			p.errorf(path, n, "want an integer from %d to %d, got %s", lo, hi, n.Value)
		}
		return 0, false
	}
	return v, true
}

func (p *parser) str(path string, n *Node) (string, bool) {
	if n.Kind != ScalarNode || n.Tag != "!!str" {
		p.errorf(path, n, "want a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) hex32(path string, n *Node) *[32]byte {
	s, ok := p.str(path, n)
	if !ok {
		return nil
	}
	if len(s) != 64 {
		p.errorf(path, n, "want 64 hex digits, got %d characters", len(s))
		return nil
	}
	var out [32]byte
	if _, err := hex.Decode(out[:], []byte(s)); err != nil {
		p.errorf(path, n, "want 64 hex digits: %v", err)
		return nil
	}
	return &out
}

func (p *parser) root(root *Node) *Manifest {
	if root == nil {
		p.errorf("", nil, "empty manifest")
		return nil
	}
	m := &Manifest{
		Services:  map[string]*Service{},
		Addresses: map[string]*Address{},
		Policy:    Policy{AcceptedTCB: []attest.TCBStatus{attest.TCBUpToDate}},
	}
	// Addresses refer to services: parse them after everything else.
	var addresses *Node
	present := p.fields("", root, map[string]func(string, *Node){
		"version": func(path string, v *Node) {
			m.Version, _ = p.uint(path, v, 1, math.MaxUint64)
		},
		"services":  func(path string, v *Node) { p.services(path, v, m) },
		"policy":    func(path string, v *Node) { p.policy(path, v, m) },
		"owner":     func(path string, v *Node) { p.owner(path, v, m) },
		"clients":   func(path string, v *Node) { p.clients(path, v, m) },
		"freshness": func(path string, v *Node) { p.freshness(path, v, m) },
		"addresses": func(path string, v *Node) { addresses = v },
	})
	if present == nil {
		return nil
	}
	if _, ok := present["version"]; !ok {
		p.errorf("version", root, "missing (want an integer ≥ 1)")
	}
	if _, ok := present["services"]; !ok {
		p.errorf("services", root, "missing")
	}
	if addresses != nil {
		p.addresses("addresses", addresses, m)
	}
	return m
}

func validName(s string, extra string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		case strings.IndexByte(extra, c) >= 0:
		default:
			return false
		}
	}
	return true
}

func (p *parser) services(path string, n *Node, m *Manifest) {
	pairs, ok := p.mapping(path, n)
	if !ok {
		return
	}
	if len(pairs) == 0 {
		p.errorf(path, n, "no services")
	}
	for _, kv := range pairs {
		sp := join(path, kv.key)
		if !validName(kv.key, "") {
			p.errorf(sp, kv.kNode, "service names are 1 to %d characters of A-Z a-z 0-9 - _", MaxNameLen)
			continue
		}
		s := &Service{Name: kv.key, Secrets: map[string]Secret{}}
		m.Services[kv.key] = s
		if kv.value.Kind == ScalarNode && kv.value.Tag == "!!null" {
			continue // "ingest:" alone is a regular service
		}
		var debugNode, secretsNode *Node
		p.fields(sp, kv.value, map[string]func(string, *Node){
			"identities": func(path string, v *Node) { s.Identities = p.identities(path, v) },
			"debug": func(path string, v *Node) {
				s.Debug, debugNode = p.boolean(path, v), v
			},
			"secrets": func(path string, v *Node) {
				secretsNode = v
				p.secrets(path, v, s)
			},
		})
		if !s.Trusted() {
			if s.Debug {
				p.errorf(join(sp, "debug"), debugNode, "only a trusted service (one with identities) can run in a debug enclave")
			}
			if len(s.Secrets) > 0 {
				p.errorf(join(sp, "secrets"), secretsNode, "only a trusted service (one with identities) can hold secrets")
			}
		}
	}
}

func (p *parser) identities(path string, n *Node) []Identity {
	items, ok := p.list(path, n)
	if !ok {
		return nil
	}
	var out []Identity
	seen := map[string]bool{}
	for i, item := range items {
		ip := fmt.Sprintf("%s[%d]", path, i)
		var id Identity
		var productNode *Node
		present := p.fields(ip, item, map[string]func(string, *Node){
			"mrenclave": func(path string, v *Node) { id.MREnclave = p.hex32(path, v) },
			"mrsigner":  func(path string, v *Node) { id.MRSigner = p.hex32(path, v) },
			"product_id": func(path string, v *Node) {
				productNode = v
				x, _ := p.uint(path, v, 0, math.MaxUint16)
				id.ProductID = uint16(x)
			},
			"min_svn": func(path string, v *Node) {
				x, _ := p.uint(path, v, 0, math.MaxUint16)
				id.MinSVN = uint16(x)
			},
		})
		if present == nil {
			continue
		}
		_, hasE := present["mrenclave"]
		_, hasS := present["mrsigner"]
		switch {
		case hasE && hasS:
			p.errorf(ip, item, "give either mrenclave or mrsigner, not both (list them as two identities)")
			continue
		case !hasE && !hasS:
			p.errorf(ip, item, "want mrenclave or mrsigner")
			continue
		case hasE && productNode != nil:
			p.errorf(ip+".product_id", productNode, "product_id applies to mrsigner identities only")
			continue
		}
		if id.MREnclave == nil && id.MRSigner == nil {
			continue // bad hex, reported
		}
		key := identityKey(id)
		if seen[key] {
			p.errorf(ip, item, "duplicate identity")
			continue
		}
		seen[key] = true
		out = append(out, id)
	}
	return out
}

func (p *parser) secrets(path string, n *Node, s *Service) {
	pairs, ok := p.mapping(path, n)
	if !ok {
		return
	}
	for _, kv := range pairs {
		sp := join(path, kv.key)
		if !validName(kv.key, ".") {
			p.errorf(sp, kv.kNode, "secret names are 1 to %d characters of A-Z a-z 0-9 - _ .", MaxNameLen)
			continue
		}
		var sec Secret
		present := p.fields(sp, kv.value, map[string]func(string, *Node){
			"generate": func(path string, v *Node) {
				x, _ := p.uint(path, v, MinGeneratedSecret, MaxGeneratedSecret)
				sec.Generate = int(x)
			},
			"value": func(path string, v *Node) { sec.Value = p.secretValue(path, v) },
		})
		if present == nil {
			continue
		}
		_, g := present["generate"]
		_, v := present["value"]
		if g == v {
			p.errorf(sp, kv.value, "want exactly one of generate (a key length in bytes) or value (\"hex:…\" or \"base64:…\")")
			continue
		}
		if sec.Generate == 0 && sec.Value == nil {
			continue // reported
		}
		s.Secrets[kv.key] = sec
	}
}

func (p *parser) secretValue(path string, n *Node) []byte {
	s, ok := p.str(path, n)
	if !ok {
		return nil
	}
	var b []byte
	var err error
	switch {
	case strings.HasPrefix(s, "hex:"):
		b, err = hex.DecodeString(s[4:])
	case strings.HasPrefix(s, "base64:"):
		b, err = base64.StdEncoding.Strict().DecodeString(s[7:])
	default:
		p.errorf(path, n, "want \"hex:…\" or \"base64:…\"")
		return nil
	}
	if err != nil {
		p.errorf(path, n, "bad encoding: %v", err)
		return nil
	}
	if len(b) == 0 || len(b) > MaxSecretValue {
		p.errorf(path, n, "want 1 to %d bytes, got %d", MaxSecretValue, len(b))
		return nil
	}
	return b
}

func (p *parser) policy(path string, n *Node, m *Manifest) {
	p.fields(path, n, map[string]func(string, *Node){
		"accepted_tcb": func(path string, v *Node) {
			items, ok := p.list(path, v)
			if !ok {
				return
			}
			var out []attest.TCBStatus
			for i, item := range items {
				ip := fmt.Sprintf("%s[%d]", path, i)
				s, ok := p.str(ip, item)
				if !ok {
					continue
				}
				st := attest.TCBStatus(s)
				if !st.Valid() {
					p.errorf(ip, item, "unknown TCB status %q (known: UpToDate, SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded, Revoked)", s)
					continue
				}
				if slices.Contains(out, st) {
					p.errorf(ip, item, "duplicate TCB status %s", s)
					continue
				}
				out = append(out, st)
			}
			if len(items) == 0 {
				p.errorf(path, v, "empty (omit it to accept UpToDate only)")
			}
			if len(out) > 0 {
				slices.Sort(out)
				m.Policy.AcceptedTCB = out
			}
		},
		"allow_simulation": func(path string, v *Node) { m.Policy.AllowSimulation = p.boolean(path, v) },
	})
}

func (p *parser) freshness(path string, n *Node, m *Manifest) {
	f := &Freshness{Replicas: 1}
	present := p.fields(path, n, map[string]func(string, *Node){
		"replicas": func(path string, v *Node) {
			r, _ := p.uint(path, v, 1, MaxReplicas)
			f.Replicas = int(r)
		},
		"checkpoint": func(path string, v *Node) {
			s, ok := p.str(path, v)
			if !ok {
				return
			}
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 || d > MaxCheckpoint {
				p.errorf(path, v, "want a duration from 0s to %s (such as 1s or 100ms), got %q", MaxCheckpoint, s)
				return
			}
			f.Checkpoint = d
		},
	})
	if present == nil {
		return
	}
	if _, ok := present["replicas"]; !ok {
		p.errorf(join(path, "replicas"), n, "missing (want an integer from 1 to %d)", MaxReplicas)
	}
	if _, ok := present["checkpoint"]; !ok {
		p.errorf(join(path, "checkpoint"), n, "missing (want a duration such as 1s; 0s registers every write)")
	}
	m.Freshness = f
}

func (p *parser) owner(path string, n *Node, m *Manifest) {
	present := p.fields(path, n, map[string]func(string, *Node){
		"public_key": func(path string, v *Node) {
			s, ok := p.str(path, v)
			if !ok {
				return
			}
			o, err := ParseOwnerKey(s)
			if err != nil {
				p.errorf(path, v, "%v", err)
				return
			}
			m.Owner = o
		},
	})
	if present != nil {
		if _, ok := present["public_key"]; !ok {
			p.errorf(join(path, "public_key"), n, "missing")
		}
	}
}

// clients parses the clients section: name → {public_key}.
func (p *parser) clients(path string, n *Node, m *Manifest) {
	pairs, ok := p.mapping(path, n)
	if !ok {
		return
	}
	if len(pairs) > MaxClients {
		p.errorf(path, n, "%d clients, at most %d", len(pairs), MaxClients)
		return
	}
	for _, kv := range pairs {
		cp := join(path, kv.key)
		if !validName(kv.key, "") {
			p.errorf(cp, kv.kNode, "invalid client name %q (1 to %d characters of A-Z a-z 0-9 - _)", kv.key, MaxNameLen)
			continue
		}
		var key ed25519.PublicKey
		present := p.fields(cp, kv.value, map[string]func(string, *Node){
			"public_key": func(path string, v *Node) {
				s, ok := p.str(path, v)
				if !ok {
					return
				}
				k, err := ParseClientKey(s)
				if err != nil {
					p.errorf(path, v, "%v", err)
					return
				}
				key = k
			},
		})
		if present == nil {
			continue
		}
		if _, ok := present["public_key"]; !ok {
			p.errorf(join(cp, "public_key"), kv.value, "missing")
			continue
		}
		if key == nil {
			continue
		}
		if m.Clients == nil {
			m.Clients = map[string]ed25519.PublicKey{}
		}
		m.Clients[kv.key] = key
	}
}

// ParseClientKey decodes a client's Ed25519 public key: PEM ("PUBLIC
// KEY", PKIX), base64 of the PKIX DER, or base64 of the raw 32 bytes.
func ParseClientKey(s string) (ed25519.PublicKey, error) {
	o, err := ParseOwnerKey(s)
	if err != nil {
		return nil, err
	}
	k, ok := o.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%T key, a client credential is Ed25519", o.PublicKey)
	}
	return k, nil
}

// ParseOwnerKey decodes an owner public key: PEM ("PUBLIC KEY", PKIX), or
// base64 of the PKIX DER, or base64 of a raw 32-byte Ed25519 key. Only
// ECDSA P-256 and Ed25519 keys are accepted.
func ParseOwnerKey(s string) (*Owner, error) {
	s = strings.TrimSpace(s)
	var der []byte
	if strings.HasPrefix(s, "-----BEGIN") {
		blk, rest := pem.Decode([]byte(s))
		if blk == nil {
			return nil, fmt.Errorf("bad PEM")
		}
		if len(bytes.TrimSpace(rest)) > 0 {
			return nil, fmt.Errorf("data after the PEM block")
		}
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("PEM block %q, want \"PUBLIC KEY\"", blk.Type)
		}
		der = blk.Bytes
	} else {
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("want PEM or base64: %v", err)
		}
		if len(b) == ed25519.PublicKeySize {
			return newOwner(ed25519.PublicKey(b))
		}
		der = b
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("not a PKIX public key: %v", err)
	}
	return newOwner(k)
}

func newOwner(k any) (*Owner, error) {
	switch k := k.(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on %s, want P-256", k.Curve.Params().Name)
		}
	default:
		return nil, fmt.Errorf("%T key, want ECDSA P-256 or Ed25519", k)
	}
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode key: %v", err)
	}
	return &Owner{PublicKey: k, der: der}, nil
}

func (p *parser) addresses(path string, n *Node, m *Manifest) {
	pairs, ok := p.mapping(path, n)
	if !ok {
		return
	}
	for _, kv := range pairs {
		ap := path + "." + strconv.Quote(kv.key)
		var ae *wire.AddressError
		if errors.As(wire.ValidateAddress(kv.key), &ae) {
			p.errorf(ap, kv.kNode, "invalid address: %s", ae.Reason)
			continue
		}
		a := &Address{Name: kv.key}
		type ref struct {
			right string
			path  string
			name  string
			node  *Node
		}
		var refs []ref
		rights := func(right string, dst *[]string) func(string, *Node) {
			return func(path string, v *Node) {
				items, ok := p.list(path, v)
				if !ok {
					return
				}
				for i, item := range items {
					ip := fmt.Sprintf("%s[%d]", path, i)
					s, ok := p.str(ip, item)
					if !ok {
						continue
					}
					if slices.Contains(*dst, s) {
						p.errorf(ip, item, "service %q listed twice", s)
						continue
					}
					if _, ok := m.Services[s]; !ok {
						p.errorf(ip, item, "unknown service %q", s)
						continue
					}
					*dst = append(*dst, s)
					refs = append(refs, ref{right: right, path: ip, name: s, node: item})
				}
				slices.Sort(*dst)
			}
		}
		if kv.value.Kind == ScalarNode && kv.value.Tag == "!!null" {
			p.errorf(ap, kv.value, "an address needs at least one right (consume, send or publish)")
			continue
		}
		present := p.fields(ap, kv.value, map[string]func(string, *Node){
			"secured": func(path string, v *Node) { a.Secured = p.boolean(path, v) },
			"durable": func(path string, v *Node) { a.Durable = p.boolean(path, v) },
			"clients": func(path string, v *Node) { a.Clients = p.boolean(path, v) },
			"consume": rights("consume", &a.Consume),
			"send":    rights("send", &a.Send),
			"publish": rights("publish", &a.Publish),
		})
		if present == nil {
			continue
		}
		_, c := present["consume"]
		_, sd := present["send"]
		_, pb := present["publish"]
		if !c && !sd && !pb {
			p.errorf(ap, kv.value, "an address needs at least one right (consume, send or publish)")
			continue
		}
		if a.Clients {
			for _, r := range refs {
				if s := m.Services[r.name]; r.right == "consume" && !s.Trusted() {
					p.errorf(r.path, r.node, "service %q has no identities (it is regular), so it cannot consume an address open to clients (clients seal their messages to a trusted service's key)", r.name)
				}
			}
		}
		if a.Secured {
			for _, r := range refs {
				if s := m.Services[r.name]; !s.Trusted() {
					p.errorf(r.path, r.node, "service %q has no identities (it is regular), so it cannot %s on a secured address", r.name, r.right)
				}
			}
		}
		if a.Consume == nil {
			a.Consume = []string{}
		}
		if a.Send == nil {
			a.Send = []string{}
		}
		if a.Publish == nil {
			a.Publish = []string{}
		}
		m.Addresses[kv.key] = a
	}
}
