package main

import (
	"crypto"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/prism-streaming/prism/internal/auth"
)

// cmdToken is `prism token`: mint a JWT that the node's auth.jwt key
// verifies, for signed playback, publishing or API access.
func cmdToken(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", stderr)
	secret := fs.String("secret", "", "HS256 shared secret (as in auth.jwt.hs256_secret)")
	secretFile := fs.String("secret-file", "", "HS256 shared secret read from this file")
	keyFile := fs.String("key", "", "PEM private key (RSA: RS256, P-256: ES256) whose public key is auth.jwt.public_key_file or in the JWKS")
	kid := fs.String("kid", "", "key id (JWKS)")
	streams := fs.String("streams", "", "comma-separated streams the token is valid for (default: all)")
	actions := fs.String("actions", "play", "comma-separated actions: api.read, api.write, publish, play, metrics")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	subject := fs.String("sub", "", "subject: who the token is for (shown in logs)")
	issuer := fs.String("iss", "", "issuer (when auth.jwt.issuer is set)")
	audience := fs.String("aud", "", "audience (when auth.jwt.audience is set)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	now := time.Now()
	c := auth.Claims{Subject: *subject, Issuer: *issuer, Audience: *audience, ExpiresAt: now.Add(*ttl).Unix(), NotBefore: now.Add(-time.Minute).Unix()}
	if *streams != "" {
		c.Streams = strings.Split(*streams, ",")
	}
	for _, a := range strings.Split(*actions, ",") {
		c.Actions = append(c.Actions, auth.Action(strings.TrimSpace(a)))
	}
	var tok string
	var err error
	switch {
	case *keyFile != "":
		var key crypto.Signer
		if key, err = auth.ReadPrivateKey(*keyFile); err != nil {
			return err
		}
		tok, err = auth.Sign(key, *kid, c)
	case *secret != "" || *secretFile != "":
		s := []byte(*secret)
		if *secretFile != "" {
			if s, err = os.ReadFile(*secretFile); err != nil {
				return err
			}
			s = []byte(strings.TrimRight(string(s), "\r\n"))
		}
		tok, err = auth.SignHS256(s, c)
	default:
		fmt.Fprintln(stderr, "prism token: one of --secret, --secret-file or --key is required")
		return errUsage
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
