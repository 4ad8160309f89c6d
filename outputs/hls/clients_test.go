package hls

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestBlockingPerClient: one client holding hls.max_blocking_per_client
// blocking requests is refused more (503, Retry-After) while another client
// still gets its blocking response, and so do the first client's waiting
// ones.
func TestBlockingPerClient(t *testing.T) {
	t.Cleanup(testutil.CheckGoroutines(t)) // after clientFrom's cleanups
	const perClient = 4
	f := startFixture(t, Config{MaxBlockingPerClient: perClient}, twoSecondGOP, nil)
	defer f.close()

	mv := f.index()
	hi := mv.Variants[len(mv.Variants)-1].URI
	prog := f.srv.stream(testStream).rungs[0].prog
	// A fresh segment: part 3 of the one after is ~3 s away, and then
	// within the blocking limit (three 2 s targets).
	var cur playlistState
	testutil.Eventually(t, 10*time.Second, "a segment to start", func() bool {
		cur, _ = prog.get()
		return cur.ready && cur.parts == 0
	})
	msn := cur.nextMSN + 1
	target := f.base + fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=3", hi, msn)
	arrived := func() bool { s, _ := prog.get(); return s.hasPart(msn, 3) }

	type result struct {
		status int
		body   string
	}
	get := func(c *http.Client) result {
		res, err := c.Get(target)
		if err != nil {
			return result{body: err.Error()}
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode == http.StatusServiceUnavailable && res.Header.Get("Retry-After") == "" {
			return result{res.StatusCode, "no Retry-After: " + string(b)}
		}
		return result{res.StatusCode, string(b)}
	}
	a, b := clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.2")

	results := make(chan result, perClient+1)
	for range perClient {
		go func() { results <- get(a) }()
	}
	testutil.Eventually(t, 5*time.Second, "client A's requests to wait", func() bool { return len(f.srv.blocking) == perClient })
	if arrived() {
		t.Fatal("the awaited part arrived before the test was done asking: the machine is too slow for this test")
	}
	over := get(a) // answered at once, ~3 s before the part could release it
	if over.status != http.StatusServiceUnavailable || !strings.Contains(over.body, "hls.max_blocking_per_client") {
		t.Fatalf("client A's request %d: %d %q, want 503 naming hls.max_blocking_per_client", perClient+1, over.status, over.body[:min(len(over.body), 200)])
	}

	go func() { results <- get(b) }()
	testutil.Eventually(t, 5*time.Second, "client B's request to wait too", func() bool { return len(f.srv.blocking) == perClient+1 })
	if arrived() {
		t.Fatal("the awaited part arrived before client B waited: the machine is too slow for this test")
	}
	for range perClient + 1 {
		r := <-results
		var pl playlist.Media
		if r.status != http.StatusOK || pl.Unmarshal([]byte(r.body)) != nil {
			t.Fatalf("blocking request: %d %q, want 200 with the playlist", r.status, r.body[:min(len(r.body), 200)])
		}
		if next := pl.MediaSequence + len(pl.Segments); next < msn || (next == msn && len(pl.Parts) < 4) {
			t.Errorf("blocking request for segment %d part 3 got a playlist at segment %d with %d parts", msn, next, len(pl.Parts))
		}
	}
	f.srv.clientsMu.Lock()
	left := len(f.srv.blockingClients)
	f.srv.clientsMu.Unlock()
	if left != 0 || len(f.srv.blocking) != 0 {
		t.Errorf("after the waits: %d clients and %d requests still counted", left, len(f.srv.blocking))
	}
}

// clientFrom is an HTTP client whose connections come from ip, a loopback
// address: the server sees a different client per address.
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
