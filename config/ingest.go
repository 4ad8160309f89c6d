package config

import (
	"net"
	"slices"
	"time"

	"github.com/prism-streaming/prism/internal/yamlfile"
	"github.com/prism-streaming/prism/pipeline"
)

// Ingest is push ingest: the listeners publishers connect to, and what a
// pushed stream becomes (a job on a ladder, like any other).
type Ingest struct {
	// RTMP listens for rtmp://host/live/<stream> ("" turns it off).
	RTMP string `yaml:"rtmp"`
	// RTMPS listens for RTMP over TLS with TLSCert and TLSKey ("" off).
	RTMPS   string `yaml:"rtmps"`
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// SRT listens (UDP) for callers with streamid=publish:<stream> ("" off).
	SRT string `yaml:"srt"`
	// SRTLatency is the receiver latency (the larger of the two sides'
	// applies).
	SRTLatency time.Duration `yaml:"srt_latency"`
	// WHIP serves /whip/<stream> on the HTTP address.
	WHIP *bool `yaml:"whip"`
	// Grace is how long a stream whose publisher dropped waits for it to
	// come back: the same job, the viewers stay.
	Grace time.Duration `yaml:"grace"`
	// Ladder is the ladder of pushed streams not listed in Streams.
	Ladder string `yaml:"ladder"`
	// OnlyListed refuses publishers of streams not listed in Streams.
	OnlyListed bool `yaml:"only_listed"`
	// Streams set a pushed stream's ladder, outputs, playback and rules.
	Streams []IngestStream `yaml:"streams"`
}

// Takeover rules: what a second publisher of a live stream gets.
const (
	TakeoverRefuse = "refuse" // refused, the first keeps publishing
	TakeoverNewest = "newest" // the newest publisher replaces the first
)

// IngestStream is one pushed stream's settings.
type IngestStream struct {
	Name     string   `yaml:"name"`
	Ladder   string   `yaml:"ladder"`
	Outputs  []string `yaml:"outputs"`
	Play     string   `yaml:"play"`
	Takeover string   `yaml:"takeover"`
	// Passphrase encrypts SRT (10 to 79 characters); SRT callers of the
	// stream must use it.
	Passphrase string `yaml:"passphrase"`
}

// Stream returns the settings of the pushed stream name, and whether it
// is listed.
func (i *Ingest) Stream(name string) (IngestStream, bool) {
	for _, s := range i.Streams {
		if s.Name == name {
			return s, true
		}
	}
	return IngestStream{Name: name, Ladder: i.Ladder, Play: PlayPublic, Takeover: TakeoverRefuse}, false
}

// WHIPEnabled reports whether /whip/ is served.
func (i *Ingest) WHIPEnabled() bool { return i.WHIP == nil || *i.WHIP }

// listenDefaults sets the default listeners before a file is decoded over
// them, so that `rtmp: ""` in a file turns RTMP off.
func (i *Ingest) listenDefaults() {
	i.RTMP, i.SRT = ":1935", ":8890"
}

// Defaults fills unset fields.
func (i *Ingest) Defaults() {
	if i.SRTLatency == 0 {
		i.SRTLatency = 120 * time.Millisecond
	}
	if i.WHIP == nil {
		t := true
		i.WHIP = &t
	}
	if i.Grace == 0 {
		i.Grace = 10 * time.Second
	}
	if i.Ladder == "" {
		i.Ladder = "default"
	}
	for k := range i.Streams {
		s := &i.Streams[k]
		if s.Ladder == "" {
			s.Ladder = i.Ladder
		}
		if s.Play == "" {
			s.Play = PlayPublic
		}
		if s.Takeover == "" {
			s.Takeover = TakeoverRefuse
		}
	}
}

// validate checks the section; keys are relative to it.
func (i *Ingest) validate(authEnabled bool, configured map[string]int) *yamlfile.FieldErrors {
	var errs yamlfile.FieldErrors
	for _, f := range []struct{ key, addr string }{{"rtmp", i.RTMP}, {"rtmps", i.RTMPS}, {"srt", i.SRT}} {
		if f.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(f.addr); err != nil {
			errs.Addf(f.key, "%q is not host:port or :port", f.addr)
		}
	}
	if i.RTMPS != "" && (i.TLSCert == "" || i.TLSKey == "") {
		errs.Addf("rtmps", "RTMPS needs tls_cert and tls_key")
	}
	if (i.TLSCert == "") != (i.TLSKey == "") {
		errs.Addf("tls_cert", "tls_cert and tls_key must be set together")
	}
	if i.SRTLatency < 20*time.Millisecond || i.SRTLatency > 10*time.Second {
		errs.Addf("srt_latency", "%s: between 20ms and 10s", i.SRTLatency)
	}
	if i.Grace < 0 || i.Grace > 10*time.Minute {
		errs.Addf("grace", "%s: between 0 and 10m", i.Grace)
	}
	seen := map[string]bool{}
	for k, s := range i.Streams {
		p := yamlfile.Index("streams", k)
		switch {
		case pipeline.ValidStreamName(s.Name) != nil:
			errs.Addf(p+".name", "%q: use letters, digits, '-' and '_' (at most 64)", s.Name)
		case seen[s.Name]:
			errs.Addf(p+".name", "%q is listed twice", s.Name)
		default:
			if j, ok := configured[s.Name]; ok {
				errs.Addf(p+".name", "%q is a pulled stream (streams[%d]): a name is pulled or pushed, not both", s.Name, j)
			}
		}
		seen[s.Name] = true
		for j, o := range s.Outputs {
			if o != pipeline.OutputHLS && o != pipeline.OutputWebRTC {
				errs.Addf(yamlfile.Index(p+".outputs", j), "%q is not %q or %q", o, pipeline.OutputHLS, pipeline.OutputWebRTC)
			} else if slices.Contains(s.Outputs[:j], o) {
				errs.Addf(yamlfile.Index(p+".outputs", j), "%q is listed twice", o)
			}
		}
		if s.Play != PlayPublic && s.Play != PlaySigned {
			errs.Addf(p+".play", "%q is not %q or %q", s.Play, PlayPublic, PlaySigned)
		} else if s.Play == PlaySigned && !authEnabled {
			errs.Addf(p+".play", "signed playback needs auth.tokens, auth.token_file or auth.jwt to verify tokens")
		}
		if s.Takeover != TakeoverRefuse && s.Takeover != TakeoverNewest {
			errs.Addf(p+".takeover", "%q is not %q or %q", s.Takeover, TakeoverRefuse, TakeoverNewest)
		}
		if n := len(s.Passphrase); n != 0 && (n < 10 || n > 79) {
			errs.Addf(p+".passphrase", "SRT passphrases are 10 to 79 characters (this one has %d)", n)
		}
	}
	return &errs
}
