// Package inputs is the policy for what a job submitted over the API may
// read: which URL schemes, whether lavfi graphs and local files, which
// destination addresses, and how its ladder may be given. Streams in the
// configuration file are trusted and not checked.
package inputs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prism-streaming/prism/internal/yamlfile"
)

// ErrRefused: the policy does not allow this input or ladder.
var ErrRefused = errors.New("input not allowed")

// Config is the `inputs:` section of the service configuration.
type Config struct {
	// Schemes are the URL schemes API jobs may pull from.
	Schemes []string `yaml:"schemes"`
	// AllowLavfi lets API jobs run lavfi: graphs (some filters read or
	// write files).
	AllowLavfi bool `yaml:"allow_lavfi"`
	// AllowFiles lets API jobs read local files (a path or file:).
	AllowFiles bool `yaml:"allow_files"`
	// DenyCIDRs are destination ranges API inputs may not reach, checked
	// on every address the host resolves to.
	DenyCIDRs []string `yaml:"deny_cidrs"`
	// AllowCIDRs, when set, are the only destination ranges API inputs may
	// reach.
	AllowCIDRs []string `yaml:"allow_cidrs"`
	// MaxLadderYAML bounds an inline ladder, in bytes.
	MaxLadderYAML int `yaml:"max_ladder_yaml"`
}

// DefaultSchemes are what a live source is pulled over.
var DefaultSchemes = []string{"rtmp", "rtmps", "rtsp", "rtsps", "srt", "http", "https"}

// DefaultDenyCIDRs: link-local (cloud metadata lives at 169.254.169.254),
// "this network", multicast, and the IPv6 metadata and link-local ranges.
var DefaultDenyCIDRs = []string{"0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "100.100.100.200/32", "fe80::/10", "fd00:ec2::254/128", "ff00::/8"}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Schemes == nil {
		c.Schemes = slices.Clone(DefaultSchemes)
	}
	if c.DenyCIDRs == nil {
		c.DenyCIDRs = slices.Clone(DefaultDenyCIDRs)
	}
	if c.MaxLadderYAML == 0 {
		c.MaxLadderYAML = 64 << 10
	}
}

// Validate checks the section; fields are relative to it.
func (c *Config) Validate() error {
	errs := yamlfile.FieldErrors{Section: "inputs", Sentinel: ErrRefused}
	for i, s := range c.Schemes {
		if s == "" || strings.ToLower(s) != s || strings.ContainsAny(s, ":/ ") {
			errs.Addf(yamlfile.Index("schemes", i), "%q: a lower-case URL scheme such as rtmp", s)
		}
		if s == "file" || s == "lavfi" {
			errs.Addf(yamlfile.Index("schemes", i), "%q: use allow_files or allow_lavfi", s)
		}
	}
	for name, list := range map[string][]string{"deny_cidrs": c.DenyCIDRs, "allow_cidrs": c.AllowCIDRs} {
		for i, p := range list {
			if _, err := netip.ParsePrefix(p); err != nil {
				errs.Addf(yamlfile.Index(name, i), "%q is not a CIDR such as 10.0.0.0/8", p)
			}
		}
	}
	if c.MaxLadderYAML < 1024 || c.MaxLadderYAML > 1<<20 {
		errs.Addf("max_ladder_yaml", "must be 1024..1048576 bytes, got %d", c.MaxLadderYAML)
	}
	return errs.Err()
}

// Policy checks API jobs against a Config.
type Policy struct {
	cfg         Config
	deny, allow []netip.Prefix
	// Resolve looks a host up (default net.DefaultResolver, 2 s).
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
}

// New returns the policy of a validated configuration.
func New(cfg Config) (*Policy, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Policy{cfg: cfg, Resolve: resolve}
	for _, s := range cfg.DenyCIDRs {
		p.deny = append(p.deny, netip.MustParsePrefix(s))
	}
	for _, s := range cfg.AllowCIDRs {
		p.allow = append(p.allow, netip.MustParsePrefix(s))
	}
	return p, nil
}

func resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// CheckInput refuses an input URL the policy does not allow. The reason
// names the rule, never the URL's credentials.
func (p *Policy) CheckInput(ctx context.Context, input string) error {
	switch {
	case strings.HasPrefix(input, "lavfi:"):
		if !p.cfg.AllowLavfi {
			return refused("lavfi inputs come from the configuration file only (inputs.allow_lavfi)")
		}
		return nil
	case !strings.Contains(input, "://") && schemeLike(input):
		scheme, _, _ := strings.Cut(input, ":")
		if scheme != "file" {
			return refused("scheme %q is not allowed (inputs.schemes: %s)", scheme, strings.Join(p.cfg.Schemes, ", "))
		}
		fallthrough
	case !strings.Contains(input, "://") || strings.HasPrefix(input, "file:"):
		if !p.cfg.AllowFiles {
			return refused("local files come from the configuration file only (inputs.allow_files)")
		}
		return nil
	}
	u, err := url.Parse(input)
	if err != nil {
		return refused("not a URL")
	}
	scheme := strings.ToLower(u.Scheme)
	if !slices.Contains(p.cfg.Schemes, scheme) {
		return refused("scheme %q is not allowed (inputs.schemes: %s)", scheme, strings.Join(p.cfg.Schemes, ", "))
	}
	for k := range u.Query() {
		if strings.EqualFold(k, "listen") || (strings.EqualFold(k, "mode") && !strings.EqualFold(u.Query().Get(k), "caller")) {
			return refused("inputs are pulled: %s= is not allowed", k)
		}
	}
	return p.checkHost(ctx, u)
}

// CheckPublishTarget refuses a WHIP target the node must not post to: not
// http(s), or a denied destination (the same ranges as inputs).
func (p *Policy) CheckPublishTarget(ctx context.Context, target string) error {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return refused("publish: not an http(s) WHIP endpoint")
	}
	return p.checkHost(ctx, u)
}

// checkHost applies the destination ranges to every address u's host
// resolves to.
func (p *Policy) checkHost(ctx context.Context, u *url.URL) error {
	host := u.Hostname()
	if host == "" {
		return refused("no host")
	}
	addrs := []netip.Addr{}
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = append(addrs, a)
	} else if addrs, err = p.Resolve(ctx, host); err != nil || len(addrs) == 0 {
		return refused("host %s does not resolve", host)
	}
	for _, a := range addrs {
		a = a.Unmap()
		if a.IsUnspecified() {
			return refused("address %s is not a source", a)
		}
		for _, d := range p.deny {
			if d.Contains(a) {
				return refused("address %s is in a denied range (inputs.deny_cidrs)", a)
			}
		}
		if len(p.allow) > 0 && !slices.ContainsFunc(p.allow, func(pr netip.Prefix) bool { return pr.Contains(a) }) {
			return refused("address %s is outside inputs.allow_cidrs", a)
		}
	}
	return nil
}

// schemeLike reports whether s starts with "name:" (concat:, pipe:,
// data:, file:), which FFmpeg reads as a protocol, not a path.
func schemeLike(s string) bool {
	i := strings.IndexByte(s, ':')
	if i <= 0 {
		return false
	}
	return strings.Trim(s[:i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.") == ""
}

// maxLadderDepth bounds how deeply an inline ladder may nest.
const maxLadderDepth = 16

// CheckLadder refuses a ladder given in a way the API does not take: a
// file path (read on the node: a file oracle), an inline ladder over
// MaxLadderYAML bytes or nested more than a ladder ever is.
func (p *Policy) CheckLadder(ref, inline string, isPath func(string) bool) error {
	if inline == "" && isPath(ref) {
		return refused("ladder: a file path is not accepted over the API: name a shipped ladder or send the YAML inline (ladder_yaml)")
	}
	if len(inline) > p.cfg.MaxLadderYAML {
		return refused("ladder_yaml: %d bytes, more than %d (inputs.max_ladder_yaml)", len(inline), p.cfg.MaxLadderYAML)
	}
	depth, indent := 0, 0
	for _, line := range strings.Split(inline, "\n") {
		if n := len(line) - len(strings.TrimLeft(line, " -")); n > indent {
			indent = n
		}
	}
	for _, r := range inline {
		switch r {
		case '[', '{':
			depth++
			if depth > maxLadderDepth {
				return refused("ladder_yaml: nested deeper than %d", maxLadderDepth)
			}
		case ']', '}':
			depth--
		}
	}
	if indent > 4*maxLadderDepth {
		return refused("ladder_yaml: nested deeper than %d", maxLadderDepth)
	}
	return nil
}
