// Package config is the service configuration of `prism serve`: one YAML
// file, loaded strictly (unknown keys are errors) with every error naming
// file, line and field, like ladders.
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/prism-streaming/prism/pipeline"
)

// ErrInvalid is matched by every configuration error.
var ErrInvalid = errors.New("invalid configuration")

// Config is the whole service configuration. The zero value plus Defaults
// is what `prism serve` runs with when no file is given.
type Config struct {
	HTTP HTTP `yaml:"http"`
	// DataDir holds state that survives restarts (the embedded NATS store).
	DataDir string `yaml:"data_dir"`
	// Streams are pulled from their inputs and transcoded from start-up.
	Streams []Stream `yaml:"streams"`

	file  string
	lines map[string]int // field path -> line, for validation messages
}

// HTTP is the HTTP listener.
type HTTP struct {
	Address string `yaml:"address"` // default ":8080"
	// TLS: with both set, HTTPS with HTTP/2 (what LL-HLS players expect).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
}

// Stream is a stream pulled from a URL at start-up.
type Stream struct {
	Name   string `yaml:"name"`
	Input  string `yaml:"input"`  // any libavformat URL or lavfi:<graph>
	Ladder string `yaml:"ladder"` // file or shipped ladder name; default "default"
	// Realtime paces file and lavfi inputs at 1x (network inputs never are).
	Realtime *bool `yaml:"realtime"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.HTTP.Address == "" {
		c.HTTP.Address = ":8080"
	}
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	for i := range c.Streams {
		if c.Streams[i].Ladder == "" {
			c.Streams[i].Ladder = "default"
		}
		if c.Streams[i].Realtime == nil {
			t := true
			c.Streams[i].Realtime = &t
		}
	}
}

// Error is one configuration problem.
type Error struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return ErrInvalid }

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return Parse(path, data)
}

// Parse decodes and validates configuration bytes; file names the source in
// messages.
func Parse(file string, data []byte) (*Config, error) {
	c := &Config{file: file}
	if len(strings.TrimSpace(string(data))) > 0 {
		c.lines = fieldLines(data)
		if err := yaml.UnmarshalWithOptions(data, c, yaml.Strict()); err != nil {
			return nil, decodeError(file, err, c.lines)
		}
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeError(file string, err error, lines map[string]int) error {
	e := &Error{File: file, Msg: err.Error()}
	var ye yaml.Error
	if errors.As(err, &ye) {
		e.Msg = ye.GetMessage()
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line = tk.Position.Line
		}
	}
	if i := strings.IndexAny(e.Msg, "\r\n"); i >= 0 {
		e.Msg = e.Msg[:i]
	}
	// Name the deepest field on that line, as validation errors do.
	for p, l := range lines {
		if l == e.Line && len(p) > len(e.Field) {
			e.Field = p
		}
	}
	return e
}

// fieldLines maps dotted field paths ("streams[1].input") to their lines.
func fieldLines(data []byte) map[string]int {
	lines := map[string]int{}
	f, err := parser.ParseBytes(data, 0)
	if err != nil || len(f.Docs) == 0 {
		return lines
	}
	var walk func(n ast.Node, path string)
	walk = func(n ast.Node, path string) {
		switch v := n.(type) {
		case *ast.MappingNode:
			for _, mv := range v.Values {
				walk(mv, path)
			}
		case *ast.MappingValueNode:
			p := v.Key.String()
			if path != "" {
				p = path + "." + p
			}
			lines[p] = v.Key.GetToken().Position.Line
			walk(v.Value, p)
		case *ast.SequenceNode:
			for i, item := range v.Values {
				p := fmt.Sprintf("%s[%d]", path, i)
				lines[p] = item.GetToken().Position.Line
				walk(item, p)
			}
		}
	}
	walk(f.Docs[0].Body, "")
	return lines
}

// lineOf returns the line of a field, or of its nearest parent in the file.
func (c *Config) lineOf(field string) int {
	for p := field; p != ""; {
		if l, ok := c.lines[p]; ok {
			return l
		}
		if i := strings.LastIndexAny(p, ".["); i > 0 {
			p = p[:i]
		} else {
			break
		}
	}
	return 0
}

// Validate checks the configuration; all problems are returned together.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &Error{File: c.file, Line: c.lineOf(field), Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if (c.HTTP.TLSCert == "") != (c.HTTP.TLSKey == "") {
		add("http.tls_cert", "tls_cert and tls_key must be set together")
	}
	seen := map[string]int{}
	for i, s := range c.Streams {
		p := fmt.Sprintf("streams[%d]", i)
		switch {
		case s.Name == "":
			add(p+".name", "is required")
		case pipeline.ValidStreamName(s.Name) != nil:
			add(p+".name", "%q: use letters, digits, '-' and '_' (at most 64)", s.Name)
		default:
			if j, dup := seen[s.Name]; dup {
				add(p+".name", "%q is already used by streams[%d]", s.Name, j)
			}
			seen[s.Name] = i
		}
		if s.Input == "" {
			add(p+".input", "is required")
		}
	}
	return errors.Join(errs...)
}
