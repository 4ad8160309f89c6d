package webrtc

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
)

func TestConfigDefaultsAreValid(t *testing.T) {
	var c Config
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.UDPPort != 8189 || c.TCPPort != 8189 || !c.KeyframeOnJoin || c.KeyframeMinInterval != 100*time.Millisecond ||
		!c.ABR.Enabled || c.ABR.InitialBitrate != 2_500_000 || c.MaxSessionsPerIP != 20 || c.MaxSessionsPerStream != 0 ||
		c.sessionsPerStream() != c.MaxSessions || c.OfferTimeout != 5*time.Second || c.MaxCandidates != 50 ||
		len(c.DenyCandidateCIDRs) != 0 {
		t.Fatalf("defaults %+v", c)
	}
}

// TestConfigYAML: the keys are snake_case, durations read as "500ms", and a
// file overrides only what it sets (defaults applied first).
func TestConfigYAML(t *testing.T) {
	var c Config
	c.Defaults()
	doc := `
udp_port: 9000
tcp_port: 0
nat_1to1_ips: [203.0.113.7]
ice_servers:
  - urls: [stun:stun.example.net:3478]
  - urls: ["turn:turn.example.net:3478?transport=udp"]
    username: prism
    credential: secret
keyframe_min_interval: 1s
max_sessions_per_ip: 4
max_sessions_per_stream: 100
offer_timeout: 2s
max_candidates: 20
deny_candidate_cidrs: [10.0.0.0/8, 192.0.2.7]
abr:
  initial_bitrate: 1000000
  up_hold: 2s
`
	if err := yaml.UnmarshalWithOptions([]byte(doc), &c, yaml.Strict()); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.UDPPort != 9000 || c.TCPPort != 0 || c.NAT1To1IPs[0] != "203.0.113.7" || len(c.ICEServers) != 2 ||
		c.ICEServers[1].Username != "prism" || c.KeyframeMinInterval != time.Second ||
		c.ABR.InitialBitrate != 1_000_000 || c.ABR.UpHold != 2*time.Second || c.ABR.DownHold != 150*time.Millisecond ||
		c.MaxSessionsPerIP != 4 || c.sessionsPerStream() != 100 || c.OfferTimeout != 2*time.Second || c.MaxCandidates != 20 ||
		len(c.DenyCandidateCIDRs) != 2 {
		t.Fatalf("decoded %+v", c)
	}
	if err := yaml.UnmarshalWithOptions([]byte("udp_prot: 1\n"), &c, yaml.Strict()); err == nil {
		t.Fatal("an unknown key must be refused")
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for _, ca := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"udp port", func(c *Config) { c.UDPPort = 70000 }, "webrtc.udp_port: must be 0..65535"},
		{"tcp port", func(c *Config) { c.TCPPort = -1 }, "webrtc.tcp_port: must be 0..65535"},
		{"nat ip", func(c *Config) { c.NAT1To1IPs = []string{"1.2.3.4", "example.com"} }, `webrtc.nat_1to1_ips[1]: "example.com" is not an IP address`},
		{"ice url", func(c *Config) { c.ICEServers = []ICEServer{{URLs: []string{"http://x"}}} }, "webrtc.ice_servers[0].urls[0]:"},
		{"no urls", func(c *Config) { c.ICEServers = []ICEServer{{}} }, "webrtc.ice_servers[0].urls: must list"},
		{"turn creds", func(c *Config) { c.ICEServers = []ICEServer{{URLs: []string{"turn:t.example:3478"}}} }, "webrtc.ice_servers[0]: TURN server"},
		{"sessions", func(c *Config) { c.MaxSessions = 0 }, "webrtc.max_sessions: must be at least 1"},
		{"handshake", func(c *Config) { c.HandshakeTimeout = 0 }, "webrtc.handshake_timeout: must be at least 1s"},
		{"per ip", func(c *Config) { c.MaxSessionsPerIP = 0 }, "webrtc.max_sessions_per_ip: must be at least 1"},
		{"per stream", func(c *Config) { c.MaxSessionsPerStream = -1 }, "webrtc.max_sessions_per_stream: must be at least 0"},
		{"offer timeout", func(c *Config) { c.OfferTimeout = 0 }, "webrtc.offer_timeout: must be 100ms..1m"},
		{"candidates", func(c *Config) { c.MaxCandidates = 0 }, "webrtc.max_candidates: must be 1..1000"},
		{"deny cidr", func(c *Config) { c.DenyCandidateCIDRs = []string{"10.0.0.0/8", "10.0.0.0/40"} }, `webrtc.deny_candidate_cidrs[1]: "10.0.0.0/40" is not a CIDR`},
		{"keyframe", func(c *Config) { c.KeyframeMinInterval = time.Minute }, "webrtc.keyframe_min_interval: must be 0..10s"},
		{"queue", func(c *Config) { c.ViewerQueue = 4 }, "webrtc.viewer_queue: must be at least 16"},
		{"initial", func(c *Config) { c.ABR.InitialBitrate = 10 }, "webrtc.abr.initial_bitrate: must be at least 50000"},
		{"threshold", func(c *Config) { c.ABR.DownThreshold = 1.5 }, "webrtc.abr.down_threshold: must be in (0, 1]"},
		{"loss", func(c *Config) { c.ABR.LossThreshold = 0 }, "webrtc.abr.loss_threshold: must be in (0, 1)"},
		{"hold", func(c *Config) { c.ABR.DownHold = time.Millisecond }, "webrtc.abr.down_hold: must be 100ms..1m"},
		{"backoff", func(c *Config) { c.ABR.ProbeBackoffMax = 10 * time.Millisecond }, "webrtc.abr.probe_backoff_max: must be probe_backoff..5m"},
		{"backoff start", func(c *Config) { c.ABR.ProbeBackoff = time.Millisecond }, "webrtc.abr.probe_backoff: must be 100ms..5m"},
		{"origin", func(c *Config) { c.AllowOrigin = "a\r\nb" }, "webrtc.allow_origin: must be a single header value"},
	} {
		t.Run(ca.name, func(t *testing.T) {
			var c Config
			c.Defaults()
			ca.edit(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), ca.want) {
				t.Fatalf("got %v, want %q", err, ca.want)
			}
		})
	}
	var c Config
	if err := c.Validate(); err == nil || strings.Count(err.Error(), "webrtc.") < 5 {
		t.Fatalf("a zero Config must report every problem at once, got %v", err)
	}
}
