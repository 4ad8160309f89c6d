package ladder

import (
	"math"
	"strconv"

	"github.com/goccy/go-yaml/ast"
)

// AST helpers. goccy/go-yaml nodes may carry nil tokens, and
// DocumentNode.GetToken panics on an empty body, so access is guarded.

var nullNode = &ast.NullNode{BaseNode: &ast.BaseNode{}}

func mapEntries(n ast.Node) ([]*ast.MappingValueNode, bool) {
	switch m := n.(type) {
	case *ast.MappingNode:
		return m.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{m}, true
	}
	return nil, false
}

func isKnown(key string, known []string) bool {
	for _, k := range known {
		if k == key {
			return true
		}
	}
	return false
}

func keyText(k ast.Node) string {
	switch v := k.(type) {
	case *ast.StringNode:
		if v != nil {
			return v.Value
		}
	case *ast.MappingKeyNode: // "? key"
		if v != nil {
			return keyText(v.Value)
		}
	}
	return tokenValue(k)
}

func intValue(n *ast.IntegerNode) (int, bool) {
	switch v := n.Value.(type) {
	case int64:
		if v < math.MinInt || v > math.MaxInt {
			return 0, false
		}
		return int(v), true
	case uint64:
		if v > math.MaxInt {
			return 0, false
		}
		return int(v), true
	}
	return 0, false
}

// stringNode is the value of a "!!str" tagged node: its text as written.
func stringNode(n ast.Node) ast.Node {
	if isNilNode(n) {
		return &ast.StringNode{BaseNode: &ast.BaseNode{}}
	}
	switch v := n.(type) {
	case *ast.StringNode:
		return v
	case *ast.LiteralNode:
		return v
	case *ast.NullNode:
		return &ast.StringNode{BaseNode: &ast.BaseNode{}, Token: v.Token}
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return &ast.StringNode{BaseNode: &ast.BaseNode{}, Token: n.GetToken(), Value: tokenValue(n)}
	}
	return n // a collection stays one, and is reported as the wrong type
}

// describe names a node's kind and value for "got ..." messages.
func describe(n ast.Node) string {
	switch v := n.(type) {
	case *ast.NullNode:
		return "nothing (null)"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode:
		return "string " + strconv.Quote(clip(v.Value))
	case *ast.LiteralNode:
		return "a block string"
	case *ast.BoolNode:
		return "boolean " + strconv.FormatBool(v.Value)
	case *ast.IntegerNode:
		return "integer " + clip(tokenValue(v))
	case *ast.FloatNode:
		return "number " + clip(tokenValue(v))
	case *ast.InfinityNode, *ast.NanNode:
		return "non-finite number " + clip(tokenValue(v))
	}
	return "an unsupported value"
}

func tokenValue(n ast.Node) string {
	if isNilNode(n) {
		return ""
	}
	if tk := n.GetToken(); tk != nil {
		return tk.Value
	}
	return ""
}

// lineOf returns the 1-based line where n starts, or 0 if unknown.
func lineOf(n ast.Node) (line int) {
	if isNilNode(n) {
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
		if l := lineOf(m.Values[0].Key); l > 0 {
			return l
		}
	}
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return tk.Position.Line
	}
	return 0
}

// isNilNode catches both a nil interface and a typed nil pointer, on which
// goccy's methods would panic.
func isNilNode(n ast.Node) bool {
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
