package yamlfile

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Kind names the sentinel that one package's errors match: an empty struct
// per package whose Sentinel method returns, say, ladder.ErrInvalid. It is a
// type parameter rather than a field so that Error stays a plain value that
// compares with ==, while ladder and config errors still match only their
// own sentinel.
type Kind interface{ Sentinel() error }

// Error is one problem in a file, located by line and field path.
type Error[K Kind] struct {
	File  string // as given to the loader; "" for bytes or values built in code
	Line  int    // 1-based; 0 when unknown
	Field string // path such as "streams[2].ladder"; "" for the whole file
	Msg   string
}

// unnamedFile stands in for File when a located error has none, so that
// every located error keeps the "file:line: " shape.
const unnamedFile = "<input>"

// Error formats "ladder.yaml:14: rungs[2].bitrate: must be greater than 0";
// parts that are unknown are left out.
func (e *Error[K]) Error() string { return format(e.File, e.Line, e.Field, e.Msg) }

func format(file string, line int, field, msg string) string {
	var b strings.Builder
	switch {
	case line > 0:
		if file == "" {
			file = unnamedFile
		}
		b.WriteString(file + ":" + strconv.Itoa(line) + ": ")
	case file != "":
		b.WriteString(file + ": ")
	}
	if field != "" {
		b.WriteString(field + ": ")
	}
	b.WriteString(msg)
	// One error, one line: lists join their errors with newlines, and user
	// input echoed in a message may hold some.
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(b.String())
}

// Unwrap makes errors.Is(err, sentinel) true.
func (e *Error[K]) Unwrap() error {
	var k K
	return k.Sentinel()
}

// Errors is every problem found in a file.
type Errors[K Kind] []*Error[K]

// Error joins the errors with newlines.
func (l Errors[K]) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Is reports the sentinel even for an empty list.
func (l Errors[K]) Is(target error) bool {
	var k K
	return target == k.Sentinel()
}

// Unwrap exposes the individual errors to errors.As.
func (l Errors[K]) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Err orders the errors by line, keeping the order of discovery within a
// line, and returns nil for none, so that callers never return a typed nil.
func (l Errors[K]) Err() error {
	if len(l) == 0 {
		return nil
	}
	slices.SortStableFunc(l, func(a, b *Error[K]) int { return a.Line - b.Line })
	return l
}

// FieldError is a problem with one field, found by a Validate method that
// does not know the file or the line: the code that read the file locates it.
type FieldError struct {
	Field string // relative to the section: "part_target", "abr.up_hold"
	Msg   string
}

// FieldErrors is what a Validate method returns: every problem of its
// section, with fields relative to it.
type FieldErrors struct {
	// Section is the key the fields sit under ("hls"), printed in front of
	// them so that a section validated on its own still names its keys as
	// a file spells them. "" for the top level.
	Section string
	// Sentinel, if set, is matched by errors.Is (webrtc.ErrInvalidConfig).
	Sentinel error
	Fields   []FieldError
}

// Addf records a problem with field.
func (e *FieldErrors) Addf(field, format string, args ...any) {
	e.Fields = append(e.Fields, FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// AddSection records the problems that the Validate method of the section
// at key returned, its fields prefixed with key: where the section sits is
// the caller's to say, whatever Section it named itself. Any other error
// becomes a problem of the section as a whole.
func (e *FieldErrors) AddSection(key string, err error) {
	if err == nil {
		return
	}
	var sub *FieldErrors
	if !errors.As(err, &sub) {
		e.Fields = append(e.Fields, FieldError{Field: key, Msg: err.Error()})
		return
	}
	for _, f := range sub.Fields {
		e.Fields = append(e.Fields, FieldError{Field: Join(key, f.Field), Msg: f.Msg})
	}
}

// Err returns e, or nil when it holds no problem.
func (e *FieldErrors) Err() error {
	if len(e.Fields) == 0 {
		return nil
	}
	return e
}

// Error prints one "section.field: message" line per problem.
func (e *FieldErrors) Error() string {
	lines := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		lines[i] = format("", 0, Join(e.Section, f.Field), f.Msg)
	}
	return strings.Join(lines, "\n")
}

// Unwrap makes errors.Is(err, e.Sentinel) true.
func (e *FieldErrors) Unwrap() error { return e.Sentinel }

// Locate places field errors in file: each gets the line of its field, or of
// the nearest enclosing one that lines knows.
func Locate[K Kind](file string, lines Lines, errs *FieldErrors) Errors[K] {
	located := make(Errors[K], 0, len(errs.Fields))
	for _, f := range errs.Fields {
		field := Join(errs.Section, f.Field)
		located = append(located, &Error[K]{File: file, Line: lines.Line(field), Field: field, Msg: f.Msg})
	}
	return located
}
