//go:build linux

package testutil

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestEmulatedLinkDelaysAndDrops measures the round trip of a UDP packet
// to a closed port in the namespace: its kernel answers with ICMP port
// unreachable, which a connected socket reads as an error, so no echo
// server is needed (the error comes back through the link).
func TestEmulatedLinkDelaysAndDrops(t *testing.T) {
	l := StartEmulatedNetNS(t)
	rtt := func() time.Duration {
		t.Helper()
		c, err := net.Dial("udp", net.JoinHostPort(l.NS.PeerIP, "9"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		_, _ = c.Write([]byte("x"))
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		var b [8]byte
		if _, err := c.Read(b[:]); err == nil {
			t.Fatal("a closed port answered")
		} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			return -1
		}
		return time.Since(start)
	}
	if d := rtt(); d < 0 || d > 50*time.Millisecond {
		t.Fatalf("round trip %s over an undelayed link", d)
	}
	l.SetDelay(75 * time.Millisecond)
	if d := rtt(); d < 150*time.Millisecond || d > 250*time.Millisecond {
		t.Fatalf("round trip %s, want 150 ms", d)
	}
	l.SetDelay(0)
	l.SetLoss(1)
	if d := rtt(); d >= 0 {
		t.Fatalf("a packet crossed a link that drops everything (%s)", d)
	}
	if l.Dropped() == 0 {
		t.Fatal("no drop counted")
	}
}
