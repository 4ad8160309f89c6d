package yamlfile

import "github.com/goccy/go-yaml/ast"

// AST helpers. goccy/go-yaml nodes may carry nil tokens, and
// DocumentNode.GetToken panics on an empty body, so access is guarded.

// MappingEntries returns the key-value pairs of a mapping; a single pair
// ("a: 1" nested in a list) is a mapping of one.
func MappingEntries(n ast.Node) ([]*ast.MappingValueNode, bool) {
	if IsNil(n) {
		return nil, false
	}
	switch m := n.(type) {
	case *ast.MappingNode:
		return m.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{m}, true
	}
	return nil, false
}

// KeyText is the text of a mapping key.
func KeyText(k ast.Node) string {
	switch v := k.(type) {
	case *ast.StringNode:
		if v != nil {
			return v.Value
		}
	case *ast.MappingKeyNode: // "? key"
		if v != nil {
			return KeyText(v.Value)
		}
	}
	return TokenValue(k)
}

// TokenValue is the text of n's token as written, "" if it has none.
func TokenValue(n ast.Node) string {
	if IsNil(n) {
		return ""
	}
	if tk := n.GetToken(); tk != nil {
		return tk.Value
	}
	return ""
}

// LineOf returns the 1-based line where n starts, or 0 if unknown.
func LineOf(n ast.Node) int {
	if IsNil(n) {
		return 0
	}
	if doc, ok := n.(*ast.DocumentNode); ok {
		if doc.Body == nil {
			return 0
		}
		n = doc.Body
	}
	if m, ok := n.(*ast.MappingNode); ok && len(m.Values) > 0 && m.Values[0] != nil {
		// The line of the first key is the mapping's "- name:" line.
		if l := LineOf(m.Values[0].Key); l > 0 {
			return l
		}
	}
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return tk.Position.Line
	}
	return 0
}

// IsNil catches both a nil interface and a typed nil pointer, on which
// goccy's methods would panic.
func IsNil(n ast.Node) bool {
	switch v := n.(type) {
	case nil:
		return true
	case *ast.StringNode:
		return v == nil
	case *ast.IntegerNode:
		return v == nil
	case *ast.FloatNode:
		return v == nil
	case *ast.BoolNode:
		return v == nil
	case *ast.NullNode:
		return v == nil
	case *ast.MappingNode:
		return v == nil
	case *ast.MappingValueNode:
		return v == nil
	case *ast.MappingKeyNode:
		return v == nil
	case *ast.SequenceNode:
		return v == nil
	case *ast.AnchorNode:
		return v == nil
	case *ast.AliasNode:
		return v == nil
	case *ast.TagNode:
		return v == nil
	case *ast.LiteralNode:
		return v == nil
	case *ast.DocumentNode:
		return v == nil
	}
	return false
}
