package ladder

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Load reads and parses the ladder file at path.
func Load(path string) (*Ladder, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load ladder: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes a ladder from YAML, applies defaults and validates it. file
// names the source in errors. Any error is an ErrorList matching ErrInvalid.
func Parse(file string, data []byte) (*Ladder, error) {
	root, err := parseDocument(file, data)
	if err != nil {
		return nil, err
	}
	d := newDecoder(file)
	l := d.ladder(root)
	if d.exhausted() {
		return nil, d.errs.orNil()
	}
	errs := d.errs
	// Values that failed to decode were left at their defaults; checking
	// them again would only repeat the decoding error.
	if verr, ok := l.Validate().(ErrorList); ok {
		for _, e := range verr {
			if !d.failedWithin(e.Field) {
				errs = append(errs, e)
			}
		}
	}
	if err := errs.orNil(); err != nil {
		return nil, err
	}
	return l, nil
}

// failedWithin reports whether path, or a value enclosing it, failed to decode.
func (d *decoder) failedWithin(path string) bool {
	for p := path; ; p = parentPath(p) {
		if d.failed[p] {
			return true
		}
		if p == "" {
			return false
		}
	}
}

// parseDocument parses data into the single top-level mapping of a ladder.
func parseDocument(file string, data []byte) (ast.Node, error) {
	at := func(line int, msg string) error {
		return ErrorList{{File: file, Line: max(line, 1), Msg: msg}}
	}
	// Editors on Windows may start the file with a UTF-8 byte order mark.
	f, err := parseYAML(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")))
	if err != nil {
		line, msg := syntaxErrorDetail(err)
		return nil, at(line, "invalid YAML: "+msg)
	}
	var bodies []ast.Node
	for _, doc := range f.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if _, isDirective := doc.Body.(*ast.DirectiveNode); !isDirective { // "%YAML 1.2"
			bodies = append(bodies, doc.Body)
		}
	}
	switch {
	case len(bodies) == 0:
		return nil, at(1, "empty ladder: expected a mapping with name and rungs")
	case len(bodies) > 1:
		return nil, at(lineOf(bodies[1]), "found more than one YAML document; a ladder file holds exactly one")
	}
	return bodies[0], nil
}

// parseYAML runs goccy/go-yaml's parser, turning a panic inside it into an
// error: a malformed file must not take the server down.
func parseYAML(data []byte) (f *ast.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("YAML parser failed: %v", r)
		}
	}()
	// Duplicate keys are reported by the decoder, with their field path.
	return parser.ParseBytes(data, 0, parser.AllowDuplicateMapKey())
}

// syntaxErrorDetail extracts the line and a one-line message from a parser
// error; goccy's own Error() adds a multi-line source excerpt.
func syntaxErrorDetail(err error) (line int, msg string) {
	msg = err.Error()
	var ye yaml.Error
	if errors.As(err, &ye) {
		msg = ye.GetMessage()
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			line = tk.Position.Line
		}
	}
	if i := strings.IndexAny(msg, "\r\n"); i >= 0 {
		msg = msg[:i]
	}
	return line, msg
}
