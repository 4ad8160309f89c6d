package auth

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// QueryParam is the query parameter that carries a credential where no
// header can (HLS players, browser <video> elements).
const QueryParam = "token"

// Credential is the credential of r: the token of an "Authorization:
// Bearer <token>" header, else the "token" query parameter, else "".
// Servers logging request URLs should log RedactURL(r.URL).
func Credential(r *http.Request) string {
	if r == nil {
		return ""
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, _ := strings.Cut(strings.TrimSpace(h), " ")
		if strings.EqualFold(scheme, "Bearer") {
			if token = strings.TrimSpace(token); token != "" {
				return token
			}
		}
	}
	if r.URL == nil {
		return ""
	}
	return r.URL.Query().Get(QueryParam)
}

// RedactURL is u for logs: a "token" query parameter is replaced by
// "REDACTED".
func RedactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	if !strings.Contains(u.RawQuery, QueryParam) {
		return u.String()
	}
	q, err := url.ParseQuery(u.RawQuery)
	c := *u
	if err != nil {
		c.RawQuery = "REDACTED" // unparsable: keep nothing of it
		return c.String()
	}
	if _, ok := q[QueryParam]; !ok {
		return u.String()
	}
	q[QueryParam] = []string{"REDACTED"}
	c.RawQuery = q.Encode()
	return c.String()
}

// IsLocal reports whether r comes from this machine and was addressed to
// it by a local name: the peer (RemoteAddr) is a loopback address
// (127.0.0.0/8, ::1) and the Host header names localhost, a 127.x.x.x
// address or [::1], with any port. Checking the Host header defeats DNS
// rebinding, where a web page makes the browser of a local user send
// requests to the server under the page's own host name.
func IsLocal(r *http.Request) bool {
	return r != nil && IsLoopback(r.RemoteAddr) && localHost(r.Host)
}

// IsLoopback reports whether addr, "host:port" or a bare IP address (a
// net.Addr's String), is a loopback address: 127.0.0.0/8 or ::1, IPv4
// mapped in IPv6 included.
func IsLoopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return ip.WithZone("").Unmap().IsLoopback()
}

// localHost reports whether a Host header names this machine by a local
// name: localhost, 127.x.x.x or [::1], with an optional port.
func localHost(host string) bool {
	name := host
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 || !validPort(host[end+1:]) {
			return false
		}
		ip, err := netip.ParseAddr(host[1:end])
		return err == nil && ip == netip.IPv6Loopback()
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		if !validPort(host[i:]) {
			return false
		}
		name = host[:i]
	}
	if strings.EqualFold(name, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(name)
	return err == nil && ip.Is4() && ip.IsLoopback()
}

// validPort accepts "" or ":" followed by up to five digits.
func validPort(s string) bool {
	if s == "" {
		return true
	}
	if s[0] != ':' || len(s) < 2 || len(s) > 6 {
		return false
	}
	for _, c := range s[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
