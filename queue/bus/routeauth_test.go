package bus_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	. "github.com/prism-streaming/prism/queue/bus" //nolint:revive // reads like the package's own test
)

// freePorts reserves n loopback ports and releases them for the test.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		defer func() { _ = l.Close() }()
	}
	return ports
}

func TestRoutesTakeTheClusterToken(t *testing.T) {
	testutil.LeakCheck(t)
	ports := freePorts(t, 3)
	url := func(i int) string { return "nats://127.0.0.1:" + strconv.Itoa(ports[i]) }
	const token = "route-token-0123456789"
	start := func(i int, token string, routes ...string) *Embedded {
		e, err := StartEmbedded(EmbeddedConfig{Name: fmt.Sprintf("r%d", i), DataDir: t.TempDir(),
			// JetStream needs a quorum to be ready; these servers only test routes.
			Cluster: ClusterConfig{Name: "routes", Listen: "127.0.0.1:" + strconv.Itoa(ports[i]), Routes: routes, Token: token},
			Log:     slog.New(slog.NewTextHandler(io.Discard, nil)), ReadyTimeout: 20 * time.Second})
		if err != nil {
			t.Error(err)
			return nil
		}
		t.Cleanup(e.Close)
		return e
	}
	routes := []string{url(0), url(1)} // plain URLs: the token is added
	var a, b *Embedded
	var wg sync.WaitGroup
	wg.Go(func() { a = start(0, token, routes...) }) // each waits for a peer
	wg.Go(func() { b = start(1, token, routes...) })
	wg.Wait()
	if a == nil || b == nil {
		t.FailNow()
	}
	testutil.Eventually(t, 10*time.Second, "a route between the peers with the token", func() bool {
		return a.Server().NumRoutes() > 0 && b.Server().NumRoutes() > 0
	})
	// A server without the token, or with another, cannot join by dialing
	// the peers.
	for i, tok := range []string{"", "another-token-0123456789"} {
		c := start(2, tok, routes...)
		if c == nil {
			t.FailNow()
		}
		// Absence, over 1.5 s: a route being refused exists for the
		// moment of its handshake (and is retried every second), so only
		// one that stays up for 250 ms counts.
		up := 0
		for range 30 {
			time.Sleep(50 * time.Millisecond)
			if c.Server().NumRoutes() == 0 {
				up = 0
			} else if up++; up >= 5 {
				t.Errorf("case %d: a peer with token %q kept %d routes", i, tok, c.Server().NumRoutes())
				break
			}
		}
		c.Close()
	}
	if _, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Cluster: ClusterConfig{Name: "x", Listen: "127.0.0.1:0", Token: "short"}}); !errors.Is(err, ErrEmbedded) {
		t.Fatalf("a short token: %v", err)
	}
}
