package ladder

import (
	"errors"
	"slices"
	"strconv"
	"strings"
)

// ErrInvalid matches (errors.Is) every error Parse, Load and Validate report
// about the content of a ladder.
var ErrInvalid = errors.New("invalid ladder")

// ErrNoRungs is wrapped by Plan when every rung is larger than the source.
var ErrNoRungs = errors.New("no rungs to encode")

// Error is one problem in a ladder, located by file, line and field path.
type Error struct {
	File  string // as given to Parse; "" for bytes
	Line  int    // 1-based; 0 when the ladder was not loaded from YAML
	Field string // dotted path such as "rungs[2].bitrate"; "" for the whole file
	Msg   string
}

// unnamedFile stands in for File when Parse was given no name, so that every
// located error keeps the "file:line: " shape.
const unnamedFile = "<input>"

// Error formats "ladder.yaml:14: rungs[2].bitrate: must be greater than 0";
// parts that are unknown are left out.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.Line > 0:
		file := e.File
		if file == "" {
			file = unnamedFile
		}
		b.WriteString(file + ":" + strconv.Itoa(e.Line) + ": ")
	case e.File != "":
		b.WriteString(e.File + ": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	// One error, one line: ErrorList joins with newlines.
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(b.String())
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *Error) Unwrap() error { return ErrInvalid }

// ErrorList is every problem found in a ladder, in line order.
type ErrorList []*Error

// Error joins the errors with newlines.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Is reports ErrInvalid even for an empty list.
func (l ErrorList) Is(target error) bool { return target == ErrInvalid }

// Unwrap exposes the individual errors to errors.As.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// sortByLine orders errors by line, keeping discovery order within a line.
func (l ErrorList) sortByLine() {
	slices.SortStableFunc(l, func(a, b *Error) int { return a.Line - b.Line })
}

// orNil returns nil for an empty list so callers never get a typed nil error.
func (l ErrorList) orNil() error {
	if len(l) == 0 {
		return nil
	}
	l.sortByLine()
	return l
}

// clip shortens user input echoed in messages.
func clip(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
