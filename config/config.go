// Package config is the service configuration of `prism serve`: one YAML
// file, loaded strictly (unknown keys are errors) with every error naming
// file, line and field, like ladders.
package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prism-streaming/prism/internal/auth"
	"github.com/prism-streaming/prism/internal/inputs"
	"github.com/prism-streaming/prism/internal/yamlfile"
	"github.com/prism-streaming/prism/outputs/hls"
	"github.com/prism-streaming/prism/outputs/webrtc"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
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
	// Auth says who may use the API, play signed streams and publish.
	Auth auth.Config `yaml:"auth"`
	// Inputs is what jobs submitted over the API may read.
	Inputs inputs.Config `yaml:"inputs"`
	// Ingest is push ingest: RTMP(S), SRT and WHIP listeners.
	Ingest Ingest `yaml:"ingest"`

	file  string
	lines yamlfile.Lines // field path -> line, for validation messages
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
	// Clients of the embedded server besides Prism itself (a data
	// pipeline publishing events.<stream>), each with its own token;
	// needs Listen.
	Clients []NATSClient `yaml:"clients"`
	// Replicas of the job buckets and stream: 1 for a single embedded
	// server, 3 in a cluster (the default whenever URL or Cluster is set).
	Replicas int `yaml:"replicas"`
}

// NATSClient is an application that connects to the embedded server with
// its own token, limited to its subjects (bus.ClientUser).
type NATSClient struct {
	Name  string `yaml:"name"`
	Token string `yaml:"token"`
	// Publish and Subscribe default to events.* in, events.*.timed and
	// actions.* out.
	Publish   []string `yaml:"publish"`
	Subscribe []string `yaml:"subscribe"`
}

// NATSCluster routes the embedded server to its peers.
type NATSCluster struct {
	Name   string   `yaml:"name"`
	Listen string   `yaml:"listen"`
	Routes []string `yaml:"routes"`
	// Token is the route credential, the same on every peer: routes
	// without it are refused. Empty accepts any peer that reaches Listen.
	Token string `yaml:"token"`
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
	// StartTimeout is how long a claimed job may take to have media
	// flowing (the first IDR of every rung, the first packet of every
	// audio track) before the attempt fails with what it waited for; a
	// failed attempt is retried as any other. Default 30s.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// Follow is when this node subscribes to a running stream's media:
	// FollowOnDemand (the default) while it has viewers here, so a node's
	// NATS ingress grows with the streams watched on it and not with the
	// cluster's; FollowAlways for every running stream.
	Follow string `yaml:"follow"`
	// FollowIdle is how long an on-demand stream stays followed after its
	// last request (HLS) or session (WebRTC). Default 30s.
	FollowIdle time.Duration `yaml:"follow_idle"`
	// FollowStreams are always followed, whatever Follow says.
	FollowStreams []string `yaml:"follow_streams"`
}

// When a node follows a stream's media (node.follow).
const (
	FollowOnDemand = "on_demand"
	FollowAlways   = "always"
)

// Stream is a stream pulled from a URL at start-up.
type Stream struct {
	Name   string `yaml:"name"`
	Input  string `yaml:"input"`  // any libavformat URL or lavfi:<graph>
	Ladder string `yaml:"ladder"` // file or shipped ladder name; default "default"
	// Realtime paces file and lavfi inputs at 1x (network inputs never are).
	Realtime *bool `yaml:"realtime"`
	// Outputs are the deliveries that serve the stream ("hls", "webrtc");
	// none listed means all of them.
	Outputs []string `yaml:"outputs"`
	// Play is who may watch: PlayPublic (anyone who reaches the node) or
	// PlaySigned (a token or JWT granting play on this stream).
	Play string `yaml:"play"`
	// Publish pushes the ladder to other WebRTC servers (SFUs) over WHIP as
	// one simulcast track, a RID per rung.
	Publish []Publish `yaml:"publish"`
}

// Playback policies of a stream.
const (
	PlayPublic = "public"
	PlaySigned = "signed"
)

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
	c.Ingest.listenDefaults()
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
	c.Auth.Defaults()
	c.Inputs.Defaults()
	c.Ingest.Defaults()
	if c.Node.Workers == nil {
		t := true
		c.Node.Workers = &t
	}
	if c.Node.StartTimeout == 0 {
		c.Node.StartTimeout = 30 * time.Second // jobs.DefaultStartTimeout
	}
	if c.Node.Follow == "" {
		c.Node.Follow = FollowOnDemand
	}
	if c.Node.FollowIdle == 0 {
		c.Node.FollowIdle = 30 * time.Second
	}
	for i := range c.Streams {
		if c.Streams[i].Ladder == "" {
			c.Streams[i].Ladder = "default"
		}
		if c.Streams[i].Realtime == nil {
			t := true
			c.Streams[i].Realtime = &t
		}
		if c.Streams[i].Play == "" {
			c.Streams[i].Play = PlayPublic
		}
	}
}

// invalidConfig makes the shared yamlfile errors match ErrInvalid.
type invalidConfig struct{}

func (invalidConfig) Sentinel() error { return ErrInvalid }

type (
	// Error is one configuration problem, located by file, line and field.
	Error = yamlfile.Error[invalidConfig]
	// ErrorList is every problem found in a configuration, in line order;
	// Parse, Load and Validate return one.
	ErrorList = yamlfile.Errors[invalidConfig]
)

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return Parse(path, data)
}

// Parse decodes and validates configuration bytes; file names the source in
// messages.
func Parse(file string, data []byte) (*Config, error) {
	c := New()
	// New chose 1 replica for no cluster; the file may name one, and
	// Defaults below picks 3 for it unless the file sets replicas.
	c.NATS.Replicas = 0
	lines, err := yamlfile.Decode[invalidConfig](file, data, c)
	if err != nil {
		return nil, err
	}
	c.file, c.lines = file, lines
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks the configuration; all problems are returned together.
func (c *Config) Validate() error {
	var errs yamlfile.FieldErrors
	if (c.HTTP.TLSCert == "") != (c.HTTP.TLSKey == "") {
		errs.Addf("http.tls_cert", "tls_cert and tls_key must be set together")
	}
	if n := c.NATS.Replicas; n < 1 || n > 5 {
		errs.Addf("nats.replicas", "must be between 1 and 5")
	}
	if c.NATS.URL != "" && (c.NATS.Listen != "" || c.NATS.Cluster.Listen != "") {
		errs.Addf("nats.url", "an external cluster (url) and an embedded server (listen, cluster) exclude each other")
	}
	if c.NATS.Cluster.Listen != "" && c.NATS.Cluster.Name == "" {
		errs.Addf("nats.cluster.name", "is required with cluster.listen")
	}
	if t := c.NATS.Cluster.Token; t != "" && len(t) < bus.MinRouteToken {
		errs.Addf("nats.cluster.token", "at least %d characters", bus.MinRouteToken)
	}
	c.validateNATSClients(&errs)
	if c.Node.ID != "" && pipeline.ValidStreamName(c.Node.ID) != nil {
		errs.Addf("node.id", "%q: use letters, digits, '-' and '_'", c.Node.ID)
	}
	if d := c.Node.StartTimeout; d < time.Second || d > 10*time.Minute {
		errs.Addf("node.start_timeout", "%s: between 1s and 10m", d)
	}
	if f := c.Node.Follow; f != FollowOnDemand && f != FollowAlways {
		errs.Addf("node.follow", "%q is not %q or %q", f, FollowOnDemand, FollowAlways)
	}
	// At least 1s: HLS players request every part (~200ms), and a gap of a
	// few hundred ms must not make the node let go of a watched stream.
	if d := c.Node.FollowIdle; d < time.Second || d > time.Hour {
		errs.Addf("node.follow_idle", "%s: between 1s and 1h", d)
	}
	for i, n := range c.Node.FollowStreams {
		if pipeline.ValidStreamName(n) != nil {
			errs.Addf(yamlfile.Index("node.follow_streams", i), "%q: use letters, digits, '-' and '_' (at most 64)", n)
		}
	}
	seen := map[string]int{}
	for i, s := range c.Streams {
		p := yamlfile.Index("streams", i)
		switch {
		case s.Name == "":
			errs.Addf(p+".name", "is required")
		case pipeline.ValidStreamName(s.Name) != nil:
			errs.Addf(p+".name", "%q: use letters, digits, '-' and '_' (at most 64)", s.Name)
		default:
			if j, dup := seen[s.Name]; dup {
				errs.Addf(p+".name", "%q is already used by streams[%d]", s.Name, j)
			}
			seen[s.Name] = i
		}
		if s.Input == "" {
			errs.Addf(p+".input", "is required")
		}
		for j, o := range s.Outputs {
			if o != pipeline.OutputHLS && o != pipeline.OutputWebRTC {
				errs.Addf(yamlfile.Index(p+".outputs", j), "%q is not %q or %q", o, pipeline.OutputHLS, pipeline.OutputWebRTC)
			} else if slices.Contains(s.Outputs[:j], o) {
				errs.Addf(yamlfile.Index(p+".outputs", j), "%q is listed twice", o)
			}
		}
		if s.Play != PlayPublic && s.Play != PlaySigned {
			errs.Addf(p+".play", "%q is not %q or %q", s.Play, PlayPublic, PlaySigned)
		} else if s.Play == PlaySigned && !c.Auth.Enabled() {
			errs.Addf(p+".play", "signed playback needs auth.tokens, auth.token_file or auth.jwt to verify tokens")
		}
		for j, pub := range s.Publish {
			if !strings.HasPrefix(pub.URL, "http://") && !strings.HasPrefix(pub.URL, "https://") {
				errs.Addf(yamlfile.Index(p+".publish", j)+".url", "%q is not an http(s) WHIP endpoint", pub.URL)
			}
		}
	}
	// The output sections validate themselves, naming fields within the
	// section; the keys here say where each section sits in the file.
	errs.AddSection("hls", c.HLS.Validate())
	errs.AddSection("webrtc", c.WebRTC.Validate())
	errs.AddSection("auth", c.Auth.Validate())
	errs.AddSection("inputs", c.Inputs.Validate())
	errs.AddSection("ingest", c.Ingest.validate(c.Auth.Enabled(), seen).Err())
	return yamlfile.Locate[invalidConfig](c.file, c.lines, &errs).Err()
}
