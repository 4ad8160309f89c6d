package auth_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/auth"
	"github.com/prism-streaming/prism/internal/yamlfile"
)

func TestValidate(t *testing.T) {
	long := "0123456789abcdef"
	cases := []struct {
		name   string
		cfg    auth.Config
		fields map[string]string // field -> part of its message
	}{
		{name: "zero value", cfg: auth.Config{}},
		{name: "full", cfg: auth.Config{
			Tokens: []auth.Token{
				{Token: long, Name: "ci"},
				{Token: long + "x", Actions: []auth.Action{auth.ActionPlay, auth.ActionMetrics}, Streams: []string{"cam1", "cam_2"}},
			},
			TokenFile:   "/etc/prism/tokens",
			JWT:         auth.JWTConfig{JWKSFile: "/etc/prism/jwks.json", Issuer: "idp", Audience: "prism", Leeway: time.Minute},
			PublishKeys: map[string]string{"cam1": long + "-publish"},
		}},
		{name: "bad tokens", cfg: auth.Config{Tokens: []auth.Token{
			{Token: ""},
			{Token: "short"},
			{Token: long, Actions: []auth.Action{auth.ActionPlay, "admin"}, Streams: []string{"ok", "bad name", ""}},
			{Token: long},
			{Token: "with blank 0123456789"},
			{Token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"},
			{Token: strings.Repeat("x", auth.MaxTokenLen+1)},
			{Token: long + "-named", Name: "bad\nname"},
		}}, fields: map[string]string{
			"tokens[0].token":      "must not be empty",
			"tokens[1].token":      "at least 16 characters, got 5",
			"tokens[2].actions[1]": `unknown action admin: use api.read, api.write, publish, play or metrics`,
			"tokens[2].streams[1]": `invalid stream name "bad name"`,
			"tokens[2].streams[2]": `invalid stream name ""`,
			"tokens[3].token":      "same token as tokens[2]",
			"tokens[4].token":      "printable ASCII without blanks",
			"tokens[5].token":      "shape of a JWT",
			"tokens[6].token":      "at most 1024 characters",
			"tokens[7].name":       "printable ASCII",
		}},
		{name: "conflicting jwt keys", cfg: auth.Config{JWT: auth.JWTConfig{
			HS256Secret: "short", PublicKeyFile: "/k.pem", JWKSFile: "/jwks.json", Leeway: -time.Second,
		}}, fields: map[string]string{
			"jwt.public_key_file": "conflicts with jwt.hs256_secret",
			"jwt.jwks_file":       "conflicts with jwt.hs256_secret",
			"jwt.hs256_secret":    "at least 32 bytes, got 5",
			"jwt.leeway":          "between 0s and 10m0s, got -1s",
		}},
		{name: "jwt checks without a key", cfg: auth.Config{JWT: auth.JWTConfig{Issuer: "idp", Audience: "prism", Leeway: time.Hour}},
			fields: map[string]string{
				"jwt.issuer":   "no effect without a key",
				"jwt.audience": "no effect without a key",
				"jwt.leeway":   "between 0s and 10m0s",
			}},
		{name: "secret file and public key", cfg: auth.Config{JWT: auth.JWTConfig{HS256SecretFile: "/s", PublicKeyFile: "/k"}},
			fields: map[string]string{"jwt.public_key_file": "conflicts with jwt.hs256_secret_file"}},
		{name: "bad publish keys", cfg: auth.Config{
			Tokens: []auth.Token{{Token: long}},
			PublishKeys: map[string]string{
				"bad name": long + "-a",
				"cam1":     "short",
				"cam2":     long,
				"cam3":     long + "-b",
				"cam4":     long + "-b",
			},
		}, fields: map[string]string{
			`publish_keys["bad name"]`: "invalid stream name",
			"publish_keys.cam1":        "at least 16 characters",
			"publish_keys.cam2":        "same key as tokens[0]",
			"publish_keys.cam4":        "same key as publish_keys.cam3",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if len(c.fields) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var fe *yamlfile.FieldErrors
			if !errors.As(err, &fe) {
				t.Fatalf("Validate returned %T %v, want *yamlfile.FieldErrors", err, err)
			}
			if !errors.Is(err, auth.ErrInvalidConfig) {
				t.Error("error does not match ErrInvalidConfig")
			}
			got := map[string]string{}
			for _, f := range fe.Fields {
				if _, dup := got[f.Field]; dup {
					t.Errorf("field %s reported twice", f.Field)
				}
				got[f.Field] = f.Msg
			}
			for field, want := range c.fields {
				if msg, ok := got[field]; !ok {
					t.Errorf("no error for %s", field)
				} else if !strings.Contains(msg, want) {
					t.Errorf("%s: %q does not say %q", field, msg, want)
				}
			}
			for field, msg := range got {
				if _, ok := c.fields[field]; !ok {
					t.Errorf("unexpected error %s: %s", field, msg)
				}
				for _, tok := range c.cfg.Tokens {
					if len(tok.Token) >= 8 && strings.Contains(msg, tok.Token) {
						t.Errorf("%s: message shows a token", field)
					}
				}
			}
			if !strings.Contains(err.Error(), "auth.") {
				t.Errorf("the error does not name the section: %v", err)
			}
		})
	}
}

func TestEnabled(t *testing.T) {
	for _, c := range []struct {
		cfg  auth.Config
		want bool
	}{
		{auth.Config{}, false},
		{auth.Config{PublishKeys: map[string]string{"cam1": "0123456789abcdef"}}, false},
		{auth.Config{JWT: auth.JWTConfig{Issuer: "x", Leeway: time.Second}}, false},
		{auth.Config{Tokens: []auth.Token{{Token: "0123456789abcdef"}}}, true},
		{auth.Config{TokenFile: "/tokens"}, true},
		{auth.Config{JWT: auth.JWTConfig{HS256Secret: string(hsSecret)}}, true},
		{auth.Config{JWT: auth.JWTConfig{HS256SecretFile: "/s"}}, true},
		{auth.Config{JWT: auth.JWTConfig{PublicKeyFile: "/k"}}, true},
		{auth.Config{JWT: auth.JWTConfig{JWKSFile: "/j"}}, true},
	} {
		if got := c.cfg.Enabled(); got != c.want {
			t.Errorf("%+v: Enabled %v, want %v", c.cfg, got, c.want)
		}
	}
	var nilA *auth.Authorizer
	if nilA.Enabled() {
		t.Error("nil authorizer enabled")
	}
	c := auth.Config{}
	c.Defaults()
	if c.JWT.Leeway != auth.DefaultLeeway || c.Enabled() || c.Validate() != nil {
		t.Errorf("defaults %+v", c)
	}
}

func TestTokenFile(t *testing.T) {
	data := "\ufeff# Prism API tokens\n" +
		"\n" +
		"  ops-token-0123456789   name=ops   # full access\n" +
		"player-token-012345 actions=play streams=cam1,cam2\r\n" +
		"hash#inside-token-0123 actions=api.read,metrics\n" +
		"\t# indented comment\n"
	path := writeFile(t, "tokens", []byte(data))
	a := newAuthorizer(t, auth.Config{
		Tokens:    []auth.Token{{Token: staticToken}},
		TokenFile: path,
	})
	cases := []struct {
		cred, stream string
		action       auth.Action
		want         error
		name         string
	}{
		{"ops-token-0123456789", "cam9", auth.ActionAPIWrite, nil, "ops"},
		{"player-token-012345", "cam2", auth.ActionPlay, nil, "token-3"},
		{"player-token-012345", "cam3", auth.ActionPlay, auth.ErrForbidden, "token-3"},
		{"player-token-012345", "cam1", auth.ActionPublish, auth.ErrForbidden, "token-3"},
		{"hash#inside-token-0123", "", auth.ActionMetrics, nil, "token-4"},
		{"hash", "", auth.ActionMetrics, auth.ErrUnauthenticated, ""},
		{staticToken, "cam1", auth.ActionPlay, nil, "token-1"},
	}
	for _, c := range cases {
		p, err := a.Authorize(c.cred, c.action, c.stream)
		if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%s %s %s: %v, want %v", c.cred, c.action, c.stream, err, c.want)
		}
		if p.Name != c.name {
			t.Errorf("%s: principal %q, want %q", c.cred, p.Name, c.name)
		}
	}
}

func TestTokenFileErrors(t *testing.T) {
	bad := "# comment\n" +
		"good-token-0123456789\n" +
		"short\n" +
		"other-token-0123456789 actions=play,admin\n" +
		"third-token-0123456789 streams=cam1,bad/name\n" +
		"fourth-token-0123456789 color=red\n" +
		"fifth-token-0123456789 justaword\n" +
		"sixth-token-0123456789 actions=play actions=metrics\n" +
		"seventh-token-01234567 name=\n" +
		"good-token-0123456789\n" +
		staticToken + "\n" +
		publishKeyCam1 + "\n"
	path := writeFile(t, "tokens.txt", []byte(bad))
	_, err := auth.New(auth.Config{
		Tokens:      []auth.Token{{Token: staticToken}},
		TokenFile:   path,
		PublishKeys: map[string]string{"cam1": publishKeyCam1},
	})
	if err == nil {
		t.Fatal("New accepted a bad token file")
	}
	if !errors.Is(err, auth.ErrInvalidConfig) {
		t.Errorf("%v does not match ErrInvalidConfig", err)
	}
	msg := err.Error()
	for _, want := range []string{
		path + ":3: token: must be at least 16 characters, got 5",
		path + ":4: actions[1]: unknown action admin",
		path + `:5: streams[1]: invalid stream name "bad/name"`,
		path + ":6: option 1: unknown option: use actions=, streams= or name=",
		path + ":7: option 1: expected actions=, streams= or name=",
		path + ":8: actions: is given twice",
		path + ":9: name: needs a value",
		path + ":10: token: same token as line 2",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not say %q:\n%s", want, msg)
		}
	}
	for _, secret := range []string{"good-token", "other-token", "sixth-token", staticToken, publishKeyCam1} {
		if strings.Contains(msg, secret) {
			t.Errorf("error shows a token (%s...):\n%s", secret[:4], msg)
		}
	}
	// Duplicates of the configuration are found once the file parses.
	path = writeFile(t, "dups.txt", []byte(staticToken+"\n"+publishKeyCam1+"\n"))
	_, err = auth.New(auth.Config{
		Tokens:      []auth.Token{{Token: staticToken}},
		TokenFile:   path,
		PublishKeys: map[string]string{"cam1": publishKeyCam1},
	})
	for _, want := range []string{path + ":1: same token as auth.tokens[0]", path + ":2: same token as auth.publish_keys.cam1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}

func TestNewFileErrors(t *testing.T) {
	keys(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	rsaPriv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, 5<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	privJWK := rsaJWK(&rsaKey.PublicKey, "r1")
	privJWK["d"] = "secret"
	cases := []struct {
		name string
		jwt  auth.JWTConfig
		file string // the path the error must name; "" for the one in jwt
		want string
	}{
		{name: "missing token file", file: missing, want: "cannot read the token file: no such file or directory"},
		{name: "token file too large", file: big, want: "larger than"},
		{name: "missing secret file", jwt: auth.JWTConfig{HS256SecretFile: missing}, want: "cannot read the hs256 secret file"},
		{name: "short secret file", jwt: auth.JWTConfig{HS256SecretFile: writeFile(t, "s", []byte("  short  \n"))}, want: "at least 32 bytes, got 5"},
		{name: "missing key file", jwt: auth.JWTConfig{PublicKeyFile: missing}, want: "cannot read the public key file"},
		{name: "not pem", jwt: auth.JWTConfig{PublicKeyFile: writeFile(t, "k", []byte("hello"))}, want: "no PEM public key found"},
		{name: "rsa private key", jwt: auth.JWTConfig{PublicKeyFile: writeFile(t, "k", rsaPriv)}, want: "holds a private key (RSA PRIVATE KEY)"},
		{name: "ec private key", jwt: auth.JWTConfig{PublicKeyFile: writeFile(t, "k", ecPriv)}, want: "holds a private key (EC PRIVATE KEY)"},
		{name: "broken public key", jwt: auth.JWTConfig{PublicKeyFile: writeFile(t, "k", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")}))}, want: "invalid PUBLIC KEY"},
		{name: "rsa 1024", jwt: auth.JWTConfig{PublicKeyFile: writeFile(t, "k", pkixPEM(t, &rsa1024Key.PublicKey))}, want: "rsa key of 1024 bits: at least 2048"},
		{name: "p-384", jwt: auth.JWTConfig{PublicKeyFile: writeFile(t, "k", pkixPEM(t, &p384Key.PublicKey))}, want: "curve P-384: only P-256"},
		{name: "missing jwks", jwt: auth.JWTConfig{JWKSFile: missing}, want: "cannot read the jwks file"},
		{name: "jwks not json", jwt: auth.JWTConfig{JWKSFile: writeFile(t, "j", []byte("{"))}, want: "invalid JWKS JSON"},
		{name: "jwks without usable keys", jwt: auth.JWTConfig{JWKSFile: writeFile(t, "j", jwks(t, ecJWK(t, &p384Key.PublicKey, "p")))}, want: "no usable signing key"},
		{name: "jwks private key", jwt: auth.JWTConfig{JWKSFile: writeFile(t, "j", jwks(t, privJWK))}, want: `keys[0]: holds a private key ("d")`},
		{name: "jwks small rsa", jwt: auth.JWTConfig{JWKSFile: writeFile(t, "j", jwks(t, rsaJWK(&rsa1024Key.PublicKey, "r")))}, want: "keys[0]: rsa key of 1024 bits"},
		{name: "jwks bad modulus", jwt: auth.JWTConfig{JWKSFile: writeFile(t, "j", jwks(t, map[string]any{"kty": "RSA", "n": "!!", "e": "AQAB"}))}, want: `keys[0]: invalid "n"`},
		{name: "jwks even exponent", jwt: auth.JWTConfig{JWKSFile: writeFile(t, "j", jwks(t, func() map[string]any { k := rsaJWK(&rsaKey.PublicKey, "r"); k["e"] = "Ag"; return k }()))}, want: `invalid "e"`},
		{name: "jwks point off the curve", jwt: auth.JWTConfig{JWKSFile: writeFile(t, "j", jwks(t, func() map[string]any {
			k := ecJWK(t, &ecKey.PublicKey, "e")
			k["y"] = k["x"]
			return k
		}()))}, want: "keys[0]: invalid P-256 point"},
		{name: "jwks duplicate kid", jwt: auth.JWTConfig{JWKSFile: writeFile(t, "j", jwks(t, rsaJWK(&rsaKey.PublicKey, "k"), ecJWK(t, &ecKey.PublicKey, "k")))}, want: `keys[1]: kid "k" is used twice`},
		{name: "jwks several keys, one without kid", jwt: auth.JWTConfig{JWKSFile: writeFile(t, "j", jwks(t, rsaJWK(&rsaKey.PublicKey, "k"), ecJWK(t, &ecKey.PublicKey, "")))}, want: "every key needs one"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := auth.Config{JWT: c.jwt}
			file := c.file
			if file != "" {
				cfg.TokenFile = file
			} else {
				file = slices.MaxFunc([]string{c.jwt.HS256SecretFile, c.jwt.PublicKeyFile, c.jwt.JWKSFile}, func(a, b string) int { return len(a) - len(b) })
			}
			_, err := auth.New(cfg)
			if err == nil {
				t.Fatal("New accepted it")
			}
			if !errors.Is(err, auth.ErrInvalidConfig) {
				t.Errorf("%v does not match ErrInvalidConfig", err)
			}
			if !strings.HasPrefix(err.Error(), file+": ") {
				t.Errorf("error %q does not start with the file %s", err, file)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
		})
	}
	t.Run("invalid config", func(t *testing.T) {
		_, err := auth.New(auth.Config{Tokens: []auth.Token{{Token: "short"}}})
		var fe *yamlfile.FieldErrors
		if !errors.As(err, &fe) || !errors.Is(err, auth.ErrInvalidConfig) {
			t.Errorf("New: %v", err)
		}
	})
}

type yamlKind struct{}

func (yamlKind) Sentinel() error { return auth.ErrInvalidConfig }

// TestYAML decodes the section as the service configuration does (strict),
// and locates a Validate error on its line.
func TestYAML(t *testing.T) {
	src := `tokens:
  - token: ops-token-0123456789
    name: ops
  - token: player-token-012345
    actions: [play, api.read]
    streams: [cam1]
token_file: /etc/prism/tokens
jwt:
  jwks_file: /etc/prism/jwks.json
  issuer: https://idp.example
  audience: prism
  leeway: 45s
publish_keys:
  cam1: publish-key-cam1-0123456789
`
	var c auth.Config
	lines, err := yamlfile.Decode[yamlKind]("prism.yaml", []byte(src), &c)
	if err != nil {
		t.Fatal(err)
	}
	if c.JWT.Leeway != 45*time.Second || c.Tokens[1].Actions[0] != auth.ActionPlay || c.PublishKeys["cam1"] == "" || c.TokenFile == "" {
		t.Errorf("decoded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := yamlfile.Decode[yamlKind]("prism.yaml", []byte("tokens:\n  - tokn: x\n"), &auth.Config{}); err == nil {
		t.Error("an unknown key decoded")
	}
	c.Tokens[1].Actions[1] = "admin"
	var fe *yamlfile.FieldErrors
	if !errors.As(c.Validate(), &fe) {
		t.Fatal("no field errors")
	}
	fe.Section = "" // the lines are of the section as a document
	located := yamlfile.Locate[yamlKind]("prism.yaml", lines, fe)
	if want := "prism.yaml:5: tokens[1].actions[1]: unknown action admin"; len(located) != 1 || !strings.HasPrefix(located[0].Error(), want) {
		t.Errorf("located %v, want %s", located, want)
	}
}
