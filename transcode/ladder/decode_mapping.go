package ladder

import (
	"fmt"
	"slices"
	"strings"

	"github.com/goccy/go-yaml/ast"

	"github.com/prism-streaming/prism/internal/yamlfile"
)

// nullNode stands in for values that are absent or could not be resolved.
var nullNode = &ast.NullNode{BaseNode: &ast.BaseNode{}}

// mapping calls set for every known key of the resolved mapping n, with the
// resolved value, after applying YAML merge keys ("<<: *base"), whose values
// explicit keys override. Null values are skipped so that "key:" with
// nothing after it keeps the default.
func (d *decoder) mapping(n ast.Node, path string, known []string, depth int, set func(key string, v ast.Node, path string)) {
	if d.exhausted() {
		return
	}
	entries, ok := yamlfile.MappingEntries(n)
	if !ok {
		d.fail(path, "must be a mapping, got %s", describe(n))
		return
	}
	var explicit []*ast.MappingValueNode
	var merges []ast.Node
	for _, e := range entries {
		if e == nil || e.Key == nil {
			continue
		}
		if e.Key.IsMergeKey() {
			merges = append(merges, e.Value)
		} else {
			explicit = append(explicit, e)
		}
	}
	for _, m := range merges {
		d.merge(m, path, known, depth, set)
	}
	seen := map[string]int{}
	for _, e := range explicit {
		if !d.spend(path) {
			return
		}
		key := yamlfile.KeyText(e.Key)
		keyPath := yamlfile.Key(path, key)
		line := max(yamlfile.LineOf(e.Key), 1)
		if first, dup := seen[key]; dup {
			d.lines[keyPath] = line
			d.fail(keyPath, "duplicate key (first set on line %d)", first)
			continue
		}
		seen[key] = line
		if !slices.Contains(known, key) {
			d.lines[keyPath] = line
			msg := "unknown field"
			if s := suggestField(key, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.fail(keyPath, "%s", msg)
			continue
		}
		d.lines[keyPath] = line
		value, ok := d.resolve(e.Value, keyPath)
		if _, isNull := value.(*ast.NullNode); !ok || isNull {
			continue
		}
		set(key, value, keyPath)
	}
}

// merge applies the value of a "<<" key: one mapping or a list of them, where
// earlier mappings win (so they are applied last).
func (d *decoder) merge(n ast.Node, path string, known []string, depth int, set func(string, ast.Node, string)) {
	if depth >= maxMergeDepth {
		d.fail(path, "merge keys (<<) nested too deeply")
		return
	}
	n, ok := d.resolve(n, path)
	if !ok {
		return
	}
	sources := []ast.Node{n}
	if seq, isSeq := n.(*ast.SequenceNode); isSeq {
		sources = seq.Values
	}
	for i := len(sources) - 1; i >= 0; i-- {
		if src, ok := d.resolve(sources[i], path); ok {
			d.mapping(src, path, known, depth+1, set)
		}
	}
}

// resolve looks through anchors, aliases and tags to the node holding the
// value. ok is false when it reported an error instead.
func (d *decoder) resolve(n ast.Node, path string) (_ ast.Node, ok bool) {
	for range 16 { // alias -> anchor -> tag chains are short; this bounds loops
		if !d.spend(path) {
			return nullNode, false
		}
		switch v := n.(type) {
		case nil:
			return nullNode, true
		case *ast.AnchorNode:
			if v == nil || v.Value == nil {
				return nullNode, true
			}
			if v.Name != nil {
				d.anchors[yamlfile.TokenValue(v.Name)] = v.Value
			}
			n = v.Value
		case *ast.AliasNode:
			if v == nil || v.Value == nil {
				return nullNode, true
			}
			name := yamlfile.TokenValue(v.Value)
			target, ok := d.anchors[name]
			if !ok {
				d.fail(path, "unknown alias *%s (anchors must be defined before use)", clip(name))
				return nullNode, false
			}
			n = target
		case *ast.TagNode:
			if v == nil {
				return nullNode, true
			}
			tag := yamlfile.TokenValue(v)
			switch {
			case tag == "!!str":
				return stringNode(v.Value), true
			case strings.HasPrefix(tag, "!!"):
				n = v.Value // standard tags: the node already has the type
			default:
				d.fail(path, "unsupported tag %s", clip(tag))
				return nullNode, false
			}
		case *ast.MappingKeyNode:
			d.fail(path, "complex mapping keys (?) are not supported")
			return nullNode, false
		default:
			if yamlfile.IsNil(n) {
				return nullNode, true
			}
			return n, true
		}
	}
	d.fail(path, "aliases nested too deeply")
	return nullNode, false
}

// spend charges one visited node against the budget; false once exhausted.
func (d *decoder) spend(path string) bool {
	if d.exhausted() {
		return false
	}
	d.budget--
	if d.exhausted() {
		// Blame the top-level value (such as "rungs[5]"): the path at hand
		// may be deep inside an alias defined far away.
		if i := strings.IndexByte(path, '.'); i >= 0 {
			path = path[:i]
		}
		d.errs = append(d.errs, &Error{File: d.file, Line: d.lines.Line(path), Field: path,
			Msg: "document too large or too deeply aliased"})
		d.failed[path] = true
	}
	return !d.exhausted()
}
