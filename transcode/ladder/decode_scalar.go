package ladder

import (
	"fmt"
	"math"
	"strconv"

	"github.com/goccy/go-yaml/ast"

	"github.com/prism-streaming/prism/internal/yamlfile"
)

// Scalar decoders take a resolved node; each stores into dst on success and
// records an error (leaving dst alone) otherwise.

func (d *decoder) str(n ast.Node, path string, dst *string) {
	switch v := n.(type) {
	case *ast.StringNode:
		*dst = v.Value
	case *ast.LiteralNode:
		if v.Value != nil {
			*dst = v.Value.Value
		}
	default:
		d.fail(path, "must be a string, got %s", describe(v))
	}
}

func (d *decoder) integer(n ast.Node, path string, dst *int) {
	in, ok := n.(*ast.IntegerNode)
	if !ok {
		d.fail(path, "must be an integer, got %s", describe(n))
		return
	}
	i, ok := intValue(in)
	if !ok {
		d.fail(path, "integer %s is out of range", clip(yamlfile.TokenValue(in)))
		return
	}
	*dst = i
}

func (d *decoder) number(n ast.Node, path string, dst *float64) {
	switch v := n.(type) {
	case *ast.IntegerNode:
		i, ok := intValue(v)
		if !ok {
			d.fail(path, "number %s is out of range", clip(yamlfile.TokenValue(v)))
			return
		}
		*dst = float64(i)
	case *ast.FloatNode:
		*dst = v.Value
	default:
		d.fail(path, "must be a number, got %s", describe(v))
	}
}

func (d *decoder) boolean(n ast.Node, path string, dst *bool) {
	v, ok := n.(*ast.BoolNode)
	if !ok {
		d.fail(path, "must be true or false, got %s", describe(n))
		return
	}
	*dst = v.Value
}

func (d *decoder) bitrate(n ast.Node, path string, dst *Bitrate) {
	var b Bitrate
	var err error
	switch v := n.(type) {
	case *ast.IntegerNode:
		i, ok := intValue(v)
		switch {
		case !ok:
			err = fmt.Errorf("invalid bitrate %s: out of range", clip(yamlfile.TokenValue(v)))
		case i < 0:
			err = fmt.Errorf("invalid bitrate %d: must not be negative", i)
		}
		b = Bitrate(i)
	case *ast.FloatNode:
		b, err = bitrateFromFloat(v.Value)
	case *ast.StringNode:
		b, err = ParseBitrate(v.Value)
	default:
		err = fmt.Errorf("must be a bitrate such as 2500k, got %s", describe(v))
	}
	if err != nil {
		d.fail(path, "%s", err)
		return
	}
	*dst = b
}

func (d *decoder) duration(n ast.Node, path string, dst *Duration) {
	var dur Duration
	var err error
	switch v := n.(type) {
	case *ast.IntegerNode:
		i, ok := intValue(v)
		if !ok {
			err = fmt.Errorf("invalid duration %s seconds: out of range", clip(yamlfile.TokenValue(v)))
			break
		}
		dur, err = durationFromSeconds(float64(i))
	case *ast.FloatNode:
		dur, err = durationFromSeconds(v.Value)
	case *ast.StringNode:
		dur, err = ParseDuration(v.Value)
	default:
		err = fmt.Errorf("must be a duration such as 1s or 500ms, got %s", describe(v))
	}
	if err != nil {
		d.fail(path, "%s", err)
		return
	}
	*dst = dur
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
	if yamlfile.IsNil(n) {
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
		return &ast.StringNode{BaseNode: &ast.BaseNode{}, Token: n.GetToken(), Value: yamlfile.TokenValue(n)}
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
		return "integer " + clip(yamlfile.TokenValue(v))
	case *ast.FloatNode:
		return "number " + clip(yamlfile.TokenValue(v))
	case *ast.InfinityNode, *ast.NanNode:
		return "non-finite number " + clip(yamlfile.TokenValue(v))
	}
	return "an unsupported value"
}
