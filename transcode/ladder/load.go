package ladder

import (
	"errors"
	"fmt"
	"os"

	"github.com/goccy/go-yaml/ast"

	"github.com/prism-streaming/prism/internal/yamlfile"
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
		return nil, d.errs.Err()
	}
	errs := d.errs
	// Values that failed to decode were left at their defaults; checking
	// them again would only repeat the decoding error.
	var verr ErrorList
	if errors.As(l.Validate(), &verr) {
		for _, e := range verr {
			if !d.failedWithin(e.Field) {
				errs = append(errs, e)
			}
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return l, nil
}

// failedWithin reports whether path, or a value enclosing it, failed to decode.
func (d *decoder) failedWithin(path string) bool {
	for p := path; ; p = yamlfile.Parent(p) {
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
	bodies, err := yamlfile.Parse[invalidLadder](file, data)
	if err != nil {
		return nil, err
	}
	at := func(line int, msg string) error {
		return ErrorList{{File: file, Line: max(line, 1), Msg: msg}}
	}
	switch {
	case len(bodies) == 0:
		return nil, at(1, "empty ladder: expected a mapping with name and rungs")
	case len(bodies) > 1:
		return nil, at(yamlfile.LineOf(bodies[1]), "found more than one YAML document; a ladder file holds exactly one")
	}
	return bodies[0], nil
}
