package auth

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/prism-streaming/prism/internal/yamlfile"
	"github.com/prism-streaming/prism/pipeline"
)

// Limits.
const (
	// MinTokenLen is the shortest static token or publish key accepted.
	MinTokenLen = 16
	// MaxTokenLen is the longest static token or publish key accepted.
	MaxTokenLen = 1024
	// MinHS256SecretLen is the shortest HS256 secret, in bytes: the size of
	// the hash (RFC 7518, section 3.2).
	MinHS256SecretLen = 32
	// MaxCredentialLen bounds every credential, JWTs included, before it is
	// parsed.
	MaxCredentialLen = 8 << 10
	// DefaultLeeway is the clock skew allowed on exp and nbf when
	// jwt.leeway is 0.
	DefaultLeeway = 30 * time.Second
	// MaxLeeway is the largest jwt.leeway accepted.
	MaxLeeway = 10 * time.Minute
	// maxNameLen bounds token names.
	maxNameLen = 64
)

// ErrInvalidConfig is matched by every configuration problem that Validate
// and New report.
var ErrInvalidConfig = errors.New("invalid auth configuration")

// invalidConfig makes yamlfile errors (token file lines, key files) match
// ErrInvalidConfig.
type invalidConfig struct{}

func (invalidConfig) Sentinel() error { return ErrInvalidConfig }

// fileError is a problem in a file that New reads; line 0 when it is about
// the whole file.
type fileError = yamlfile.Error[invalidConfig]

// Config is the `auth:` section of the service configuration. The zero
// value configures nothing: see the package documentation for what callers
// allow then.
type Config struct {
	// Tokens are static API bearer tokens.
	Tokens []Token `yaml:"tokens"`
	// TokenFile holds more tokens, one per line, read by New:
	//
	//	<token> [actions=a,b] [streams=s1,s2] [name=n]
	//
	// Blank lines are skipped; '#' at the start of a line or after a blank
	// starts a comment. Options take comma-separated lists without blanks.
	TokenFile string `yaml:"token_file"`
	// JWT configures the key that JWTs must be signed with.
	JWT JWTConfig `yaml:"jwt"`
	// PublishKeys are per-stream publish keys (stream name -> key), for
	// RTMP/SRT/WHIP pushers; a key grants publishing its stream only. Keys
	// follow the rules of static tokens (at least MinTokenLen printable
	// ASCII characters) and must differ from each other and from the API
	// tokens.
	PublishKeys map[string]string `yaml:"publish_keys"`
}

// Token is a static API bearer token.
type Token struct {
	// Token is the secret: at least MinTokenLen printable ASCII characters
	// without blanks, and not of the shape of a JWT.
	Token string `yaml:"token"`
	// Actions are the actions granted; empty: every action.
	Actions []Action `yaml:"actions"`
	// Streams are the streams the token is valid for; empty: every stream.
	Streams []string `yaml:"streams"`
	// Name is shown instead of the token (logs, metrics); default
	// "token-<n>", n counting from 1 over auth.tokens, then the token file.
	Name string `yaml:"name"`
}

// JWTConfig configures JWT verification. At most one key source may be
// set: hs256_secret, hs256_secret_file, public_key_file or jwks_file. The
// key's type decides the only algorithm accepted.
type JWTConfig struct {
	// HS256Secret is the shared secret of HS256 tokens, at least
	// MinHS256SecretLen bytes.
	HS256Secret string `yaml:"hs256_secret"`
	// HS256SecretFile holds the secret instead; blanks around it are
	// trimmed.
	HS256SecretFile string `yaml:"hs256_secret_file"`
	// PublicKeyFile is a PEM public key (PUBLIC KEY, RSA PUBLIC KEY) or
	// certificate: RSA of at least 2048 bits for RS256, ECDSA P-256 for
	// ES256.
	PublicKeyFile string `yaml:"public_key_file"`
	// JWKSFile is a JWKS JSON document ({"keys": [...]}): its RSA and EC
	// P-256 signing keys are used, selected by the token's "kid" (which may
	// be left out when the set holds one usable key). Keys of other types,
	// curves or algorithms, or with "use" other than "sig", are skipped.
	JWKSFile string `yaml:"jwks_file"`
	// Issuer, when set, must equal the "iss" claim.
	Issuer string `yaml:"issuer"`
	// Audience, when set, must be the "aud" claim or one of its list.
	// Without it, "aud" is not checked.
	Audience string `yaml:"audience"`
	// Leeway is the clock skew allowed on exp and nbf; 0 means
	// DefaultLeeway.
	Leeway time.Duration `yaml:"leeway"`
}

// keySources lists the key settings that are set, by key name.
func (j *JWTConfig) keySources() []string {
	var set []string
	for _, s := range []struct {
		key, value string
	}{
		{"hs256_secret", j.HS256Secret},
		{"hs256_secret_file", j.HS256SecretFile},
		{"public_key_file", j.PublicKeyFile},
		{"jwks_file", j.JWKSFile},
	} {
		if s.value != "" {
			set = append(set, s.key)
		}
	}
	return set
}

// Defaults fills unset fields: the leeway.
func (c *Config) Defaults() {
	if c.JWT.Leeway == 0 {
		c.JWT.Leeway = DefaultLeeway
	}
}

// Enabled reports whether any API token (auth.tokens or a token file) or
// JWT key is configured; publish keys alone do not count. A token file
// enables authentication even if it turns out to hold no token: then no
// one is let in, rather than everyone local.
func (c *Config) Enabled() bool {
	return len(c.Tokens) > 0 || c.TokenFile != "" || len(c.JWT.keySources()) > 0
}

// Validate reports every invalid field as a *yamlfile.FieldErrors, fields
// relative to the section ("tokens[1].actions[0]", "jwt.public_key_file"),
// matching ErrInvalidConfig; nil when the section is fine. It reads no file:
// New checks their content.
func (c *Config) Validate() error {
	errs := yamlfile.FieldErrors{Section: "auth", Sentinel: ErrInvalidConfig}
	seen := map[string]string{} // secret -> field that has it first
	for i, t := range c.Tokens {
		field := yamlfile.Index("tokens", i)
		validateToken(&t, field, &errs)
		if t.Token != "" {
			if prev, dup := seen[t.Token]; dup {
				errs.Addf(yamlfile.Join(field, "token"), "same token as %s", prev)
			} else {
				seen[t.Token] = field
			}
		}
	}
	c.JWT.validate(&errs)
	for _, stream := range slices.Sorted(maps.Keys(c.PublishKeys)) {
		field := yamlfile.Key("publish_keys", stream)
		if !pipeline.ValidName(stream) {
			errs.Addf(field, "invalid stream name %s: use letters, digits, '-' and '_' (at most 64, starting with a letter or digit)", quoteName(stream))
		}
		key := c.PublishKeys[stream]
		if msg := checkSecret(key); msg != "" {
			errs.Addf(field, "%s", msg)
			continue
		}
		if prev, dup := seen[key]; dup {
			errs.Addf(field, "same key as %s: every stream needs its own key, distinct from the API tokens", prev)
		} else {
			seen[key] = field
		}
	}
	return errs.Err()
}

func (j *JWTConfig) validate(errs *yamlfile.FieldErrors) {
	sources := j.keySources()
	for _, s := range sources[min(1, len(sources)):] {
		errs.Addf("jwt."+s, "conflicts with jwt.%s: set only one of hs256_secret, hs256_secret_file, public_key_file and jwks_file", sources[0])
	}
	if n := len(j.HS256Secret); n > 0 && n < MinHS256SecretLen {
		errs.Addf("jwt.hs256_secret", "must be at least %d bytes, got %d", MinHS256SecretLen, n)
	}
	if len(sources) == 0 {
		for _, s := range []struct{ key, value string }{{"issuer", j.Issuer}, {"audience", j.Audience}} {
			if s.value != "" {
				errs.Addf("jwt."+s.key, "has no effect without a key: set hs256_secret, hs256_secret_file, public_key_file or jwks_file")
			}
		}
	}
	if j.Leeway < 0 || j.Leeway > MaxLeeway {
		errs.Addf("jwt.leeway", "must be between 0s and %s, got %s", MaxLeeway, j.Leeway)
	}
}

// validateToken checks one static token, wherever it comes from; fields are
// relative to field ("" for a token file line).
func validateToken(t *Token, field string, errs *yamlfile.FieldErrors) {
	if msg := checkSecret(t.Token); msg != "" {
		errs.Addf(yamlfile.Join(field, "token"), "%s", msg)
	} else if looksLikeJWT(t.Token) {
		errs.Addf(yamlfile.Join(field, "token"), "has the shape of a JWT (eyJ...x.y): it would never be taken for a static token")
	}
	for i, a := range t.Actions {
		if !a.Valid() {
			errs.Addf(yamlfile.Index(yamlfile.Join(field, "actions"), i), "unknown action %s: use %s", quoteName(string(a)), actionList())
		}
	}
	for i, s := range t.Streams {
		if !pipeline.ValidName(s) {
			errs.Addf(yamlfile.Index(yamlfile.Join(field, "streams"), i), "invalid stream name %s: use letters, digits, '-' and '_' (at most 64, starting with a letter or digit)", quoteName(s))
		}
	}
	if n := len(t.Name); n > maxNameLen || strings.ContainsFunc(t.Name, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		errs.Addf(yamlfile.Join(field, "name"), "must be at most %d printable ASCII characters", maxNameLen)
	}
}

// checkSecret returns what is wrong with a static token or publish key, ""
// if nothing. The message never holds the secret.
func checkSecret(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) < MinTokenLen:
		return fmt.Sprintf("must be at least %d characters, got %d", MinTokenLen, len(s))
	case len(s) > MaxTokenLen:
		return fmt.Sprintf("must be at most %d characters, got %d", MaxTokenLen, len(s))
	case strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }):
		return "must be printable ASCII without blanks"
	}
	return ""
}

func actionList() string {
	names := make([]string, 0, numActions)
	for _, a := range Actions() {
		names = append(names, string(a))
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// principalOf is the principal of a static token; n is its 1-based number.
func principalOf(t *Token, n int) Principal {
	p := Principal{Name: t.Name, Kind: KindToken}
	if p.Name == "" {
		p.Name = fmt.Sprintf("token-%d", n)
	}
	if len(t.Actions) > 0 {
		p.Actions = slices.Clone(t.Actions)
	}
	if len(t.Streams) > 0 {
		p.Streams = slices.Clone(t.Streams)
	}
	return p
}
