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
	"github.com/prism-streaming/prism/outputs/hls"
	"github.com/prism-streaming/prism/outputs/webrtc"
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
	// NATS coordinates jobs and carries media between nodes.
	NATS NATS `yaml:"nats"`
	// Node is this process's part in the cluster.
	Node Node `yaml:"node"`
	// HLS is the LL-HLS output at /hls/<stream>/index.m3u8.
	HLS hls.Config `yaml:"hls"`
	// WebRTC is the WHEP output at /whep/<stream>.
	WebRTC webrtc.Config `yaml:"webrtc"`

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

// NATS selects the embedded server (the default) or an external cluster.
type NATS struct {
	// URL of an external cluster ("nats://a:4222,nats://b:4222"); empty
	// runs an embedded server.
	URL string `yaml:"url"`
	// Authentication and TLS for URL.
	Creds    string `yaml:"creds"`
	NKeySeed string `yaml:"nkey_seed"`
	Token    string `yaml:"token"`
	TLSCA    string `yaml:"tls_ca"`
	TLSCert  string `yaml:"tls_cert"`
	TLSKey   string `yaml:"tls_key"`
	// Embedded server: client listen address (default 127.0.0.1 on a free
	// port, reachable by this node's worker processes only) and routes to
	// peers to form a cluster of embedded servers.
	Listen  string      `yaml:"listen"`
	Cluster NATSCluster `yaml:"cluster"`
	// Replicas of the job buckets and stream: 1 for a single embedded
	// server, 3 in a cluster (the default whenever URL or Cluster is set).
	Replicas int `yaml:"replicas"`
}

// NATSCluster routes the embedded server to its peers.
type NATSCluster struct {
	Name   string   `yaml:"name"`
	Listen string   `yaml:"listen"`
	Routes []string `yaml:"routes"`
}

// Node is this process in the cluster.
type Node struct {
	ID string `yaml:"id"` // default: the host name
	// Capacity in encoded pixels per second (0: what `prism bench
	// --calibrate` saved in the data directory, else from the CPU count).
	// Negative: serve only, take no transcoding jobs.
	Capacity float64 `yaml:"capacity"`
	// Workers runs each job's FFmpeg work in its own child process (the
	// default), so a crash ends only that job. false runs jobs in-process.
	Workers *bool `yaml:"workers"`
}

// Stream is a stream pulled from a URL at start-up.
type Stream struct {
	Name   string `yaml:"name"`
	Input  string `yaml:"input"`  // any libavformat URL or lavfi:<graph>
	Ladder string `yaml:"ladder"` // file or shipped ladder name; default "default"
	// Realtime paces file and lavfi inputs at 1x (network inputs never are).
	Realtime *bool `yaml:"realtime"`
	// Publish pushes the ladder to other WebRTC servers (SFUs) over WHIP as
	// one simulcast track, a RID per rung.
	Publish []Publish `yaml:"publish"`
}

// Publish is a WHIP target.
type Publish struct {
	URL   string `yaml:"url"`
	Token string `yaml:"token"`
}

// New returns a configuration with every default: the output sections'
// defaults are set before a file is decoded over them, since some (webrtc)
// cannot tell an unset field from a zero one afterwards.
func New() *Config {
	c := &Config{}
	c.HLS.Defaults()
	c.WebRTC.Defaults()
	c.Defaults()
	return c
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.HTTP.Address == "" {
		c.HTTP.Address = ":8080"
	}
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	if c.NATS.Replicas == 0 {
		c.NATS.Replicas = 1
		if c.NATS.URL != "" || c.NATS.Cluster.Listen != "" {
			c.NATS.Replicas = 3
		}
	}
	c.HLS.Defaults()
	if c.Node.Workers == nil {
		t := true
		c.Node.Workers = &t
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
	c := New()
	c.file = file
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
	if n := c.NATS.Replicas; n < 1 || n > 5 {
		add("nats.replicas", "must be between 1 and 5")
	}
	if c.NATS.URL != "" && (c.NATS.Listen != "" || c.NATS.Cluster.Listen != "") {
		add("nats.url", "an external cluster (url) and an embedded server (listen, cluster) exclude each other")
	}
	if c.NATS.Cluster.Listen != "" && c.NATS.Cluster.Name == "" {
		add("nats.cluster.name", "is required with cluster.listen")
	}
	if c.Node.ID != "" && pipeline.ValidStreamName(c.Node.ID) != nil {
		add("node.id", "%q: use letters, digits, '-' and '_'", c.Node.ID)
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
		for j, pub := range s.Publish {
			if !strings.HasPrefix(pub.URL, "http://") && !strings.HasPrefix(pub.URL, "https://") {
				add(fmt.Sprintf("%s.publish[%d].url", p, j), "%q is not an http(s) WHIP endpoint", pub.URL)
			}
		}
	}
	// Output sections validate themselves; their messages start with the
	// field path ("hls.part_target: ..."), which gives the line.
	for _, sec := range []struct {
		name string
		v    interface{ Validate() error }
	}{{"hls.", &c.HLS}, {"webrtc.", &c.WebRTC}} {
		name, err := sec.name, sec.v.Validate()
		if err == nil {
			continue
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if i := strings.Index(line, name); i > 0 {
				line = line[i:] // drop a sentinel's text in front of the field
			}
			field, msg, _ := strings.Cut(line, ": ")
			errs = append(errs, &Error{File: c.file, Line: c.lineOf(field), Field: field, Msg: msg})
		}
	}
	return errors.Join(errs...)
}
