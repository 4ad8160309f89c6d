// Package yamlfile reads YAML files strictly and reports their problems the
// same way for every kind of file: "file:line: field: message", one line per
// problem. The service configuration and the ladders both load through it.
package yamlfile

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Parse parses data into the bodies of its documents, leaving out empty
// documents and directives ("%YAML 1.2"). A UTF-8 byte order mark, which
// editors on Windows may write, is skipped. Duplicate keys are left to the
// caller, which can name their path.
func Parse[K Kind](file string, data []byte) ([]ast.Node, error) {
	f, err := parseYAML(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")))
	if err != nil {
		line, msg, _ := errorDetail(err)
		return nil, Errors[K]{{File: file, Line: max(line, 1), Msg: "invalid YAML: " + msg}}
	}
	var bodies []ast.Node
	for _, doc := range f.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if _, isDirective := doc.Body.(*ast.DirectiveNode); !isDirective {
			bodies = append(bodies, doc.Body)
		}
	}
	return bodies, nil
}

// parseYAML runs goccy/go-yaml's parser, turning a panic inside it into an
// error: a malformed file must not take the server down.
func parseYAML(data []byte) (f *ast.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("YAML parser failed: %v", r)
		}
	}()
	return parser.ParseBytes(data, 0, parser.AllowDuplicateMapKey())
}

// errorDetail extracts the line, a one-line message and the token at fault
// from a goccy error, whose own Error() adds a multi-line source excerpt.
func errorDetail(err error) (line int, msg string, tk *token.Token) {
	msg = err.Error()
	var ye yaml.Error
	if errors.As(err, &ye) {
		msg = ye.GetMessage()
		if tk = ye.GetToken(); tk != nil && tk.Position != nil {
			line = tk.Position.Line
		}
	}
	if i := strings.IndexAny(msg, "\r\n"); i >= 0 {
		msg = msg[:i]
	}
	return line, msg, tk
}

// Decode decodes the YAML document in data into v strictly: unknown keys,
// duplicate keys, values of the wrong type and a second document are
// errors. It returns the line of every field path in data, to locate the
// problems that validation finds afterwards. With no document in data, v is
// left as it is.
func Decode[K Kind](file string, data []byte, v any) (Lines, error) {
	bodies, err := Parse[K](file, data)
	if err != nil {
		return nil, err
	}
	lines := Lines{}
	switch len(bodies) {
	case 0:
		return lines, nil
	case 1:
	default:
		return nil, Errors[K]{{File: file, Line: max(LineOf(bodies[1]), 1),
			Msg: "found more than one YAML document; expected one"}}
	}
	root := bodies[0]
	w := &walker[K]{file: file, lines: lines, tokens: map[*token.Token]string{}}
	lines[""] = max(LineOf(root), 1)
	w.walk(root, "")
	errs := w.errs
	if err := decodeNode(root, v); err != nil {
		errs = append(errs, w.decodeError(err))
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return lines, nil
}

// decodeNode runs goccy/go-yaml's strict decoder, a panic inside it being
// an error as in parseYAML. Duplicate keys have been reported by the walk.
func decodeNode(n ast.Node, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("YAML decoder failed: %v", r)
		}
	}()
	return yaml.NodeToValue(n, v, yaml.Strict(), yaml.AllowDuplicateMapKey())
}

// walker records where every field of a document is: the line of each key
// and list item, and the path that each token belongs to, which names the
// field of a decoding error. It reports duplicate keys, which the decoder
// would take silently, the last one winning.
type walker[K Kind] struct {
	file   string
	lines  Lines
	tokens map[*token.Token]string
	errs   Errors[K]
}

func (w *walker[K]) walk(n ast.Node, path string) {
	if IsNil(n) {
		return
	}
	// Parents first, so that a token shared with a child (a block
	// mapping's first key) names the deeper field.
	w.note(n, path)
	switch v := n.(type) {
	case *ast.AnchorNode:
		w.walk(v.Value, path)
	case *ast.TagNode:
		w.walk(v.Value, path)
	case *ast.SequenceNode:
		for i, item := range v.Values {
			itemPath := Index(path, i)
			w.lines[itemPath] = max(LineOf(item), w.lines[path])
			w.walk(item, itemPath)
		}
	case *ast.MappingNode, *ast.MappingValueNode:
		entries, _ := MappingEntries(n)
		seen := map[string]int{}
		for _, e := range entries {
			if e == nil || IsNil(e.Key) || e.Key.IsMergeKey() {
				continue // merged values are located at the mapping
			}
			key := KeyText(e.Key)
			keyPath := Key(path, key)
			line := max(LineOf(e.Key), 1)
			if first, dup := seen[key]; dup {
				w.errs = append(w.errs, &Error[K]{File: w.file, Line: line, Field: keyPath,
					Msg: fmt.Sprintf("duplicate key (first set on line %d)", first)})
			} else {
				seen[key] = line
			}
			w.lines[keyPath] = line
			w.note(e.Key, keyPath)
			w.walk(e.Value, keyPath)
		}
	}
}

func (w *walker[K]) note(n ast.Node, path string) {
	if tk := n.GetToken(); tk != nil {
		w.tokens[tk] = path
	}
}

// decodeError locates the one error goccy's decoder reports: by the token
// at fault, else at the deepest field on its line.
func (w *walker[K]) decodeError(err error) *Error[K] {
	line, msg, tk := errorDetail(err)
	e := &Error[K]{File: w.file, Line: line, Msg: msg}
	if field, ok := w.tokens[tk]; ok && tk != nil {
		e.Field = field
		return e
	}
	if line == 0 {
		// goccy reports some errors with no token (a bad duration, a merge
		// of an unknown anchor): find the value the message quotes.
		e.Line, e.Field = w.locateValue(msg)
		return e
	}
	for p, l := range w.lines {
		deeper := len(p) > len(e.Field) || len(p) == len(e.Field) && p < e.Field
		if l == line && deeper {
			e.Field = p
		}
	}
	return e
}

// quotedRE finds the values an error message quotes ("A", or the last
// word after "name").
var quotedRE = regexp.MustCompile(`"([^"]*)"|name (\S+)$`)

// locateValue returns the line and field of the first scalar whose value
// the message quotes, else the document's first line: an error always
// says where to look.
func (w *walker[K]) locateValue(msg string) (int, string) {
	for _, m := range quotedRE.FindAllStringSubmatch(msg, -1) {
		want := m[1] + m[2]
		if want == "" {
			continue
		}
		best, field := 0, ""
		for tk, path := range w.tokens {
			if tk.Value == want && tk.Position != nil && (best == 0 || tk.Position.Line < best) {
				best, field = tk.Position.Line, path
			}
		}
		if best > 0 {
			return best, field
		}
	}
	return max(w.lines[""], 1), ""
}
