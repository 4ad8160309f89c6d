// Package redact takes secrets out of what Prism shows: passwords in URLs,
// key-like query parameters (tokens, SRT passphrases, signatures), so API
// answers, logs and job reasons never carry them.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Mask replaces a secret.
const Mask = "REDACTED"

// secretParams are query parameter names (or name parts) whose values are
// credentials.
var secretParams = []string{"token", "key", "secret", "pass", "auth", "sig", "credential", "jwt"}

func secretParam(name string) bool {
	n := strings.ToLower(name)
	for _, s := range secretParams {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// URL returns u with its password and secret query values masked. What
// does not parse as a URL with a scheme is returned as it is.
func URL(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Scheme == "" || p.Opaque != "" {
		return u
	}
	changed := false
	if p.User != nil {
		if _, has := p.User.Password(); has {
			p.User = url.UserPassword(p.User.Username(), Mask)
			changed = true
		}
	}
	if p.RawQuery != "" {
		q := p.Query()
		for k, vs := range q {
			if secretParam(k) {
				for i := range vs {
					vs[i] = Mask
				}
				changed = true
			}
		}
		if changed {
			p.RawQuery = q.Encode()
		}
	}
	if !changed {
		return u
	}
	return p.String()
}

// urlRE finds URLs in free text (error messages, log lines).
var urlRE = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>()]+`)

// Text masks every URL's secrets in s.
func Text(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlRE.ReplaceAllStringFunc(s, URL)
}
