package hls

import (
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/prism-streaming/prism/pipeline"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.Defaults()
	if c.PartTarget != 200*time.Millisecond || c.SegmentCount != 7 || len(c.CORSOrigins) != 1 || c.CORSOrigins[0] != "*" ||
		c.MaxBlockingRequests != 4096 || c.MaxBlockingPerClient != 64 || c.ReadyTimeout != 5*time.Second || c.ReaderBuffer != 1024 {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestConfigYAML(t *testing.T) {
	var c Config
	err := yaml.UnmarshalWithOptions([]byte(`
part_target: 300ms
segment_count: 9
cors_origins: ["https://player.example", "http://localhost:3000"]
max_blocking_requests: 100
max_blocking_per_client: 10
ready_timeout: 2s
reader_buffer: 512
`), &c, yaml.Strict())
	if err != nil {
		t.Fatal(err)
	}
	want := Config{PartTarget: 300 * time.Millisecond, SegmentCount: 9, CORSOrigins: []string{"https://player.example", "http://localhost:3000"},
		MaxBlockingRequests: 100, MaxBlockingPerClient: 10, ReadyTimeout: 2 * time.Second, ReaderBuffer: 512}
	if c.PartTarget != want.PartTarget || c.SegmentCount != want.SegmentCount || strings.Join(c.CORSOrigins, " ") != strings.Join(want.CORSOrigins, " ") ||
		c.MaxBlockingRequests != want.MaxBlockingRequests || c.MaxBlockingPerClient != want.MaxBlockingPerClient || c.ReadyTimeout != want.ReadyTimeout || c.ReaderBuffer != want.ReaderBuffer {
		t.Fatalf("got %+v, want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, ca := range []struct {
		name string
		conf func(*Config)
		want string
	}{
		{"part too short", func(c *Config) { c.PartTarget = 50 * time.Millisecond }, "hls.part_target: must be between 100ms and 2s, got 50ms"},
		{"part too long", func(c *Config) { c.PartTarget = 3 * time.Second }, "hls.part_target: must be between 100ms and 2s, got 3s"},
		{"few segments", func(c *Config) { c.SegmentCount = 3 }, "hls.segment_count: must be between 7 (the Low-Latency HLS minimum) and 60, got 3"},
		{"no origins", func(c *Config) { c.CORSOrigins = []string{} }, "hls.cors_origins: must list at least one origin"},
		{"bad origin", func(c *Config) { c.CORSOrigins = []string{"*", "player.example"} }, `hls.cors_origins[1]: invalid origin "player.example"`},
		{"origin with path", func(c *Config) { c.CORSOrigins = []string{"https://a.example/x"} }, `hls.cors_origins[0]: invalid origin`},
		{"no blocking", func(c *Config) { c.MaxBlockingRequests = -1 }, "hls.max_blocking_requests: must be at least 1, got -1"},
		{"no blocking per client", func(c *Config) { c.MaxBlockingPerClient = -1 }, "hls.max_blocking_per_client: must be at least 1, got -1"},
		{"ready timeout", func(c *Config) { c.ReadyTimeout = 2 * time.Minute }, "hls.ready_timeout: must be between 0s and 1m0s, got 2m0s"},
		{"small buffer", func(c *Config) { c.ReaderBuffer = 4 }, "hls.reader_buffer: must be at least 16 packets, got 4"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			var c Config
			ca.conf(&c)
			c.Defaults()
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), ca.want) {
				t.Fatalf("got %v, want %q", err, ca.want)
			}
		})
	}
	// Every problem is reported, not only the first.
	c := Config{PartTarget: time.Hour, SegmentCount: 1}
	c.Defaults()
	if err := c.Validate(); err == nil || strings.Count(err.Error(), "hls.") != 2 {
		t.Fatalf("want two errors, got %v", err)
	}
	// And Start refuses a bad configuration, or no registry.
	s := &Server{Streams: &pipeline.Registry{}, Config: Config{PartTarget: time.Millisecond}}
	if err := s.Start(); err == nil || !strings.Contains(err.Error(), "hls.part_target") {
		t.Fatalf("Start with a bad configuration: %v", err)
	}
	if err := (&Server{}).Start(); err == nil {
		t.Fatal("Start without a registry")
	}
}
