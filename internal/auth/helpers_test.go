package auth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/auth"
)

// Keys shared by the tests: RSA generation takes a while.
var (
	keysOnce            sync.Once
	keysErr             error
	rsaKey, rsaKey2     *rsa.PrivateKey
	rsa1024Key          *rsa.PrivateKey
	ecKey, ecKey2       *ecdsa.PrivateKey
	p384Key             *ecdsa.PrivateKey
	hsSecret, hsSecret2 = []byte("0123456789abcdef0123456789abcdef"), []byte("fedcba9876543210fedcba9876543210")
)

// Static secrets of the tests.
const (
	staticToken        = "s3cr3t-token-for-tests-0001"
	staticTokenLimited = "s3cr3t-token-for-tests-0002"
	publishKeyCam1     = "publish-key-cam1-0123456789"
	publishKeyCam2     = "publish-key-cam2-0123456789"
)

func keys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() { keysErr = generateKeys() })
	if keysErr != nil {
		t.Fatal(keysErr)
	}
}

func generateKeys() (err error) {
	if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return err
	}
	if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return err
	}
	if rsa1024Key, err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
		return err
	}
	if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return err
	}
	if ecKey2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return err
	}
	p384Key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	return err
}

var b64 = base64.RawURLEncoding

// signer makes the signature of a hand-built token.
type signer struct {
	alg  string
	kid  string
	sign func(t testing.TB, input []byte) []byte
}

func hs(secret []byte) signer {
	return signer{alg: "HS256", sign: func(_ testing.TB, input []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(input)
		return m.Sum(nil)
	}}
}

func rs(key *rsa.PrivateKey) signer {
	return signer{alg: "RS256", sign: func(t testing.TB, input []byte) []byte {
		d := sha256.Sum256(input)
		sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}}
}

// es signs ES256 as JWS wants it, raw R||S.
func es(key *ecdsa.PrivateKey) signer {
	return signer{alg: "ES256", sign: func(t testing.TB, input []byte) []byte {
		d := sha256.Sum256(input)
		r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig
	}}
}

// esDER signs ES256 in the ASN.1 form that JWS does not use.
func esDER(key *ecdsa.PrivateKey) signer {
	return signer{alg: "ES256", sign: func(t testing.TB, input []byte) []byte {
		d := sha256.Sum256(input)
		sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}}
}

func (s signer) withKID(kid string) signer { s.kid = kid; return s }
func (s signer) withAlg(alg string) signer { s.alg = alg; return s }

// claims is a token payload built by hand, so that tests can leave out or
// misspell what Sign would refuse.
type claims map[string]any

func validClaims() claims {
	return claims{
		"sub":     "alice",
		"exp":     time.Now().Add(time.Hour).Unix(),
		"streams": []string{"cam1"},
		"actions": []string{"play"},
	}
}

func (c claims) with(kv ...any) claims {
	out := claims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// token builds a JWT with header {"alg","typ","kid"} and the claims.
func token(t testing.TB, s signer, c claims) string {
	t.Helper()
	h := map[string]any{"alg": s.alg, "typ": "JWT"}
	if s.kid != "" {
		h["kid"] = s.kid
	}
	return rawToken(t, s, mustJSON(t, h), mustJSON(t, c))
}

// rawToken builds a JWT of the exact header and payload bytes.
func rawToken(t testing.TB, s signer, header, payload []byte) string {
	t.Helper()
	input := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	var sig []byte
	if s.sign != nil {
		sig = s.sign(t, []byte(input))
	}
	return input + "." + b64.EncodeToString(sig)
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pkixPEM(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func pkcs1PEM(pub *rsa.PublicKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)})
}

func certPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "prism test issuer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func rsaJWK(pub *rsa.PublicKey, kid string) map[string]any {
	return map[string]any{
		"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b64.EncodeToString(pub.N.Bytes()),
		"e": b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}
}

func ecJWK(t testing.TB, pub *ecdsa.PublicKey, kid string) map[string]any {
	t.Helper()
	raw, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	n := (len(raw) - 1) / 2
	return map[string]any{
		"kty": "EC", "kid": kid, "crv": pub.Curve.Params().Name,
		"x": b64.EncodeToString(raw[1 : 1+n]),
		"y": b64.EncodeToString(raw[1+n:]),
	}
}

func jwks(t testing.TB, keys ...map[string]any) []byte {
	t.Helper()
	return mustJSON(t, map[string]any{"keys": keys})
}

func newAuthorizer(t testing.TB, cfg auth.Config) *auth.Authorizer {
	t.Helper()
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// checkRefusal checks that err wraps want (nil: no error) with reason, and
// never shows the credential.
func checkRefusal(t testing.TB, err, want error, reason, credential string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	if !strings.Contains(err.Error(), reason) {
		t.Errorf("error %q does not say %q", err, reason)
	}
	if len(credential) >= 8 && strings.Contains(err.Error(), credential) {
		t.Errorf("error %q shows the credential", err)
	}
	if err.Error() != strings.ToLower(err.Error()[:1])+err.Error()[1:] {
		t.Errorf("error %q is not lower-case", err)
	}
}
