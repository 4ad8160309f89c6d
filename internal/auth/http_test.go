package auth_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/prism-streaming/prism/internal/auth"
)

func TestIsLocal(t *testing.T) {
	for _, c := range []struct {
		remote, host string
		want         bool
	}{
		{"127.0.0.1:5000", "localhost:8080", true},
		{"127.0.0.1:5000", "localhost", true},
		{"127.0.0.1:5000", "LocalHost:8080", true},
		{"127.0.0.1:5000", "127.0.0.1:8080", true},
		{"127.3.2.1:5000", "127.0.0.1", true},
		{"127.0.0.1:5000", "127.9.9.9:1", true},
		{"[::1]:5000", "localhost:8080", true},
		{"[::1]:5000", "[::1]:8080", true},
		{"[::1]:5000", "[::1]", true},
		{"[::ffff:127.0.0.1]:5000", "localhost", true},
		{"[::1%lo]:5000", "localhost", true},
		// DNS rebinding: a loopback peer, a foreign name.
		{"127.0.0.1:5000", "evil.example", false},
		{"127.0.0.1:5000", "evil.example:8080", false},
		{"127.0.0.1:5000", "localhost.evil.example", false},
		{"127.0.0.1:5000", "127.0.0.1.nip.io", false},
		{"127.0.0.1:5000", "", false},
		{"127.0.0.1:5000", "localhost:80x", false},
		{"127.0.0.1:5000", "[::1]x", false},
		{"127.0.0.1:5000", "[::2]:80", false},
		{"127.0.0.1:5000", "[127.0.0.1]:80", false},
		{"127.0.0.1:5000", "10.0.0.1:8080", false},
		{"127.0.0.1:5000", "0.0.0.0:8080", false},
		// A foreign peer, whatever it names.
		{"10.0.0.1:5000", "localhost:8080", false},
		{"192.168.1.2:5000", "127.0.0.1", false},
		{"[2001:db8::1]:5000", "[::1]:8080", false},
		{"[::]:5000", "localhost", false},
		{"0.0.0.0:5000", "localhost", false},
		{"", "localhost", false},
		{"localhost:5000", "localhost", false}, // RemoteAddr is an address, never a name
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr, r.Host = c.remote, c.host
		if got := auth.IsLocal(r); got != c.want {
			t.Errorf("RemoteAddr %q Host %q: IsLocal %v, want %v", c.remote, c.host, got, c.want)
		}
	}
	if auth.IsLocal(nil) {
		t.Error("IsLocal(nil)")
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1":      true,
		"127.0.0.1:1935": true,
		"127.255.0.1":    true,
		"::1":            true,
		"[::1]:1935":     true,
		"10.0.0.1:1935":  false,
		"[fe80::1]:1":    false,
		"localhost:1935": false,
		"":               false,
	} {
		if got := auth.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestCredential(t *testing.T) {
	for _, c := range []struct {
		name, target, header, want string
	}{
		{"bearer header", "/x", "Bearer abc.def", "abc.def"},
		{"bearer any case, extra blanks", "/x", "  bearer   abc  ", "abc"},
		{"header wins over query", "/x?token=fromquery", "Bearer fromheader", "fromheader"},
		{"query", "/live/cam1/index.m3u8?token=q%2Bv&other=1", "", "q+v"},
		{"basic falls back to query", "/x?token=q", "Basic dXNlcjpwYXNz", "q"},
		{"empty bearer falls back to query", "/x?token=q", "Bearer ", "q"},
		{"bearer without blank", "/x", "Bearerabc", ""},
		{"none", "/x", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, c.target, nil)
			if c.header != "" {
				r.Header.Set("Authorization", c.header)
			}
			if got := auth.Credential(r); got != c.want {
				t.Errorf("Credential %q, want %q", got, c.want)
			}
		})
	}
	if auth.Credential(nil) != "" {
		t.Error("Credential(nil)")
	}
}

func TestRedactURL(t *testing.T) {
	for raw, want := range map[string]string{
		"/live/cam1/index.m3u8":                     "/live/cam1/index.m3u8",
		"/live/cam1/index.m3u8?_HLS_msn=3":          "/live/cam1/index.m3u8?_HLS_msn=3",
		"/live/cam1/index.m3u8?token=s3cr3t&a=1":    "/live/cam1/index.m3u8?a=1&token=REDACTED",
		"/live/cam1/index.m3u8?tokens=1":            "/live/cam1/index.m3u8?tokens=1",
		"/live/cam1/index.m3u8?token=%zz%zzs3cr3t":  "/live/cam1/index.m3u8?REDACTED",
		"http://h/x?token=s3cr3t&token=other#frag":  "http://h/x?token=REDACTED#frag",
		"/whep/cam1?token=s3cr3t;also=s3cr3t-again": "/whep/cam1?REDACTED",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := auth.RedactURL(u); got != want {
			t.Errorf("RedactURL(%s) = %s, want %s", raw, got, want)
		}
	}
	if auth.RedactURL(nil) != "" {
		t.Error("RedactURL(nil)")
	}
}
