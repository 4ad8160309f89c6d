package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"strings"
)

// minRSABits is the smallest RSA key accepted, for verifying and signing.
const minRSABits = 2048

// newJWTVerifier loads the key that cfg names; nil when none is set.
// Validate has checked that at most one is.
func newJWTVerifier(cfg *JWTConfig) (*jwtVerifier, error) {
	v := &jwtVerifier{issuer: cfg.Issuer, audience: cfg.Audience, leeway: cfg.Leeway}
	if v.leeway == 0 {
		v.leeway = DefaultLeeway
	}
	var err error
	switch {
	case cfg.HS256Secret != "":
		v.key = &jwtKey{alg: algHS256, secret: []byte(cfg.HS256Secret)}
	case cfg.HS256SecretFile != "":
		v.key, err = loadSecretFile(cfg.HS256SecretFile)
	case cfg.PublicKeyFile != "":
		v.key, err = loadPublicKeyFile(cfg.PublicKeyFile)
	case cfg.JWKSFile != "":
		err = v.loadJWKSFile(cfg.JWKSFile)
	default:
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

func loadSecretFile(path string) (*jwtKey, error) {
	data, err := readFile(path, "hs256 secret file")
	if err != nil {
		return nil, err
	}
	secret := bytes.TrimSpace(data)
	if len(secret) < MinHS256SecretLen {
		return nil, &fileError{File: path, Msg: fmt.Sprintf("the hs256 secret must be at least %d bytes, got %d", MinHS256SecretLen, len(secret))}
	}
	return &jwtKey{alg: algHS256, secret: secret}, nil
}

// loadPublicKeyFile reads the first public key or certificate of a PEM
// file.
func loadPublicKeyFile(path string) (*jwtKey, error) {
	data, err := readFile(path, "public key file")
	if err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) (*jwtKey, error) {
		return nil, &fileError{File: path, Msg: fmt.Sprintf(format, args...)}
	}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return bad("no PEM public key found: expected a PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE block")
		}
		var pub any
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			if strings.Contains(block.Type, "PRIVATE KEY") {
				return bad("holds a private key (%s): give the public key only (openssl pkey -pubout)", block.Type)
			}
			continue
		}
		if err != nil {
			return bad("invalid %s: %v", block.Type, err)
		}
		k, msg := publicKey(pub)
		if msg != "" {
			return bad("%s", msg)
		}
		return k, nil
	}
}

// publicKey makes a verification key of an RSA or ECDSA P-256 public key;
// otherwise it says why not.
func publicKey(pub any) (*jwtKey, string) {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if bits := pub.Size() * 8; bits < minRSABits {
			return nil, fmt.Sprintf("rsa key of %d bits: at least %d are needed", bits, minRSABits)
		}
		return &jwtKey{alg: algRS256, rsa: pub}, ""
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, fmt.Sprintf("ecdsa key on curve %s: only P-256 (ES256) is supported", curveName(pub.Curve))
		}
		return &jwtKey{alg: algES256, ec: pub}, ""
	}
	return nil, fmt.Sprintf("unsupported key type %T: use an RSA (RS256) or ECDSA P-256 (ES256) key", pub)
}

func curveName(c elliptic.Curve) string {
	if c == nil || c.Params() == nil {
		return "unknown"
	}
	return c.Params().Name
}

// jwk is a JSON Web Key (RFC 7517) as far as verification needs it.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	D   string `json:"d"`
}

// loadJWKSFile reads the RSA and EC P-256 signing keys of a JWKS file;
// other keys are skipped, malformed ones refused.
func (v *jwtVerifier) loadJWKSFile(path string) error {
	data, err := readFile(path, "jwks file")
	if err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return &fileError{File: path, Msg: fmt.Sprintf(format, args...)}
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return bad("invalid JWKS JSON: %v", err)
	}
	type loaded struct {
		kid string
		key *jwtKey
	}
	var keys []loaded
	for i, raw := range set.Keys {
		var k jwk
		if err := json.Unmarshal(raw, &k); err != nil {
			return bad("keys[%d]: invalid JWK: %v", i, err)
		}
		if k.D != "" {
			return bad("keys[%d]: holds a private key (\"d\"): give the public keys only", i)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		var key *jwtKey
		switch {
		case k.Kty == "RSA" && (k.Alg == "" || k.Alg == algRS256):
			pub, err := rsaJWK(&k)
			if err != nil {
				return bad("keys[%d]: %v", i, err)
			}
			var msg string
			if key, msg = publicKey(pub); msg != "" {
				return bad("keys[%d]: %s", i, msg)
			}
		case k.Kty == "EC" && k.Crv == "P-256" && (k.Alg == "" || k.Alg == algES256):
			pub, err := ecJWK(&k)
			if err != nil {
				return bad("keys[%d]: %v", i, err)
			}
			key = &jwtKey{alg: algES256, ec: pub}
		default:
			continue // another type, curve or algorithm: not ours to use
		}
		for _, prev := range keys {
			if prev.kid == k.Kid {
				return bad("keys[%d]: kid %q is used twice", i, k.Kid)
			}
		}
		keys = append(keys, loaded{kid: k.Kid, key: key})
	}
	switch {
	case len(keys) == 0:
		return bad("no usable signing key: expected RSA (RS256) or EC P-256 (ES256) keys")
	case len(keys) == 1:
		v.key = keys[0].key
		if keys[0].kid == "" {
			return nil // any token, with or without kid, is checked against it
		}
	}
	v.byKID = make(map[string]*jwtKey, len(keys))
	for _, k := range keys {
		if k.kid == "" {
			return bad("a key has no kid: every key needs one when the set holds several")
		}
		v.byKID[k.kid] = k.key
	}
	return nil
}

// jwkBytes decodes a base64url JWK member; trailing padding is tolerated.
func jwkBytes(name, s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("invalid %q: expected base64url", name)
	}
	return b, nil
}

func rsaJWK(k *jwk) (*rsa.PublicKey, error) {
	n, err := jwkBytes("n", k.N)
	if err != nil {
		return nil, err
	}
	e, err := jwkBytes("e", k.E)
	if err != nil {
		return nil, err
	}
	if len(e) > 4 {
		return nil, fmt.Errorf("invalid \"e\": exponent too large")
	}
	exp := 0
	for _, b := range e {
		exp = exp<<8 | int(b)
	}
	if exp < 3 || exp%2 == 0 {
		return nil, fmt.Errorf("invalid \"e\": the exponent must be odd and at least 3")
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}, nil
}

func ecJWK(k *jwk) (*ecdsa.PublicKey, error) {
	x, err := jwkBytes("x", k.X)
	if err != nil {
		return nil, err
	}
	y, err := jwkBytes("y", k.Y)
	if err != nil {
		return nil, err
	}
	if len(x) != 32 || len(y) != 32 {
		return nil, fmt.Errorf("invalid P-256 point: x and y must be 32 bytes each")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, fmt.Errorf("invalid P-256 point: %w", err)
	}
	return pub, nil
}

// ReadPrivateKey reads a PEM private key (PKCS#8, PKCS#1 or SEC 1) for
// Sign: RSA signs RS256, P-256 ES256.
func ReadPrivateKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("%s: not an RSA or EC private key (PKCS#8, PKCS#1 or SEC 1)", path)
}
