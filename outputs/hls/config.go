package hls

import (
	"fmt"
	"net/url"
	"time"

	"github.com/prism-streaming/prism/internal/yamlfile"
)

// Limits of the configuration. Parts shorter than 100 ms cost more in
// requests than they save in latency; longer than 2 s is no longer low
// latency. Seven segments is what gohlslib's Low-Latency variant requires.
const (
	minPartTarget   = 100 * time.Millisecond
	maxPartTarget   = 2 * time.Second
	minSegmentCount = 7
	maxSegmentCount = 60
	maxReadyTimeout = time.Minute
)

// Config is the `hls:` section of the service configuration.
type Config struct {
	// PartTarget is the wanted duration of an LL-HLS part. The served part
	// duration is the nearest multiple of every rung's frame interval at or
	// above it, so that parts line up across rungs. Default 200ms.
	PartTarget time.Duration `yaml:"part_target"`
	// SegmentCount is how many complete segments each media playlist keeps.
	// A segment is one GOP of the ladder. Default 7, the LL-HLS minimum.
	SegmentCount int `yaml:"segment_count"`
	// CORSOrigins are the origins allowed to read the streams from a browser:
	// "*" or "scheme://host[:port]". Default ["*"].
	CORSOrigins []string `yaml:"cors_origins"`
	// MaxBlockingRequests bounds the requests waiting at once for a future
	// part or playlist update (blocking reload, preload hints, a starting
	// stream), over all streams; more are answered 503. Default 4096.
	MaxBlockingRequests int `yaml:"max_blocking_requests"`
	// MaxBlockingPerClient bounds the blocking requests of one client
	// address (IPv6: one /64), so that one client cannot take all of
	// max_blocking_requests; more are answered 503. A player holds a few
	// (a playlist and a preload hint per rendition); players behind one NAT
	// share an address. The peer's address is used as the connection shows
	// it: X-Forwarded-For is not trusted. Default 64.
	MaxBlockingPerClient int `yaml:"max_blocking_per_client"`
	// ReadyTimeout is how long a request for a stream that has no complete
	// segment yet waits before it is answered 503. Default 5s.
	ReadyTimeout time.Duration `yaml:"ready_timeout"`
	// ReaderBuffer is the per-rung packet buffer between the transcoder and
	// a muxer; a muxer that falls further behind loses packets (and the
	// server repairs the gap, see gapfill.go). Default 1024.
	ReaderBuffer int `yaml:"reader_buffer"`
}

// Defaults fills zero values with the defaults.
func (c *Config) Defaults() {
	if c.PartTarget == 0 {
		c.PartTarget = 200 * time.Millisecond
	}
	if c.SegmentCount == 0 {
		c.SegmentCount = minSegmentCount
	}
	if c.CORSOrigins == nil {
		c.CORSOrigins = []string{"*"}
	}
	if c.MaxBlockingRequests == 0 {
		c.MaxBlockingRequests = 4096
	}
	if c.MaxBlockingPerClient == 0 {
		c.MaxBlockingPerClient = 64
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 5 * time.Second
	}
	if c.ReaderBuffer == 0 {
		c.ReaderBuffer = 1024
	}
}

// Validate reports every invalid field as a *yamlfile.FieldErrors, fields
// relative to the section, so that the configuration file can locate them.
func (c *Config) Validate() error {
	errs := yamlfile.FieldErrors{Section: "hls"}
	if c.PartTarget < minPartTarget || c.PartTarget > maxPartTarget {
		errs.Addf("part_target", "must be between %s and %s, got %s", minPartTarget, maxPartTarget, c.PartTarget)
	}
	if c.SegmentCount < minSegmentCount || c.SegmentCount > maxSegmentCount {
		errs.Addf("segment_count", "must be between %d (the Low-Latency HLS minimum) and %d, got %d", minSegmentCount, maxSegmentCount, c.SegmentCount)
	}
	if len(c.CORSOrigins) == 0 {
		errs.Addf("cors_origins", `must list at least one origin ("*" allows every origin)`)
	}
	for i, o := range c.CORSOrigins {
		if err := validOrigin(o); err != nil {
			errs.Addf(yamlfile.Index("cors_origins", i), "%v", err)
		}
	}
	if c.MaxBlockingRequests < 1 {
		errs.Addf("max_blocking_requests", "must be at least 1, got %d", c.MaxBlockingRequests)
	}
	if c.MaxBlockingPerClient < 1 {
		errs.Addf("max_blocking_per_client", "must be at least 1, got %d", c.MaxBlockingPerClient)
	}
	if c.ReadyTimeout < 0 || c.ReadyTimeout > maxReadyTimeout {
		errs.Addf("ready_timeout", "must be between 0s and %s, got %s", maxReadyTimeout, c.ReadyTimeout)
	}
	if c.ReaderBuffer < 16 {
		errs.Addf("reader_buffer", "must be at least 16 packets, got %d", c.ReaderBuffer)
	}
	return errs.Err()
}

// validOrigin accepts "*" or a serialized origin as browsers send it in the
// Origin header: scheme://host[:port], nothing else.
func validOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf(`invalid origin %q: use "*" or scheme://host[:port], e.g. "https://player.example.com"`, o)
	}
	return nil
}
