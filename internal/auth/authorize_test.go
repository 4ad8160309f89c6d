package auth_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/auth"
)

// jwtFixture is one way of configuring JWT verification, with the signers
// that must pass (right), fail on the signature (wrong) and fail on the
// algorithm (confusion).
type jwtFixture struct {
	name      string
	cfg       auth.Config
	right     signer
	wrong     signer
	confusion map[string]signer
}

func jwtFixtures(t *testing.T) []jwtFixture {
	keys(t)
	rsaPEM := pkixPEM(t, &rsaKey.PublicKey)
	ecPEM := pkixPEM(t, &ecKey.PublicKey)
	set := jwks(t, rsaJWK(&rsaKey.PublicKey, "r1"), ecJWK(t, &ecKey.PublicKey, "e1"))
	cfg := func(j auth.JWTConfig) auth.Config { return auth.Config{JWT: j} }
	return []jwtFixture{{
		name:  "hs256",
		cfg:   cfg(auth.JWTConfig{HS256Secret: string(hsSecret)}),
		right: hs(hsSecret), wrong: hs(hsSecret2),
		confusion: map[string]signer{"rs256": rs(rsaKey), "es256": es(ecKey), "hs512 label": hs(hsSecret).withAlg("HS512")},
	}, {
		name:  "hs256 file",
		cfg:   cfg(auth.JWTConfig{HS256SecretFile: writeFile(t, "secret", append(hsSecret, '\n'))}),
		right: hs(hsSecret), wrong: hs(hsSecret2),
		confusion: map[string]signer{"rs256": rs(rsaKey)},
	}, {
		name:  "rs256 pkix",
		cfg:   cfg(auth.JWTConfig{PublicKeyFile: writeFile(t, "rsa.pem", rsaPEM)}),
		right: rs(rsaKey), wrong: rs(rsaKey2),
		confusion: map[string]signer{
			"hs256 with the public key pem": hs(rsaPEM),
			"hs256 with the modulus":        hs(rsaKey.N.Bytes()),
			"es256":                         es(ecKey),
			"ps256 label":                   rs(rsaKey).withAlg("PS256"),
		},
	}, {
		name:  "rs256 pkcs1",
		cfg:   cfg(auth.JWTConfig{PublicKeyFile: writeFile(t, "rsa1.pem", pkcs1PEM(&rsaKey.PublicKey))}),
		right: rs(rsaKey), wrong: rs(rsaKey2),
		confusion: map[string]signer{"hs256 with the public key pem": hs(pkcs1PEM(&rsaKey.PublicKey))},
	}, {
		name:  "rs256 certificate",
		cfg:   cfg(auth.JWTConfig{PublicKeyFile: writeFile(t, "cert.pem", certPEM(t, rsaKey))}),
		right: rs(rsaKey), wrong: rs(rsaKey2),
		confusion: map[string]signer{"hs256 with the certificate pem": hs(certPEM(t, rsaKey))},
	}, {
		name:  "es256",
		cfg:   cfg(auth.JWTConfig{PublicKeyFile: writeFile(t, "ec.pem", ecPEM)}),
		right: es(ecKey), wrong: es(ecKey2),
		confusion: map[string]signer{
			"hs256 with the public key pem": hs(ecPEM),
			"rs256":                         rs(rsaKey),
			"same alg, asn.1 signature":     esDER(ecKey),
		},
	}, {
		name:  "jwks rsa",
		cfg:   cfg(auth.JWTConfig{JWKSFile: writeFile(t, "jwks.json", set)}),
		right: rs(rsaKey).withKID("r1"), wrong: rs(rsaKey2).withKID("r1"),
		confusion: map[string]signer{
			"hs256 with the jwks":   hs(set).withKID("r1"),
			"rs256 with the ec kid": rs(rsaKey).withKID("e1"),
		},
	}, {
		name:  "jwks ec",
		cfg:   cfg(auth.JWTConfig{JWKSFile: writeFile(t, "jwks.json", set)}),
		right: es(ecKey).withKID("e1"), wrong: es(ecKey2).withKID("e1"),
		confusion: map[string]signer{
			"hs256 with the jwks":       hs(set).withKID("e1"),
			"es256 with the rsa kid":    es(ecKey).withKID("r1"),
			"same alg, asn.1 signature": esDER(ecKey).withKID("e1"),
		},
	}}
}

// TestJWT runs every JWT configuration through the same cases.
func TestJWT(t *testing.T) {
	for _, f := range jwtFixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			a := newAuthorizer(t, f.cfg)
			if !a.Enabled() {
				t.Fatal("not enabled")
			}
			now := time.Now()
			valid := validClaims()
			type tc struct {
				name    string
				cred    string
				action  auth.Action
				stream  string
				want    error
				reason  string
				wantWho *auth.Principal
			}
			cases := []tc{
				{name: "right", cred: token(t, f.right, valid), action: auth.ActionPlay, stream: "cam1",
					wantWho: &auth.Principal{Name: "alice", Kind: auth.KindJWT, Streams: []string{"cam1"}, Actions: []auth.Action{auth.ActionPlay}}},
				{name: "wrong key", cred: token(t, f.wrong, valid), want: auth.ErrUnauthenticated, reason: "signature does not verify"},
				{name: "expired", cred: token(t, f.right, valid.with("exp", now.Add(-time.Hour).Unix())), want: auth.ErrUnauthenticated, reason: "token expired"},
				{name: "expired within leeway", cred: token(t, f.right, valid.with("exp", now.Add(-10*time.Second).Unix()))},
				{name: "not yet valid", cred: token(t, f.right, valid.with("nbf", now.Add(time.Hour).Unix())), want: auth.ErrUnauthenticated, reason: "token not yet valid"},
				{name: "not yet valid within leeway", cred: token(t, f.right, valid.with("nbf", now.Add(10*time.Second).Unix()))},
				{name: "fractional dates", cred: token(t, f.right, valid.with("nbf", float64(now.Unix())-0.5, "exp", float64(now.Unix())+3600.25))},
				{name: "no expiry", cred: token(t, f.right, valid.with("exp", nil)), want: auth.ErrUnauthenticated, reason: "token has no expiry"},
				{name: "other stream", cred: token(t, f.right, valid), stream: "cam2", want: auth.ErrForbidden, reason: "token not valid for stream cam2"},
				{name: "other action", cred: token(t, f.right, valid), action: auth.ActionPublish, want: auth.ErrForbidden, reason: "action publish not granted"},
				{name: "alg none", cred: rawToken(t, signer{}, []byte(`{"alg":"none","typ":"JWT"}`), mustJSON(t, valid)), want: auth.ErrUnauthenticated, reason: "alg none not accepted"},
				{name: "alg NONE signed", cred: token(t, f.right.withAlg("NONE"), valid), want: auth.ErrUnauthenticated, reason: "alg none not accepted"},
				{name: "alg missing", cred: rawToken(t, f.right, []byte(`{"typ":"JWT"}`), mustJSON(t, valid)), want: auth.ErrUnauthenticated, reason: "no alg"},
				{name: "garbage segments", cred: "eyJhbGciOiJIUzI1NiJ9.!!!.x", want: auth.ErrUnauthenticated, reason: "malformed token"},
				{name: "garbage header", cred: "eyJub3QganNvbg.eyJ9.c2ln", want: auth.ErrUnauthenticated, reason: "malformed token header"},
				{name: "padded segments", cred: strings.Replace(token(t, f.right, valid), ".", "==.", 1), want: auth.ErrUnauthenticated, reason: "malformed token"},
				{name: "empty signature", cred: strings.TrimRight(token(t, f.right, valid), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"), want: auth.ErrUnauthenticated, reason: "malformed token signature"},
				{name: "tampered claims", cred: swapPayload(token(t, f.right, valid), mustJSON(t, valid.with("streams", []string{"cam2"}))), stream: "cam2", want: auth.ErrUnauthenticated, reason: "signature does not verify"},
				{name: "oversized", cred: token(t, f.right, valid.with("pad", strings.Repeat("x", auth.MaxCredentialLen))), want: auth.ErrUnauthenticated, reason: "credential too large"},
				{name: "static token shape", cred: "not-a-jwt-but-long-enough", want: auth.ErrUnauthenticated, reason: "unknown token"},
			}
			for name, s := range f.confusion {
				// A token of another algorithm is refused for its label; one
				// of the right label but the wrong form or key (an ASN.1
				// ES256 signature) does not verify.
				reason := "not accepted"
				if strings.HasPrefix(name, "same alg") {
					reason = "signature does not verify"
				}
				cases = append(cases, tc{name: "alg confusion " + name, cred: token(t, s, valid), want: auth.ErrUnauthenticated, reason: reason})
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					if c.action == "" {
						c.action = auth.ActionPlay
					}
					if c.stream == "" {
						c.stream = "cam1"
					}
					p, err := a.Authorize(c.cred, c.action, c.stream)
					checkRefusal(t, err, c.want, c.reason, c.cred)
					if c.wantWho != nil && !reflect.DeepEqual(p, *c.wantWho) {
						t.Errorf("principal %+v, want %+v", p, *c.wantWho)
					}
					if c.want == nil && p.Kind != auth.KindJWT {
						t.Errorf("kind %q", p.Kind)
					}
					if errors.Is(c.want, auth.ErrForbidden) && p.Name != "alice" {
						t.Errorf("a forbidden refusal names %+v, want alice", p)
					}
				})
			}
		})
	}
}

// swapPayload replaces the claims of a token, keeping its signature.
func swapPayload(tok string, payload []byte) string {
	parts := strings.Split(tok, ".")
	return parts[0] + "." + b64.EncodeToString(payload) + "." + parts[2]
}

func TestJWTClaims(t *testing.T) {
	now := time.Now()
	exp := now.Add(time.Hour).Unix()
	s := hs(hsSecret)
	plain := newAuthorizer(t, auth.Config{JWT: auth.JWTConfig{HS256Secret: string(hsSecret)}})
	strict := newAuthorizer(t, auth.Config{JWT: auth.JWTConfig{HS256Secret: string(hsSecret), Issuer: "https://idp.example", Audience: "prism", Leeway: time.Second}})
	cases := []struct {
		name    string
		a       *auth.Authorizer
		cred    string
		action  auth.Action
		stream  string
		want    error
		reason  string
		wantWho *auth.Principal
	}{
		{name: "every stream and action", a: plain, cred: token(t, s, claims{"exp": exp}), action: auth.ActionAPIWrite, stream: "",
			wantWho: &auth.Principal{Name: "jwt", Kind: auth.KindJWT}},
		{name: "single stream and action claims", a: plain, cred: token(t, s, claims{"exp": exp, "stream": "cam3", "action": "publish"}), action: auth.ActionPublish, stream: "cam3"},
		{name: "single stream claim joins the list", a: plain, cred: token(t, s, claims{"exp": exp, "stream": "cam3", "streams": []string{"cam1"}}), action: auth.ActionPlay, stream: "cam3"},
		{name: "single action claim, other action", a: plain, cred: token(t, s, claims{"exp": exp, "action": "play"}), action: auth.ActionPublish, stream: "cam1", want: auth.ErrForbidden, reason: "action publish not granted"},
		{name: "empty stream list grants none", a: plain, cred: token(t, s, claims{"exp": exp, "streams": []string{}}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrForbidden, reason: "token grants no stream"},
		{name: "empty action list grants none", a: plain, cred: token(t, s, claims{"exp": exp, "actions": []string{}}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrForbidden, reason: "token grants no action"},
		{name: "unknown actions grant nothing", a: plain, cred: token(t, s, claims{"exp": exp, "actions": []string{"admin", "*"}}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrForbidden, reason: "action play not granted"},
		{name: "null claims are absent", a: plain, cred: token(t, s, claims{"exp": exp, "streams": nil, "nbf": nil}), action: auth.ActionPlay, stream: "cam1"},
		{name: "stream list of numbers", a: plain, cred: token(t, s, claims{"exp": exp, "streams": []int{1}}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "malformed streams claim"},
		{name: "exp as a string", a: plain, cred: token(t, s, claims{"exp": "tomorrow"}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "malformed exp claim"},
		{name: "exp out of range", a: plain, cred: token(t, s, claims{"exp": 1e300}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "malformed exp claim"},
		{name: "negative nbf", a: plain, cred: token(t, s, claims{"exp": exp, "nbf": -1}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "malformed nbf claim"},
		{name: "sub as a number", a: plain, cred: token(t, s, claims{"exp": exp, "sub": 7}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "malformed sub claim"},
		{name: "subject is sanitized", a: plain, cred: token(t, s, claims{"exp": exp, "sub": "bob\nsmith"}), action: auth.ActionPlay, stream: "cam1",
			wantWho: &auth.Principal{Name: "bob_smith", Kind: auth.KindJWT}},
		{name: "aud ignored when not configured", a: plain, cred: token(t, s, claims{"exp": exp, "aud": "other"}), action: auth.ActionPlay, stream: "cam1"},
		{name: "iss and aud match", a: strict, cred: token(t, s, claims{"exp": exp, "iss": "https://idp.example", "aud": "prism"}), action: auth.ActionPlay, stream: "cam1"},
		{name: "aud list contains", a: strict, cred: token(t, s, claims{"exp": exp, "iss": "https://idp.example", "aud": []string{"other", "prism"}}), action: auth.ActionPlay, stream: "cam1"},
		{name: "aud list lacks", a: strict, cred: token(t, s, claims{"exp": exp, "iss": "https://idp.example", "aud": []string{"other"}}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "audience does not match"},
		{name: "aud missing", a: strict, cred: token(t, s, claims{"exp": exp, "iss": "https://idp.example"}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "audience does not match"},
		{name: "aud malformed", a: strict, cred: token(t, s, claims{"exp": exp, "iss": "https://idp.example", "aud": 5}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "malformed aud claim"},
		{name: "iss wrong", a: strict, cred: token(t, s, claims{"exp": exp, "iss": "https://evil.example", "aud": "prism"}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "issuer does not match"},
		{name: "iss missing", a: strict, cred: token(t, s, claims{"exp": exp, "aud": "prism"}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "issuer does not match"},
		{name: "configured leeway", a: strict, cred: token(t, s, claims{"exp": now.Add(-10 * time.Second).Unix(), "iss": "https://idp.example", "aud": "prism"}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "token expired"},
		{name: "duplicate header member", a: plain, cred: rawToken(t, s, []byte(`{"alg":"HS256","alg":"none"}`), mustJSON(t, claims{"exp": exp})), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "malformed token header"},
		{name: "header member names are exact", a: plain, cred: rawToken(t, s, []byte(`{"ALG":"HS256"}`), mustJSON(t, claims{"exp": exp})), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "no alg"},
		{name: "duplicate claim", a: plain, cred: rawToken(t, s, []byte(`{"alg":"HS256"}`), []byte(`{"exp":1,"exp":99999999999}`)), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "malformed token claims"},
		{name: "trailing data in claims", a: plain, cred: rawToken(t, s, []byte(`{"alg":"HS256"}`), []byte(`{"exp":99999999999}{}`)), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "malformed token claims"},
		{name: "claims not an object", a: plain, cred: rawToken(t, s, []byte(`{"alg":"HS256"}`), []byte(`[1]`)), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "malformed token claims"},
		{name: "critical extension", a: plain, cred: rawToken(t, s, []byte(`{"alg":"HS256","crit":["exp"]}`), mustJSON(t, claims{"exp": exp})), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "critical extensions"},
		{name: "alg not a string", a: plain, cred: rawToken(t, s, []byte(`{"alg":1}`), mustJSON(t, claims{"exp": exp})), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "malformed token header"},
		{name: "unknown alg is not echoed", a: plain, cred: token(t, s.withAlg("HS256\u2028evil"), claims{"exp": exp}), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "alg not accepted: the key is for HS256"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := c.a.Authorize(c.cred, c.action, c.stream)
			checkRefusal(t, err, c.want, c.reason, c.cred)
			if c.wantWho != nil && !reflect.DeepEqual(p, *c.wantWho) {
				t.Errorf("principal %+v, want %+v", p, *c.wantWho)
			}
		})
	}
}

func TestJWKSKeySelection(t *testing.T) {
	keys(t)
	exp := time.Now().Add(time.Hour).Unix()
	two := newAuthorizer(t, auth.Config{JWT: auth.JWTConfig{JWKSFile: writeFile(t, "two.json", jwks(t, rsaJWK(&rsaKey.PublicKey, "r1"), rsaJWK(&rsaKey2.PublicKey, "r2")))}})
	oneWithKID := newAuthorizer(t, auth.Config{JWT: auth.JWTConfig{JWKSFile: writeFile(t, "one.json", jwks(t, ecJWK(t, &ecKey.PublicKey, "e1")))}})
	noKID := ecJWK(t, &ecKey.PublicKey, "")
	delete(noKID, "kid")
	oneNoKID := newAuthorizer(t, auth.Config{JWT: auth.JWTConfig{JWKSFile: writeFile(t, "nokid.json", jwks(t, noKID))}})
	skipped := newAuthorizer(t, auth.Config{JWT: auth.JWTConfig{JWKSFile: writeFile(t, "mixed.json", jwks(t,
		map[string]any{"kty": "oct", "kid": "s", "k": b64.EncodeToString(hsSecret)},
		map[string]any{"kty": "OKP", "kid": "o", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
		ecJWK(t, &p384Key.PublicKey, "p384"),
		func() map[string]any { k := rsaJWK(&rsaKey2.PublicKey, "enc"); k["use"] = "enc"; return k }(),
		func() map[string]any { k := rsaJWK(&rsaKey2.PublicKey, "ps"); k["alg"] = "PS256"; return k }(),
		rsaJWK(&rsaKey.PublicKey, "r1"),
	))}})
	cases := []struct {
		name   string
		a      *auth.Authorizer
		cred   string
		want   error
		reason string
	}{
		{name: "first kid", a: two, cred: token(t, rs(rsaKey).withKID("r1"), claims{"exp": exp})},
		{name: "second kid", a: two, cred: token(t, rs(rsaKey2).withKID("r2"), claims{"exp": exp})},
		{name: "kid of the other key", a: two, cred: token(t, rs(rsaKey).withKID("r2"), claims{"exp": exp}), want: auth.ErrUnauthenticated, reason: "signature does not verify"},
		{name: "no kid, several keys", a: two, cred: token(t, rs(rsaKey), claims{"exp": exp}), want: auth.ErrUnauthenticated, reason: "token has no kid"},
		{name: "unknown kid", a: two, cred: token(t, rs(rsaKey).withKID("r3"), claims{"exp": exp}), want: auth.ErrUnauthenticated, reason: "unknown kid"},
		{name: "one key, no kid in the token", a: oneWithKID, cred: token(t, es(ecKey), claims{"exp": exp})},
		{name: "one key, another kid", a: oneWithKID, cred: token(t, es(ecKey).withKID("e2"), claims{"exp": exp}), want: auth.ErrUnauthenticated, reason: "unknown kid"},
		{name: "one key without kid takes any", a: oneNoKID, cred: token(t, es(ecKey).withKID("whatever"), claims{"exp": exp})},
		{name: "unusable keys are skipped", a: skipped, cred: token(t, rs(rsaKey).withKID("r1"), claims{"exp": exp})},
		{name: "skipped oct key is not an hs256 key", a: skipped, cred: token(t, hs(hsSecret).withKID("s"), claims{"exp": exp}), want: auth.ErrUnauthenticated, reason: "unknown kid"},
		{name: "skipped enc key", a: skipped, cred: token(t, rs(rsaKey2).withKID("enc"), claims{"exp": exp}), want: auth.ErrUnauthenticated, reason: "unknown kid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.a.Authorize(c.cred, auth.ActionPlay, "cam1")
			checkRefusal(t, err, c.want, c.reason, c.cred)
		})
	}
}

// mixedConfig has every kind of credential: tokens, JWTs (HS256) and
// publish keys.
func mixedConfig() auth.Config {
	return auth.Config{
		Tokens: []auth.Token{
			{Token: staticToken, Name: "ops"},
			{Token: staticTokenLimited, Actions: []auth.Action{auth.ActionPlay, auth.ActionAPIRead}, Streams: []string{"cam1"}},
		},
		JWT:         auth.JWTConfig{HS256Secret: string(hsSecret)},
		PublishKeys: map[string]string{"cam1": publishKeyCam1, "cam2": publishKeyCam2},
	}
}

func TestStaticTokens(t *testing.T) {
	a := newAuthorizer(t, mixedConfig())
	cases := []struct {
		name    string
		cred    string
		action  auth.Action
		stream  string
		want    error
		reason  string
		wantWho *auth.Principal
	}{
		{name: "right", cred: staticToken, action: auth.ActionAPIWrite, stream: "cam9", wantWho: &auth.Principal{Name: "ops", Kind: auth.KindToken}},
		{name: "right, limited", cred: staticTokenLimited, action: auth.ActionPlay, stream: "cam1",
			wantWho: &auth.Principal{Name: "token-2", Kind: auth.KindToken, Streams: []string{"cam1"}, Actions: []auth.Action{auth.ActionPlay, auth.ActionAPIRead}}},
		{name: "wrong", cred: staticToken + "x", action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "unknown token"},
		{name: "prefix", cred: staticToken[:20], action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "unknown token"},
		{name: "other stream", cred: staticTokenLimited, action: auth.ActionPlay, stream: "cam2", want: auth.ErrForbidden, reason: "token not valid for stream cam2"},
		{name: "other stream, odd name quoted", cred: staticTokenLimited, action: auth.ActionPlay, stream: "../x\n", want: auth.ErrForbidden, reason: `token not valid for stream "../x\n"`},
		{name: "other action", cred: staticTokenLimited, action: auth.ActionPublish, stream: "cam1", want: auth.ErrForbidden, reason: "action publish not granted"},
		{name: "unknown action", cred: staticToken, action: "admin", stream: "cam1", want: auth.ErrForbidden, reason: "unknown action admin"},
		{name: "empty", cred: "", action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "no credential"},
		{name: "garbage", cred: "\x00\xff garbage", action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "unknown token"},
		{name: "oversized", cred: strings.Repeat("a", auth.MaxCredentialLen+1), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "credential too large"},
		{name: "publish key is not an api token", cred: publishKeyCam1, action: auth.ActionPublish, stream: "cam1", want: auth.ErrUnauthenticated, reason: "unknown token"},
		// Static tokens do not expire: expiry, not-yet-valid and algorithm
		// cases are those of TestJWT.
		{name: "jwt alg none", cred: rawToken(t, signer{}, []byte(`{"alg":"none"}`), mustJSON(t, validClaims())), action: auth.ActionPlay, stream: "cam1", want: auth.ErrUnauthenticated, reason: "alg none not accepted"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := a.Authorize(c.cred, c.action, c.stream)
			checkRefusal(t, err, c.want, c.reason, c.cred)
			if c.wantWho != nil && !reflect.DeepEqual(p, *c.wantWho) {
				t.Errorf("principal %+v, want %+v", p, *c.wantWho)
			}
		})
	}

	t.Run("jwt shape without a jwt key", func(t *testing.T) {
		a := newAuthorizer(t, auth.Config{Tokens: []auth.Token{{Token: staticToken}}})
		cred := token(t, hs(hsSecret), validClaims())
		_, err := a.Authorize(cred, auth.ActionPlay, "cam1")
		checkRefusal(t, err, auth.ErrUnauthenticated, "jwt not accepted", cred)
	})
}

// TestStreamless pins what stream "" means (see the package documentation).
func TestStreamless(t *testing.T) {
	a := newAuthorizer(t, mixedConfig())
	limitedJWT := token(t, hs(hsSecret), claims{"exp": time.Now().Add(time.Hour).Unix(), "streams": []string{"cam1"}})
	for _, c := range []struct {
		name   string
		cred   string
		action auth.Action
		want   error
	}{
		{"unlimited token, api.read", staticToken, auth.ActionAPIRead, nil},
		{"unlimited token, api.write", staticToken, auth.ActionAPIWrite, nil},
		{"unlimited token, metrics", staticToken, auth.ActionMetrics, nil},
		{"limited token, api.read", staticTokenLimited, auth.ActionAPIRead, nil},
		{"limited token, play", staticTokenLimited, auth.ActionPlay, auth.ErrForbidden},
		{"limited jwt, api.read", limitedJWT, auth.ActionAPIRead, nil},
		{"limited jwt, api.write", limitedJWT, auth.ActionAPIWrite, auth.ErrForbidden},
		{"limited jwt, metrics", limitedJWT, auth.ActionMetrics, auth.ErrForbidden},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := a.Authorize(c.cred, c.action, "")
			checkRefusal(t, err, c.want, "needs a credential valid for every stream", c.cred)
			if err == nil && c.action == auth.ActionAPIRead && p.Streams != nil {
				// The caller filters the list.
				if p.Permits(auth.ActionAPIRead, "cam1") != nil || p.Permits(auth.ActionAPIRead, "cam2") == nil {
					t.Errorf("Permits does not filter for %+v", p)
				}
			}
		})
	}
}

func TestPublishKeys(t *testing.T) {
	a := newAuthorizer(t, mixedConfig())
	onlyKeys := newAuthorizer(t, auth.Config{PublishKeys: map[string]string{"cam1": publishKeyCam1}})
	jwtPublish := token(t, hs(hsSecret), claims{"exp": time.Now().Add(time.Hour).Unix(), "streams": []string{"cam1"}, "actions": []string{"publish"}})
	expired := token(t, hs(hsSecret), claims{"exp": time.Now().Add(-time.Hour).Unix()})
	cases := []struct {
		name    string
		a       *auth.Authorizer
		stream  string
		key     string
		want    error
		reason  string
		wantWho *auth.Principal
	}{
		{name: "right", a: a, stream: "cam1", key: publishKeyCam1,
			wantWho: &auth.Principal{Name: "publish_key:cam1", Kind: auth.KindPublishKey, Streams: []string{"cam1"}, Actions: []auth.Action{auth.ActionPublish}}},
		{name: "wrong", a: a, stream: "cam1", key: publishKeyCam1 + "x", want: auth.ErrUnauthenticated, reason: "publish key does not match"},
		{name: "other stream's key", a: a, stream: "cam2", key: publishKeyCam1, want: auth.ErrUnauthenticated, reason: "publish key does not match"},
		{name: "empty", a: a, stream: "cam1", key: "", want: auth.ErrUnauthenticated, reason: "no credential"},
		{name: "oversized", a: a, stream: "cam1", key: strings.Repeat("k", auth.MaxCredentialLen+1), want: auth.ErrUnauthenticated, reason: "credential too large"},
		{name: "stream without a key, unknown token", a: a, stream: "cam3", key: publishKeyCam1, want: auth.ErrUnauthenticated, reason: "unknown token"},
		{name: "fallback: api token", a: a, stream: "cam3", key: staticToken, wantWho: &auth.Principal{Name: "ops", Kind: auth.KindToken}},
		{name: "fallback: api token on a stream with a key", a: a, stream: "cam1", key: staticToken},
		{name: "fallback: token without publish", a: a, stream: "cam1", key: staticTokenLimited, want: auth.ErrForbidden, reason: "action publish not granted"},
		{name: "fallback: jwt", a: a, stream: "cam1", key: jwtPublish},
		{name: "fallback: jwt, other stream", a: a, stream: "cam2", key: jwtPublish, want: auth.ErrForbidden, reason: "token not valid for stream cam2"},
		{name: "fallback: expired jwt says so", a: a, stream: "cam1", key: expired, want: auth.ErrUnauthenticated, reason: "token expired"},
		{name: "keys only: right", a: onlyKeys, stream: "cam1", key: publishKeyCam1},
		{name: "keys only: wrong", a: onlyKeys, stream: "cam1", key: staticToken, want: auth.ErrUnauthenticated, reason: "publish key does not match"},
		{name: "keys only: stream without a key", a: onlyKeys, stream: "cam2", key: publishKeyCam1, want: auth.ErrUnauthenticated, reason: "authentication is not configured"},
		{name: "nil authorizer", a: nil, stream: "cam1", key: publishKeyCam1, want: auth.ErrUnauthenticated, reason: "authentication is not configured"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := c.a.AuthorizePublishKey(c.stream, c.key)
			checkRefusal(t, err, c.want, c.reason, c.key)
			if c.wantWho != nil && !reflect.DeepEqual(p, *c.wantWho) {
				t.Errorf("principal %+v, want %+v", p, *c.wantWho)
			}
		})
	}
	if onlyKeys.Enabled() {
		t.Error("publish keys alone enable authentication")
	}
	if !onlyKeys.HasPublishKey("cam1") || onlyKeys.HasPublishKey("cam2") {
		t.Error("HasPublishKey")
	}
}

func TestAuthorizeRequest(t *testing.T) {
	none := newAuthorizer(t, auth.Config{})
	withKeys := newAuthorizer(t, auth.Config{PublishKeys: map[string]string{"cam1": publishKeyCam1}})
	enabled := newAuthorizer(t, mixedConfig())
	local := func(cred string) func() *http.Request {
		return func() *http.Request { return newRequest("127.0.0.1:5000", "localhost:8080", cred) }
	}
	remote := func(cred string) func() *http.Request {
		return func() *http.Request { return newRequest("10.0.0.1:5000", "prism.example:8080", cred) }
	}
	cases := []struct {
		name    string
		a       *auth.Authorizer
		req     func() *http.Request
		want    error
		reason  string
		wantWho string
	}{
		{name: "nothing configured, local", a: none, req: local(""), wantWho: auth.KindLocal},
		{name: "nil authorizer, local", a: nil, req: local(""), wantWho: auth.KindLocal},
		{name: "publish keys only, local", a: withKeys, req: local(""), wantWho: auth.KindLocal},
		{name: "nothing configured, remote", a: none, req: remote(staticToken), want: auth.ErrForbidden, reason: "only local requests are allowed"},
		{name: "nothing configured, rebinding", a: none, req: func() *http.Request { return newRequest("127.0.0.1:5000", "evil.example", "") }, want: auth.ErrForbidden, reason: "only local requests"},
		{name: "enabled, local needs a credential", a: enabled, req: local(""), want: auth.ErrUnauthenticated, reason: "no credential"},
		{name: "enabled, remote with token", a: enabled, req: remote(staticToken), wantWho: auth.KindToken},
		{name: "enabled, remote with wrong token", a: enabled, req: remote("wrong-token-wrong-token"), want: auth.ErrUnauthenticated, reason: "unknown token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := c.a.AuthorizeRequest(c.req(), auth.ActionAPIWrite, "cam1")
			checkRefusal(t, err, c.want, c.reason, "")
			if err == nil && p.Kind != c.wantWho {
				t.Errorf("kind %q, want %q", p.Kind, c.wantWho)
			}
		})
	}
}

func TestFailures(t *testing.T) {
	a := newAuthorizer(t, mixedConfig())
	want := map[auth.Action]uint64{}
	for _, action := range auth.Actions() {
		want[action] = 0
	}
	if got := a.Failures(); !reflect.DeepEqual(got, want) {
		t.Fatalf("fresh counters %v", got)
	}
	_, _ = a.Authorize("", auth.ActionPlay, "cam1")                                      // unauthenticated
	_, _ = a.Authorize(staticTokenLimited, auth.ActionPlay, "cam2")                      // forbidden
	_, _ = a.Authorize(staticTokenLimited, auth.ActionPlay, "cam1")                      // fine
	_, _ = a.Authorize(staticTokenLimited, auth.ActionMetrics, "")                       // forbidden
	_, _ = a.Authorize(staticToken, "admin", "")                                         // unknown action: not counted
	_, _ = a.AuthorizePublishKey("cam1", "nope-nope-nope-nope")                          // counted once
	_, _ = a.AuthorizePublishKey("cam1", publishKeyCam1)                                 // fine
	_, _ = a.AuthorizeRequest(newRequest("10.0.0.1:1", "x", ""), auth.ActionAPIRead, "") // no credential
	want[auth.ActionPlay] = 2
	want[auth.ActionMetrics] = 1
	want[auth.ActionPublish] = 1
	want[auth.ActionAPIRead] = 1
	if got := a.Failures(); !reflect.DeepEqual(got, want) {
		t.Errorf("failures %v, want %v", got, want)
	}
	var nilA *auth.Authorizer
	if got := nilA.Failures(); len(got) != len(auth.Actions()) {
		t.Errorf("nil authorizer failures %v", got)
	}
}

// TestConcurrent is meant for -race: one Authorizer, many goroutines.
func TestConcurrent(t *testing.T) {
	a := newAuthorizer(t, mixedConfig())
	good := token(t, hs(hsSecret), validClaims())
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				switch (i + j) % 4 {
				case 0:
					if _, err := a.Authorize(good, auth.ActionPlay, "cam1"); err != nil {
						t.Error(err)
						return
					}
				case 1:
					_, _ = a.Authorize(staticTokenLimited, auth.ActionPublish, "cam1")
				case 2:
					_, _ = a.AuthorizePublishKey("cam2", publishKeyCam2)
				default:
					_ = a.Failures()
				}
			}
		})
	}
	wg.Wait()
	if got := a.Failures()[auth.ActionPublish]; got != 400 {
		t.Errorf("publish failures %d, want 400", got)
	}
}

// newRequest is a request from remote to host, with a bearer token unless
// bearer is "".
func newRequest(remote, host, bearer string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://prism.test/", nil)
	r.Host = host
	r.RemoteAddr = remote
	if bearer != "" {
		r.Header.Set("Authorization", "Bearer "+bearer)
	}
	return r
}
