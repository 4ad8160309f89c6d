package webrtc

import (
	"net"
	"strings"
	"time"

	"github.com/pion/stun/v4"

	"github.com/prism-streaming/prism/internal/yamlfile"
)

// Config is the `webrtc:` section of Prism's configuration. Call Defaults
// before decoding a file over it, so that keys the file omits keep their
// defaults and keys it sets to zero stay zero.
type Config struct {
	// UDPPort is the one UDP port every session shares (ICE UDP mux), so a
	// firewall needs a single rule. 0 picks a free port (tests). Default 8189.
	UDPPort int `yaml:"udp_port"`
	// TCPPort is the ICE-TCP fallback for viewers whose networks block UDP;
	// it may be the same number as UDPPort. 0 turns ICE-TCP off. Default 8189.
	TCPPort int `yaml:"tcp_port"`
	// NAT1To1IPs are public addresses that replace the host's own in ICE
	// candidates, for servers behind a 1:1 NAT (cloud VMs). Default none.
	NAT1To1IPs []string `yaml:"nat_1to1_ips"`
	// ICEServers are announced to viewers in WHEP Link headers. TURN servers
	// are also used by the server itself, for relay candidates; STUN is not
	// (reflexive candidates would need a second port: use nat_1to1_ips).
	ICEServers []ICEServer `yaml:"ice_servers"`
	// AllowOrigin is the CORS Access-Control-Allow-Origin. Default "*".
	AllowOrigin string `yaml:"allow_origin"`
	// MaxSessions bounds concurrent WHEP sessions, connected or connecting;
	// offers beyond it get 503. Default 500.
	MaxSessions int `yaml:"max_sessions"`
	// HandshakeTimeout closes a session whose ICE and DTLS have not
	// completed this long after the answer. Default 10s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// KeyframeOnJoin forces an IDR (on every rung, rate limited) when a
	// viewer connects, so its first frame does not wait for the next GOP.
	// Default true.
	KeyframeOnJoin bool `yaml:"keyframe_on_join"`
	// KeyframeMinInterval is the shortest time between two forced IDRs of
	// one stream, whatever asks for them (joins, PLI/FIR, moves down, pins,
	// queue overflows): one lossy viewer cannot inflate every rung's
	// bitrate. Requests inside the interval share one IDR at its end.
	// Default 500ms.
	KeyframeMinInterval time.Duration `yaml:"keyframe_min_interval"`
	// ViewerQueue is how many media units (a video frame or an audio
	// packet) a viewer may have waiting before it drops. Default 256
	// (about 2 s of one rung with audio).
	ViewerQueue int `yaml:"viewer_queue"`
	// ABR tunes the per-viewer rung choice.
	ABR ABRConfig `yaml:"abr"`
}

// ICEServer is a STUN or TURN server.
type ICEServer struct {
	URLs       []string `yaml:"urls"`       // stun:host:port, turn:host:port?transport=udp, turns:...
	Username   string   `yaml:"username"`   // TURN only
	Credential string   `yaml:"credential"` // TURN only
}

// ABRConfig tunes how the server picks a rung per viewer. A rung "needs" its
// configured video bitrate plus the audio bitrate.
type ABRConfig struct {
	// Enabled switches rungs from the bandwidth estimate. When false every
	// viewer stays on the rung chosen from InitialBitrate (or pinned).
	// Default true.
	Enabled bool `yaml:"enabled"`
	// InitialBitrate (bits/s) seeds the bandwidth estimator and picks the
	// first rung: the best one that needs no more. Default 2500000.
	InitialBitrate int `yaml:"initial_bitrate"`
	// DownThreshold: the viewer moves down when the bandwidth estimate,
	// having just fallen (the estimator's congestion signal), is below this
	// fraction of what the current rung needs. It sits below 0.85 because
	// pion's GCC answers any single overuse with 0.85 × the received rate.
	// Default 0.8.
	DownThreshold float64 `yaml:"down_threshold"`
	// LossThreshold: the viewer also moves down when the loss fraction
	// reported through transport-cc feedback stays above this. Default 0.05.
	LossThreshold float64 `yaml:"loss_threshold"`
	// DownHold is how long congestion must last before moving down. Default 400ms.
	DownHold time.Duration `yaml:"down_hold"`
	// UpHold is how long a viewer must go without congestion (and without
	// a switch) before the server probes the next rung up. Default 1s.
	UpHold time.Duration `yaml:"up_hold"`
	// ProbeDuration is how long the server sends padding up to the next
	// rung's bitrate, watching for congestion, before it moves up. Default 1s.
	ProbeDuration time.Duration `yaml:"probe_duration"`
	// ProbeBackoffMax caps the wait after failed probes (it doubles from
	// ProbeDuration after each failure). Default 4s.
	ProbeBackoffMax time.Duration `yaml:"probe_backoff_max"`
}

// Defaults sets every field to its default.
func (c *Config) Defaults() {
	*c = Config{
		UDPPort:             8189,
		TCPPort:             8189,
		AllowOrigin:         "*",
		MaxSessions:         500,
		HandshakeTimeout:    10 * time.Second,
		KeyframeOnJoin:      true,
		KeyframeMinInterval: 500 * time.Millisecond,
		ViewerQueue:         256,
		ABR: ABRConfig{
			Enabled:         true,
			InitialBitrate:  2_500_000,
			DownThreshold:   0.8,
			LossThreshold:   0.05,
			DownHold:        400 * time.Millisecond,
			UpHold:          time.Second,
			ProbeDuration:   time.Second,
			ProbeBackoffMax: 4 * time.Second,
		},
	}
}

// Validate reports every problem as a *yamlfile.FieldErrors matching
// ErrInvalidConfig, fields relative to the section, so that the
// configuration file can locate them.
func (c *Config) Validate() error {
	errs := yamlfile.FieldErrors{Section: "webrtc", Sentinel: ErrInvalidConfig}
	if c.UDPPort < 0 || c.UDPPort > 65535 {
		errs.Addf("udp_port", "must be 0..65535 (0 picks a free port), got %d", c.UDPPort)
	}
	if c.TCPPort < 0 || c.TCPPort > 65535 {
		errs.Addf("tcp_port", "must be 0..65535 (0 turns ICE-TCP off), got %d", c.TCPPort)
	}
	for i, ip := range c.NAT1To1IPs {
		if net.ParseIP(ip) == nil {
			errs.Addf(yamlfile.Index("nat_1to1_ips", i), "%q is not an IP address", ip)
		}
	}
	for i, s := range c.ICEServers {
		field := yamlfile.Index("ice_servers", i)
		if len(s.URLs) == 0 {
			errs.Addf(field+".urls", "must list at least one stun:, turn: or turns: URL")
		}
		for j, u := range s.URLs {
			uri, err := stun.ParseURI(u)
			if err != nil {
				errs.Addf(yamlfile.Index(field+".urls", j), "%q: %v", u, err)
				continue
			}
			turn := uri.Scheme == stun.SchemeTypeTURN || uri.Scheme == stun.SchemeTypeTURNS
			if turn && (s.Username == "" || s.Credential == "") {
				errs.Addf(field, "TURN server %q needs username and credential", u)
			}
		}
	}
	if strings.ContainsAny(c.AllowOrigin, "\r\n") {
		errs.Addf("allow_origin", "must be a single header value")
	}
	if c.MaxSessions < 1 {
		errs.Addf("max_sessions", "must be at least 1, got %d", c.MaxSessions)
	}
	if c.HandshakeTimeout < time.Second {
		errs.Addf("handshake_timeout", "must be at least 1s, got %s", c.HandshakeTimeout)
	}
	if c.KeyframeMinInterval < 0 || c.KeyframeMinInterval > 10*time.Second {
		errs.Addf("keyframe_min_interval", "must be 0..10s, got %s", c.KeyframeMinInterval)
	}
	if c.ViewerQueue < 16 {
		errs.Addf("viewer_queue", "must be at least 16, got %d", c.ViewerQueue)
	}
	a := c.ABR
	if a.InitialBitrate < 50_000 {
		errs.Addf("abr.initial_bitrate", "must be at least 50000 bits/s, got %d", a.InitialBitrate)
	}
	if a.DownThreshold <= 0 || a.DownThreshold > 1 {
		errs.Addf("abr.down_threshold", "must be in (0, 1], got %g", a.DownThreshold)
	}
	if a.LossThreshold <= 0 || a.LossThreshold >= 1 {
		errs.Addf("abr.loss_threshold", "must be in (0, 1), got %g", a.LossThreshold)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"abr.down_hold", a.DownHold}, {"abr.up_hold", a.UpHold}, {"abr.probe_duration", a.ProbeDuration}} {
		if d.v < 100*time.Millisecond || d.v > time.Minute {
			errs.Addf(d.field, "must be 100ms..1m, got %s", d.v)
		}
	}
	if a.ProbeBackoffMax < a.ProbeDuration || a.ProbeBackoffMax > 5*time.Minute {
		errs.Addf("abr.probe_backoff_max", "must be probe_duration..5m, got %s", a.ProbeBackoffMax)
	}
	return errs.Err()
}
