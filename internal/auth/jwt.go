package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strings"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// JWT algorithms: the only three accepted, each only with its key type.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
)

// Claims are the JWT claims that Prism mints and reads.
//
// Every token must expire: verification refuses a token without exp
// ("token has no expiry"), whatever the action, and Sign and SignHS256
// refuse to mint one. Verification ignores the claims it does not know
// (iat, jti, ...) and the header's typ; it refuses a header with crit, and
// objects with duplicate member names.
type Claims struct {
	Subject  string `json:"sub,omitempty"` // becomes Principal.Name
	Issuer   string `json:"iss,omitempty"`
	Audience string `json:"aud,omitempty"` // verification also takes a list
	// ExpiresAt is in Unix seconds; required.
	ExpiresAt int64 `json:"exp,omitempty"`
	// NotBefore is in Unix seconds; 0: valid at once.
	NotBefore int64 `json:"nbf,omitempty"`
	// Streams are the streams the token is valid for; empty: every stream.
	// Verification also accepts a single-string "stream" claim (the union
	// of both is granted). An explicitly empty list grants no stream.
	Streams []string `json:"streams,omitempty"`
	// Actions are the actions granted; empty: every action. Verification
	// also accepts a single-string "action" claim; unknown actions grant
	// nothing. An explicitly empty list grants no action.
	Actions []Action `json:"actions,omitempty"`
}

// check refuses claims that verification would refuse or misread.
func (c *Claims) check() error {
	if c.ExpiresAt <= 0 {
		return errors.New("claims need an expiry (exp): tokens without one are refused")
	}
	if c.NotBefore < 0 || c.NotBefore > maxNumericDate || c.ExpiresAt > maxNumericDate {
		return errors.New("exp and nbf must be Unix seconds")
	}
	for _, a := range c.Actions {
		if !a.Valid() {
			return fmt.Errorf("unknown action %s: use %s", quoteName(string(a)), actionList())
		}
	}
	for _, s := range c.Streams {
		if !pipeline.ValidName(s) {
			return fmt.Errorf("invalid stream name %s", quoteName(s))
		}
	}
	return nil
}

// maxNumericDate bounds exp and nbf (year 5138), far from float and int64
// overflow.
const maxNumericDate = 1e11

var b64 = base64.RawURLEncoding.Strict()

// SignHS256 mints an HS256 JWT with secret, at least MinHS256SecretLen
// bytes.
func SignHS256(secret []byte, c Claims) (string, error) {
	if len(secret) < MinHS256SecretLen {
		return "", fmt.Errorf("hs256 secret must be at least %d bytes, got %d", MinHS256SecretLen, len(secret))
	}
	input, err := signingInput(algHS256, "", &c)
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + b64.EncodeToString(mac.Sum(nil)), nil
}

// Sign mints a JWT signed with key: RS256 for an RSA key of at least 2048
// bits, ES256 for an ECDSA P-256 key (the signature in the JWS raw R||S
// form). kid, when not "", is put in the header for JWKS key selection. Any
// crypto.Signer holding such a key will do (*rsa.PrivateKey,
// *ecdsa.PrivateKey, a hardware key).
func Sign(key crypto.Signer, kid string, c Claims) (string, error) {
	if key == nil {
		return "", errors.New("no signing key")
	}
	var alg string
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		if pub.Size()*8 < minRSABits {
			return "", fmt.Errorf("rsa key of %d bits: at least %d are needed", pub.Size()*8, minRSABits)
		}
		alg = algRS256
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return "", fmt.Errorf("ecdsa key on curve %s: only P-256 (ES256) is supported", curveName(pub.Curve))
		}
		alg = algES256
	default:
		return "", fmt.Errorf("unsupported key type %T: use an RSA (RS256) or ECDSA P-256 (ES256) key", pub)
	}
	input, err := signingInput(alg, kid, &c)
	if err != nil {
		return "", err
	}
	digest := sha256.Sum256([]byte(input))
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	if alg == algES256 {
		if sig, err = rawECDSASignature(sig); err != nil {
			return "", err
		}
	}
	return input + "." + b64.EncodeToString(sig), nil
}

// rawECDSASignature turns an ASN.1 ECDSA P-256 signature into R||S.
func rawECDSASignature(der []byte) ([]byte, error) {
	var rs struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &rs)
	if err != nil || len(rest) > 0 || rs.R == nil || rs.S == nil ||
		rs.R.Sign() <= 0 || rs.S.Sign() <= 0 || rs.R.BitLen() > 256 || rs.S.BitLen() > 256 {
		return nil, errors.New("sign: the signer returned no ASN.1 ECDSA P-256 signature")
	}
	raw := make([]byte, 64)
	rs.R.FillBytes(raw[:32])
	rs.S.FillBytes(raw[32:])
	return raw, nil
}

// signingInput is the base64url header and claims, joined by a dot.
func signingInput(alg, kid string, c *Claims) (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
		Kid string `json:"kid,omitempty"`
	}{alg, "JWT", kid})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	return b64.EncodeToString(header) + "." + b64.EncodeToString(payload), nil
}

// looksLikeJWT tells a JWT from a static token by shape: three segments,
// the first the encoding of a JSON object (`{"` encodes as "eyJ").
func looksLikeJWT(s string) bool {
	return strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") == 2
}

// jwtKey is a verification key and the one algorithm it accepts.
type jwtKey struct {
	alg    string
	secret []byte           // HS256
	rsa    *rsa.PublicKey   // RS256
	ec     *ecdsa.PublicKey // ES256
}

// jwtVerifier verifies JWTs against one key or a JWKS.
type jwtVerifier struct {
	key      *jwtKey            // the only key: secret, public key file, or a JWKS of one key
	byKID    map[string]*jwtKey // JWKS keys by kid
	issuer   string
	audience string
	leeway   time.Duration
}

// verify checks token (of JWT shape) and returns its principal. The header
// is read first, then the signature is checked; the claims are read only
// from a token that verifies.
func (v *jwtVerifier) verify(token string, now time.Time) (Principal, error) {
	parts := strings.Split(token, ".")
	for _, p := range parts {
		if !isBase64URL(p) {
			return Principal{}, unauthenticated("malformed token")
		}
	}
	headerJSON, err := b64.DecodeString(parts[0])
	if err != nil {
		return Principal{}, unauthenticated("malformed token")
	}
	header, err := decodeObject(headerJSON)
	if err != nil {
		return Principal{}, unauthenticated("malformed token header")
	}
	var alg, kid string
	if !stringMember(header, "alg", &alg) || !stringMember(header, "kid", &kid) {
		return Principal{}, unauthenticated("malformed token header")
	}
	if _, ok := header["crit"]; ok {
		return Principal{}, unauthenticated("token header has unsupported critical extensions")
	}
	switch {
	case alg == "":
		return Principal{}, unauthenticated("token header has no alg")
	case strings.EqualFold(alg, "none"):
		return Principal{}, unauthenticated("alg none not accepted")
	}
	key := v.key
	if v.byKID != nil && (kid != "" || key == nil) {
		if kid == "" {
			return Principal{}, unauthenticated("token has no kid")
		}
		if key = v.byKID[kid]; key == nil {
			return Principal{}, unauthenticated("unknown kid")
		}
	}
	if alg != key.alg {
		if alg == algHS256 || alg == algRS256 || alg == algES256 {
			return Principal{}, unauthenticated("alg " + alg + " not accepted: the key is for " + key.alg)
		}
		return Principal{}, unauthenticated("alg not accepted: the key is for " + key.alg)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || len(sig) == 0 {
		return Principal{}, unauthenticated("malformed token signature")
	}
	if !key.verify(parts[0]+"."+parts[1], sig) {
		return Principal{}, unauthenticated("signature does not verify")
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return Principal{}, unauthenticated("malformed token")
	}
	return v.checkClaims(payload, now)
}

// verify checks sig over input with k's algorithm.
func (k *jwtKey) verify(input string, sig []byte) bool {
	switch k.alg {
	case algHS256:
		mac := hmac.New(sha256.New, k.secret)
		mac.Write([]byte(input))
		return hmac.Equal(mac.Sum(nil), sig)
	case algRS256:
		digest := sha256.Sum256([]byte(input))
		return rsa.VerifyPKCS1v15(k.rsa, crypto.SHA256, digest[:], sig) == nil
	case algES256:
		if len(sig) != 64 { // raw R||S, not ASN.1
			return false
		}
		digest := sha256.Sum256([]byte(input))
		r := new(big.Int).SetBytes(sig[:32])
		s := new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k.ec, digest[:], r, s)
	}
	return false
}

// checkClaims reads the claims of a token that verifies.
func (v *jwtVerifier) checkClaims(payload []byte, now time.Time) (Principal, error) {
	claims, err := decodeObject(payload)
	if err != nil {
		return Principal{}, unauthenticated("malformed token claims")
	}
	malformed := func(claim string) (Principal, error) {
		return Principal{}, unauthenticated("malformed " + claim + " claim")
	}
	exp, ok, valid := numericDate(claims, "exp")
	switch {
	case !valid:
		return malformed("exp")
	case !ok:
		return Principal{}, unauthenticated("token has no expiry")
	case !now.Before(exp.Add(v.leeway)):
		return Principal{}, unauthenticated("token expired")
	}
	nbf, ok, valid := numericDate(claims, "nbf")
	switch {
	case !valid:
		return malformed("nbf")
	case ok && now.Add(v.leeway).Before(nbf):
		return Principal{}, unauthenticated("token not yet valid")
	}
	var iss, sub string
	if !stringMember(claims, "iss", &iss) {
		return malformed("iss")
	}
	if !stringMember(claims, "sub", &sub) {
		return malformed("sub")
	}
	if v.issuer != "" && iss != v.issuer {
		return Principal{}, unauthenticated("issuer does not match")
	}
	aud, ok := stringOrList(claims, "aud")
	if !ok {
		return malformed("aud")
	}
	if v.audience != "" && !containsString(aud, v.audience) {
		return Principal{}, unauthenticated("audience does not match")
	}
	p := Principal{Name: principalName(sub), Kind: KindJWT}
	streams, hasStreams, ok := grants(claims, "streams", "stream")
	if !ok {
		return malformed("streams")
	}
	actions, hasActions, ok := grants(claims, "actions", "action")
	if !ok {
		return malformed("actions")
	}
	if hasStreams {
		if len(streams) == 0 {
			return p, forbidden("token grants no stream")
		}
		p.Streams = streams
	}
	if hasActions {
		if len(actions) == 0 {
			return p, forbidden("token grants no action")
		}
		p.Actions = make([]Action, len(actions))
		for i, a := range actions {
			p.Actions[i] = Action(a)
		}
	}
	return p, nil
}

// principalName is the name of a JWT principal: its subject, printable and
// clipped, or "jwt".
func principalName(sub string) string {
	if sub == "" {
		return KindJWT
	}
	b := []byte(sub)
	if len(b) > maxNameLen {
		b = b[:maxNameLen]
	}
	for i, c := range b {
		if c < 0x21 || c > 0x7e {
			b[i] = '_'
		}
	}
	return string(b)
}

// isBase64URL reports whether s holds only unpadded base64url characters.
func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// decodeObject decodes a JSON object into its members, refusing duplicate
// names (which parsers would resolve differently) and trailing data. Names
// are matched exactly, unlike encoding/json's case-insensitive struct
// fields.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, ok := t.(string)
		if !ok {
			return nil, errors.New("not a JSON object")
		}
		if _, dup := m[name]; dup {
			return nil, errors.New("duplicate member")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		m[name] = raw
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, errors.New("not a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data")
	}
	return m, nil
}

// isNull reports whether raw is absent or JSON null.
func isNull(raw json.RawMessage) bool { return raw == nil || string(raw) == "null" }

// stringMember sets *s to the string member name of m, leaving it "" when
// absent or null; false when it is not a string.
func stringMember(m map[string]json.RawMessage, name string, s *string) bool {
	raw := m[name]
	if isNull(raw) {
		return true
	}
	return json.Unmarshal(raw, s) == nil
}

// stringOrList reads a member that is a string or a list of strings; nil
// when absent or null.
func stringOrList(m map[string]json.RawMessage, name string) ([]string, bool) {
	raw := m[name]
	if isNull(raw) {
		return nil, true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, true
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		return nil, false
	}
	return list, true
}

// grants reads a list claim and its single-string variant: the union of
// both, whether either is present, and false when one is malformed.
func grants(m map[string]json.RawMessage, listName, oneName string) (values []string, present, ok bool) {
	if raw := m[listName]; !isNull(raw) {
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil || list == nil {
			return nil, false, false
		}
		values, present = list, true
	}
	if raw := m[oneName]; !isNull(raw) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false, false
		}
		if !containsString(values, s) {
			values = append(values, s)
		}
		present = true
	}
	return values, present, true
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// numericDate reads a NumericDate claim (Unix seconds, possibly with a
// fraction): the time, whether it is present, and false when it is not a
// number in [0, maxNumericDate].
func numericDate(m map[string]json.RawMessage, name string) (t time.Time, present, valid bool) {
	raw := m[name]
	if isNull(raw) {
		return time.Time{}, false, true
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return time.Time{}, false, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, true
}
