package hls

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/relay"
)

// roundRobinSeconds is how long hls.js plays through the proxy.
const roundRobinSeconds = 30

// TestBrowserRoundRobin: hls.js in Chromium plays for 30 s through a
// reverse proxy that sends each request to the next of three nodes in
// turn (no stickiness), every node following the one publisher over NATS
// with its own muxers. With one timeline on every node the player sees one
// stream: it plays on without a fatal error and without stalling.
func TestBrowserRoundRobin(t *testing.T) {
	testutil.LeakCheck(t)
	testutil.NeedsFFmpeg(t)
	if _, err := os.Stat(hlsJS); err != nil {
		t.Fatalf("hls.js is not installed (%v): run `make test`, which runs `npm ci` in outputs/hls/browser", err)
	}
	page, err := os.ReadFile(filepath.Join("testdata", "player.html"))
	if err != nil {
		t.Fatal(err)
	}
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	pub := testutil.DialNATS(t, e, "publisher")
	job := startJob(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	published := make(chan struct{})
	go func() { defer close(published); _ = relay.Publish(ctx, pub, testStream, job) }() // ends with cancel
	t.Cleanup(func() { cancel(); <-published; _ = job.Close() })

	var targets []*url.URL
	for _, name := range []string{"a", "b", "c"} {
		n := startNode(t, e, name)
		t.Cleanup(n.stop)
		n.index() // each node has started its muxers
		u, _ := url.Parse(n.http.URL)
		targets = append(targets, u)
	}
	var next atomic.Uint64
	served := make([]atomic.Int64, len(targets))
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		i := (next.Add(1) - 1) % uint64(len(targets))
		served[i].Add(1)
		r.SetURL(targets[i])
	}, ModifyResponse: func(res *http.Response) error {
		if res.StatusCode != http.StatusOK {
			t.Logf("%s %s: %s", res.Request.URL.Host, res.Request.URL.RequestURI(), res.Status)
		}
		return nil
	}}
	reports := make(chan browserReport, 1)
	mux := http.NewServeMux()
	mux.Handle("/hls/", proxy)
	mux.HandleFunc("/player", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("/hls.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		http.ServeFile(w, r, hlsJS)
	})
	mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
		var rep browserReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case reports <- rep:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	})
	front := httptest.NewServer(mux)
	t.Cleanup(front.Close)

	q := url.Values{"src": {front.URL + "/hls/" + testStream + "/index.m3u8"}, "seconds": {"30"}}
	b := testutil.StartBrowser(t, front.URL+"/player?"+q.Encode())
	t.Cleanup(b.Close)
	var rep browserReport
	select {
	case rep = <-reports:
	case <-b.Exited():
		t.Fatalf("chromium exited before reporting:\n%s", b.Output())
	case <-time.After(3 * time.Minute):
		t.Fatalf("no report from the browser after 3 minutes:\n%s", b.Output())
	}
	counts := make([]int64, len(served))
	for i := range served {
		counts[i] = served[i].Load()
	}
	for _, e := range rep.Errors {
		t.Logf("hls.js error: %+v", e)
	}
	testutil.Report(t, "hls.js through a round-robin proxy over 3 nodes: played %.1f s of media in %.1f s, %d stalls (%d buffer stalls), %d/%d frames dropped, %d errors, requests per node %v, glass-to-glass p50 %.3f s",
		rep.Played, rep.PlayingFor, rep.Stalls, rep.BufferStalls, rep.Dropped, rep.Decoded, len(rep.Errors), counts, quantile(rep.Latency, 0.5))
	switch {
	case !rep.Supported:
		t.Fatalf("this Chromium cannot play H.264/AAC through MSE: %+v", rep.Errors)
	case rep.Fatal != nil:
		t.Fatalf("hls.js fatal error: %s (all errors: %+v)", *rep.Fatal, rep.Errors)
	case rep.TimedOut:
		t.Fatalf("playback did not last %d s: %+v", roundRobinSeconds, rep)
	}
	// Played media within a second of the wall time it played for: no
	// stall added up to more than a second.
	if rep.PlayingFor < roundRobinSeconds || rep.Played < rep.PlayingFor-1 {
		t.Errorf("played %.1f s of media in %.1f s", rep.Played, rep.PlayingFor)
	}
	for i, c := range counts {
		if c < 10 {
			t.Errorf("node %d served only %d requests: the proxy did not spread them", i, c)
		}
	}
}
