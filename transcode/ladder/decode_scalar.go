package ladder

import (
	"fmt"

	"github.com/goccy/go-yaml/ast"
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
		d.fail(path, "integer %s is out of range", clip(tokenValue(in)))
		return
	}
	*dst = i
}

func (d *decoder) number(n ast.Node, path string, dst *float64) {
	switch v := n.(type) {
	case *ast.IntegerNode:
		i, ok := intValue(v)
		if !ok {
			d.fail(path, "number %s is out of range", clip(tokenValue(v)))
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
			err = fmt.Errorf("invalid bitrate %s: out of range", clip(tokenValue(v)))
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
			err = fmt.Errorf("invalid duration %s seconds: out of range", clip(tokenValue(v)))
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
