package auth_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/auth"
)

// TestSignRoundTrip mints with Sign and SignHS256 and verifies with New.
func TestSignRoundTrip(t *testing.T) {
	keys(t)
	c := auth.Claims{
		Subject:   "encoder-7",
		Issuer:    "prism",
		Audience:  "prism-edge",
		ExpiresAt: time.Now().Add(time.Hour).Unix(),
		NotBefore: time.Now().Add(-time.Minute).Unix(),
		Streams:   []string{"cam1"},
		Actions:   []auth.Action{auth.ActionPublish},
	}
	jwtCfg := auth.JWTConfig{Issuer: "prism", Audience: "prism-edge"}
	for _, k := range []struct {
		name   string
		key    crypto.Signer // nil: HS256
		kid    string
		cfg    func() auth.JWTConfig
		sigLen int
	}{
		{name: "hs256", cfg: func() auth.JWTConfig { j := jwtCfg; j.HS256Secret = string(hsSecret); return j }, sigLen: 32},
		{name: "rs256", key: rsaKey, cfg: func() auth.JWTConfig {
			j := jwtCfg
			j.PublicKeyFile = writeFile(t, "rsa.pem", pkixPEM(t, &rsaKey.PublicKey))
			return j
		}, sigLen: 256},
		{name: "es256", key: ecKey, cfg: func() auth.JWTConfig {
			j := jwtCfg
			j.PublicKeyFile = writeFile(t, "ec.pem", pkixPEM(t, &ecKey.PublicKey))
			return j
		}, sigLen: 64},
		{name: "es256 jwks", key: ecKey, kid: "e1", cfg: func() auth.JWTConfig {
			j := jwtCfg
			j.JWKSFile = writeFile(t, "jwks.json", jwks(t, rsaJWK(&rsaKey.PublicKey, "r1"), ecJWK(t, &ecKey.PublicKey, "e1")))
			return j
		}, sigLen: 64},
	} {
		t.Run(k.name, func(t *testing.T) {
			var tok string
			var err error
			if k.key == nil {
				tok, err = auth.SignHS256(hsSecret, c)
			} else {
				tok, err = auth.Sign(k.key, k.kid, c)
			}
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(tok, ".")
			if len(parts) != 3 || strings.Contains(tok, "=") {
				t.Fatalf("not a compact unpadded JWS: %s", tok)
			}
			var header map[string]string
			h, _ := b64.DecodeString(parts[0])
			if err := json.Unmarshal(h, &header); err != nil {
				t.Fatal(err)
			}
			if want := strings.ToUpper(strings.Fields(k.name)[0]); header["alg"] != want || header["typ"] != "JWT" || header["kid"] != k.kid {
				t.Errorf("header %v", header)
			}
			if sig, _ := b64.DecodeString(parts[2]); len(sig) != k.sigLen {
				t.Errorf("signature of %d bytes, want %d", len(sig), k.sigLen)
			}
			a := newAuthorizer(t, auth.Config{JWT: k.cfg()})
			p, err := a.Authorize(tok, auth.ActionPublish, "cam1")
			if err != nil {
				t.Fatalf("Authorize: %v", err)
			}
			if p.Name != "encoder-7" || p.Kind != auth.KindJWT {
				t.Errorf("principal %+v", p)
			}
			if _, err := a.Authorize(tok, auth.ActionPlay, "cam1"); err == nil {
				t.Error("play granted")
			}
		})
	}
}

func TestSignRefuses(t *testing.T) {
	keys(t)
	good := auth.Claims{ExpiresAt: time.Now().Add(time.Hour).Unix()}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		sign func() (string, error)
		want string
	}{
		{"short hs256 secret", func() (string, error) { return auth.SignHS256([]byte("short"), good) }, "at least 32 bytes"},
		{"no expiry", func() (string, error) { return auth.SignHS256(hsSecret, auth.Claims{Subject: "x"}) }, "need an expiry"},
		{"unknown action", func() (string, error) {
			return auth.SignHS256(hsSecret, auth.Claims{ExpiresAt: good.ExpiresAt, Actions: []auth.Action{"admin"}})
		}, "unknown action admin"},
		{"bad stream", func() (string, error) {
			return auth.SignHS256(hsSecret, auth.Claims{ExpiresAt: good.ExpiresAt, Streams: []string{"a b"}})
		}, `invalid stream name "a b"`},
		{"exp in milliseconds", func() (string, error) {
			return auth.SignHS256(hsSecret, auth.Claims{ExpiresAt: time.Now().UnixMilli() * 1000})
		}, "unix seconds"},
		{"nil key", func() (string, error) { return auth.Sign(nil, "", good) }, "no signing key"},
		{"ed25519", func() (string, error) { return auth.Sign(edKey, "", good) }, "unsupported key type"},
		{"p-384", func() (string, error) { return auth.Sign(p384Key, "", good) }, "only P-256"},
		{"rsa 1024", func() (string, error) { return auth.Sign(rsa1024Key, "", good) }, "at least 2048"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok, err := c.sign()
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.want)) {
				t.Errorf("got %q, %v; want an error saying %q", tok, err, c.want)
			}
		})
	}
}
