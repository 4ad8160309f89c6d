package pipeline

import "testing"

func TestClientKey(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.1:5000":                  "192.0.2.1",
		"[::ffff:192.0.2.1]:5000":         "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:443":      "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443":      "2001:db8:1:2::/64",
		"[fe80::1%eth0]:80":               "fe80::/64",
		"pipe":                            "pipe", // not an IP connection
		"[2001:db8:1:3:3:4:5:6]:443":      "2001:db8:1:3::/64",
		"[2001:db8:1:2:3:4:5:6%zone]:443": "2001:db8:1:2::/64",
	} {
		if got := ClientKey(addr); got != want {
			t.Errorf("ClientKey(%q) = %q, want %q", addr, got, want)
		}
	}
}
