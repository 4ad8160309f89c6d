package webrtc

import (
	"net"
	"net/netip"
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
	// MaxSessionsPerIP bounds the sessions of one client address (IPv6: one
	// /64, what a single host commonly holds), so that one client cannot
	// take every slot; offers beyond it get 503. Viewers behind one NAT
	// share an address. The peer's address is used as the connection shows
	// it: X-Forwarded-For is not trusted. Default 20.
	MaxSessionsPerIP int `yaml:"max_sessions_per_ip"`
	// MaxSessionsPerStream bounds the sessions of one stream, so that one
	// popular (or targeted) stream leaves room for the others; offers beyond
	// it get 503. 0 means max_sessions. Default 0.
	MaxSessionsPerStream int `yaml:"max_sessions_per_stream"`
	// OfferTimeout is how long a client has to send the body of a WHEP
	// request once its headers are in; a slower one gets 408. The body is
	// read before a session slot is taken, so a stalled client holds none.
	// Default 5s.
	OfferTimeout time.Duration `yaml:"offer_timeout"`
	// MaxCandidates bounds the ICE candidates a viewer may send for one
	// session, in its offer and trickled (PATCH) together: an offer with
	// more gets 400, a PATCH beyond it 429 (the session keeps the ones it
	// has). Browsers send a handful. Default 50.
	MaxCandidates int `yaml:"max_candidates"`
	// DenyCandidateCIDRs are address ranges (CIDRs or single addresses)
	// that viewers' ICE candidates are ignored in, so that a viewer cannot
	// make the server send to them. Loopback, link-local, unspecified,
	// multicast and broadcast addresses are always ignored; private ranges
	// are not by default (LAN viewers use them). Default none.
	DenyCandidateCIDRs []string `yaml:"deny_candidate_cidrs"`
	// HandshakeTimeout closes a session whose ICE and DTLS have not
	// completed this long after the answer. Default 10s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// KeyframeOnJoin asks for an IDR (on every rung, within the job's
	// keyframe budget) when a viewer's offer is answered, so that one is
	// ready when ICE and DTLS are done instead of at the next GOP; a viewer
	// that connects too long after it asks once more. Default true.
	KeyframeOnJoin bool `yaml:"keyframe_on_join"`
	// KeyframeMinInterval is a flood limit only: one stream's viewers pass
	// on at most one keyframe request per reason (join, PLI/FIR, switch,
	// pin, drop) per interval, the rest ride on one sent at its end. The
	// IDRs themselves are spaced by the job's keyframe budget, the ladder's
	// keyframe_min_interval (it was this setting's job before, hence the
	// name). Default 100ms.
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
	// DownThreshold: the viewer moves down when a queue builds at the
	// bottleneck (the estimator's delay signal) and the estimate, cut to
	// 0.85 × what gets through, is below this fraction of what the current
	// rung needs. Default 0.9.
	DownThreshold float64 `yaml:"down_threshold"`
	// LossThreshold: the viewer also moves down when the loss fraction
	// reported through transport-cc feedback over the last second stays
	// above this. Random loss below it is NACK's job, not a reason to lose
	// resolution. Default 0.1.
	LossThreshold float64 `yaml:"loss_threshold"`
	// DownHold is how long congestion must last before moving down. The
	// delay signal is already the least delay over 150 ms. Default 150ms.
	DownHold time.Duration `yaml:"down_hold"`
	// UpHold is how long a viewer must go without congestion (and without
	// a switch) before the server probes the next rung up. Default 1s.
	UpHold time.Duration `yaml:"up_hold"`
	// ProbeDuration is how long the server sends padding up to the next
	// rung's bitrate, watching for congestion, before it moves up. Default 1s.
	ProbeDuration time.Duration `yaml:"probe_duration"`
	// ProbeBackoff is the wait after a failed probe; it doubles after each
	// further failure, up to ProbeBackoffMax. Default 4s.
	ProbeBackoff time.Duration `yaml:"probe_backoff"`
	// ProbeBackoffMax caps the wait after failed probes. Default 30s.
	ProbeBackoffMax time.Duration `yaml:"probe_backoff_max"`
}

// maxCandidatesLimit caps webrtc.max_candidates: each remote candidate costs
// connectivity checks against every local one.
const maxCandidatesLimit = 1000

// Defaults sets every field to its default.
func (c *Config) Defaults() {
	*c = Config{
		UDPPort:             8189,
		TCPPort:             8189,
		AllowOrigin:         "*",
		MaxSessions:         500,
		MaxSessionsPerIP:    20,
		OfferTimeout:        5 * time.Second,
		MaxCandidates:       50,
		HandshakeTimeout:    10 * time.Second,
		KeyframeOnJoin:      true,
		KeyframeMinInterval: 100 * time.Millisecond,
		ViewerQueue:         256,
		ABR: ABRConfig{
			Enabled:         true,
			InitialBitrate:  2_500_000,
			DownThreshold:   0.9,
			LossThreshold:   0.1,
			DownHold:        150 * time.Millisecond,
			UpHold:          time.Second,
			ProbeDuration:   time.Second,
			ProbeBackoff:    4 * time.Second,
			ProbeBackoffMax: 30 * time.Second,
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
	if c.MaxSessionsPerIP < 1 {
		errs.Addf("max_sessions_per_ip", "must be at least 1, got %d", c.MaxSessionsPerIP)
	}
	if c.MaxSessionsPerStream < 0 {
		errs.Addf("max_sessions_per_stream", "must be at least 0 (0 means max_sessions), got %d", c.MaxSessionsPerStream)
	}
	if c.OfferTimeout < 100*time.Millisecond || c.OfferTimeout > time.Minute {
		errs.Addf("offer_timeout", "must be 100ms..1m, got %s", c.OfferTimeout)
	}
	if c.MaxCandidates < 1 || c.MaxCandidates > maxCandidatesLimit {
		errs.Addf("max_candidates", "must be 1..%d, got %d", maxCandidatesLimit, c.MaxCandidates)
	}
	for i, cidr := range c.DenyCandidateCIDRs {
		if _, err := parsePrefix(cidr); err != nil {
			errs.Addf(yamlfile.Index("deny_candidate_cidrs", i), "%q is not a CIDR or an IP address", cidr)
		}
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
	if a.ProbeBackoff < 100*time.Millisecond || a.ProbeBackoff > 5*time.Minute {
		errs.Addf("abr.probe_backoff", "must be 100ms..5m, got %s", a.ProbeBackoff)
	}
	if a.ProbeBackoffMax < a.ProbeBackoff || a.ProbeBackoffMax > 5*time.Minute {
		errs.Addf("abr.probe_backoff_max", "must be probe_backoff..5m, got %s", a.ProbeBackoffMax)
	}
	return errs.Err()
}

// sessionsPerStream is the effective per-stream cap.
func (c *Config) sessionsPerStream() int {
	if c.MaxSessionsPerStream == 0 {
		return c.MaxSessions
	}
	return c.MaxSessionsPerStream
}

// parsePrefix reads a CIDR, or a single address as the prefix holding only it.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}
