package auth_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/auth"
)

// FuzzAuthorize feeds random credentials to an Authorizer with every kind
// of credential configured (and to one with an RSA public key): they must
// never panic, never be let in unless they are a configured secret or a
// signed token, and never show up in the error.
func FuzzAuthorize(f *testing.F) {
	keys(f)
	hsA, err := auth.New(mixedConfig())
	if err != nil {
		f.Fatal(err)
	}
	rsA, err := auth.New(auth.Config{JWT: auth.JWTConfig{PublicKeyFile: writeFile(f, "rsa.pem", pkixPEM(f, &rsaKey.PublicKey))}})
	if err != nil {
		f.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	f.Add(staticToken)
	f.Add(publishKeyCam1)
	f.Add(token(f, hs(hsSecret), claims{"exp": exp, "streams": []string{"cam1"}}))
	f.Add(token(f, rs(rsaKey), claims{"exp": exp}))
	f.Add(token(f, hs(hsSecret), claims{"exp": exp, "aud": []any{1, "x"}, "nbf": "soon"}))
	f.Add(rawToken(f, signer{}, []byte(`{"alg":"none"}`), []byte(`{"exp":99999999999}`)))

	// The credentials that may pass: configured secrets, and tokens signed
	// with the configured keys, which the fuzzer cannot forge.
	mayPass := func(cred string) bool {
		return cred == staticToken || cred == staticTokenLimited || strings.HasPrefix(cred, "eyJ")
	}
	f.Fuzz(func(t *testing.T, cred string) {
		for _, a := range []*auth.Authorizer{hsA, rsA} {
			for _, action := range append(auth.Actions(), "bogus") {
				for _, stream := range []string{"cam1", "", "bad stream"} {
					_, err := a.Authorize(cred, action, stream)
					checkFuzzResult(t, cred, err, mayPass(cred))
				}
			}
			_, err := a.AuthorizePublishKey("cam1", cred)
			checkFuzzResult(t, cred, err, mayPass(cred) || cred == publishKeyCam1)
		}
	})
}

// refusal is every refusal the package can give, its variable parts
// limited to what the fuzz target passes (actions, streams "cam1" and
// "bad stream"), so that no credential byte can hide in a message.
var refusal = regexp.MustCompile(`^(unauthenticated|forbidden): (` + strings.Join([]string{
	"no credential", "credential too large", "authentication is not configured",
	"jwt not accepted: no jwt key configured", "unknown token", "publish key does not match",
	"malformed token", "malformed token header", "malformed token signature", "malformed token claims",
	"malformed (exp|nbf|iss|sub|aud|streams|actions) claim",
	"token header has unsupported critical extensions", "token header has no alg",
	"alg none not accepted", "alg ((HS256|RS256|ES256) )?not accepted: the key is for (HS256|RS256|ES256)",
	"token has no kid", "unknown kid", "signature does not verify",
	"token has no expiry", "token expired", "token not yet valid",
	"issuer does not match", "audience does not match",
	"token grants no stream", "token grants no action",
	"unknown action bogus", `action [a-z.]+ not granted`, `action [a-z.]+ needs a credential valid for every stream`,
	`token not valid for stream (cam1|"bad stream")`,
}, "|") + `)$`)

func checkFuzzResult(t *testing.T, cred string, err error, mayPass bool) {
	t.Helper()
	if err == nil {
		if !mayPass {
			t.Fatalf("an unknown credential was let in: %q", cred)
		}
		return
	}
	if !errors.Is(err, auth.ErrUnauthenticated) && !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("error %v is neither unauthenticated nor forbidden", err)
	}
	if !refusal.MatchString(err.Error()) {
		t.Fatalf("unexpected refusal %q", err)
	}
}
