package hls

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/relay"
	"github.com/prism-streaming/prism/transcode"
)

// roundRobinSeconds is how long hls.js plays through the proxy.
const roundRobinSeconds = 30

// TestBrowserRoundRobin: hls.js in Chromium plays for 30 s through a
// reverse proxy that sends each request to the next of three nodes in
// turn (no stickiness), every node following the one publisher over NATS
// with its own muxers. With one timeline on every node the player sees one
// stream: it plays on without a fatal error and without stalling.
func TestBrowserRoundRobin(t *testing.T) {
	rr := startRoundRobin(t)
	rep, counts := rr.play(nil)
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

// TestBrowserRoundRobinFailover: the same player through the same proxy,
// and 10 s into playback the job's publisher goes away and a new one (a
// new transcoder, as the job's next owner starts after a failover) takes
// the stream over. The player plays on through the outage, and every
// node's playlist goes on with the same URLs and its numbering continued,
// the same on all three: no node restarts its timeline.
func TestBrowserRoundRobinFailover(t *testing.T) {
	rr := startRoundRobin(t)
	type numbering struct {
		variant string
		next    int
	}
	at := func() []numbering {
		var out []numbering
		for _, n := range rr.nodes {
			mv := n.index()
			pl := n.media(mv.Variants[0].URI)
			out = append(out, numbering{mv.Variants[0].URI, pl.MediaSequence + len(pl.Segments)})
		}
		return out
	}
	var before []numbering
	var outage time.Duration
	rep, _ := rr.play(func() {
		before = at()
		outage = rr.failover()
	})
	after := at()
	testutil.Report(t, "hls.js through a round-robin proxy over 3 nodes, publisher replaced 10 s in: every node followed the new publisher %.3f s after the old one stopped; played %.1f s of media in %.1f s, %d stalls; next media sequence number before %v, after %v",
		outage.Seconds(), rep.Played, rep.PlayingFor, rep.Stalls, before, after)
	// The bound for a node kill: output resumes within 3 s.
	if rep.PlayingFor < roundRobinSeconds || rep.Played < rep.PlayingFor-3 {
		t.Errorf("played %.1f s of media in %.1f s across the failover", rep.Played, rep.PlayingFor)
	}
	for i := range after {
		if after[i].variant != before[i].variant {
			t.Errorf("node %d: variant %s after the failover, %s before: a new timeline", i, after[i].variant, before[i].variant)
		}
		if after[i].next <= before[i].next {
			t.Errorf("node %d: next media sequence number %d after the failover, %d before: the numbering did not continue", i, after[i].next, before[i].next)
		}
	}
	// The same numbering on every node for the same media time after the
	// failover: ask all three for the part that opens a segment ahead.
	first := rr.nodes[0].media(after[0].variant)
	q := fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=0", after[0].variant, first.MediaSequence+len(first.Segments)+1)
	var windows []string
	for _, n := range rr.nodes {
		pl := n.media(q)
		var listed []string
		for _, seg := range pl.Segments {
			if !seg.Gap {
				listed = append(listed, seg.URI)
			}
		}
		windows = append(windows, fmt.Sprintf("%d %v", pl.MediaSequence, listed[len(listed)-3:]))
	}
	if windows[0] != windows[1] || windows[0] != windows[2] {
		t.Errorf("after the failover the nodes list different segments for the same point: %q", windows)
	}

	// A node that starts following only after the failover joins the
	// same timeline: the same URLs, the same segments for the same point.
	late := startNode(t, rr.bus, "late")
	defer late.stop()
	mv := late.index()
	if mv.Variants[0].URI != after[0].variant {
		t.Fatalf("a node started after the failover serves %s, the others %s: another timeline", mv.Variants[0].URI, after[0].variant)
	}
	late.waitSegments([]string{after[0].variant}, 2, 30*time.Second)
	cur := late.media(after[0].variant)
	q = fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=0", after[0].variant, cur.MediaSequence+len(cur.Segments)+1)
	tail := func(n *node) string {
		pl := n.media(q)
		var listed []string
		for _, seg := range pl.Segments {
			if !seg.Gap {
				listed = append(listed, seg.URI)
			}
		}
		return fmt.Sprintf("%d %v", pl.MediaSequence+len(pl.Segments), listed[len(listed)-2:])
	}
	if l, o := tail(late), tail(rr.nodes[0]); l != o {
		t.Errorf("for the same point the late node lists %q, a node following since before %q", l, o)
	} else {
		t.Logf("late node: %s, on the same timeline (next segment, last segments: %s)", mv.Variants[0].URI, l)
	}
}

// roundRobin is three nodes following one publisher over NATS behind a
// round-robin reverse proxy, and the page that plays through it.
type roundRobin struct {
	t         *testing.T
	nodes     []*node
	bus       *bus.Embedded
	pub       *nats.Conn
	published chan struct{}
	cancel    context.CancelFunc
	job       *transcode.Transcoder
	served    []atomic.Int64
	reports   chan browserReport
	firstPart atomic.Int64 // unix nanoseconds of the first part or segment served
	front     *httptest.Server
}

func startRoundRobin(t *testing.T) *roundRobin {
	t.Helper()
	testutil.LeakCheck(t)
	testutil.NeedsFFmpeg(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	rr := &roundRobin{t: t, bus: e, pub: testutil.DialNATS(t, e, "publisher")}
	rr.publish()
	t.Cleanup(rr.stopPublisher)

	var targets []*url.URL
	for _, name := range []string{"a", "b", "c"} {
		n := startNode(t, e, name)
		t.Cleanup(n.stop)
		n.index() // each node has started its muxers
		rr.nodes = append(rr.nodes, n)
		u, _ := url.Parse(n.http.URL)
		targets = append(targets, u)
	}
	var next atomic.Uint64
	rr.served = make([]atomic.Int64, len(targets))
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		i := (next.Add(1) - 1) % uint64(len(targets))
		rr.served[i].Add(1)
		if strings.HasSuffix(r.In.URL.Path, ".mp4") && !strings.HasSuffix(r.In.URL.Path, "init.mp4") {
			rr.firstPart.CompareAndSwap(0, time.Now().UnixNano())
		}
		r.SetURL(targets[i])
	}, ModifyResponse: func(res *http.Response) error {
		if res.StatusCode != http.StatusOK {
			t.Logf("%s %s: %s", res.Request.URL.Host, res.Request.URL.RequestURI(), res.Status)
		}
		return nil
	}}
	rr.reports = make(chan browserReport, 1)
	mux := http.NewServeMux()
	mux.Handle("/hls/", proxy)
	browserRoutes(t, rr.reports)(mux)
	rr.front = httptest.NewServer(mux)
	t.Cleanup(rr.front.Close)
	return rr
}

// play plays the stream through the proxy for roundRobinSeconds and
// returns the page's report and the requests each node served; midway, if
// set, runs 10 s after the first media request.
func (rr *roundRobin) play(midway func()) (browserReport, []int64) {
	t := rr.t
	q := url.Values{"src": {rr.front.URL + "/hls/" + testStream + "/index.m3u8"}, "seconds": {strconv.Itoa(roundRobinSeconds)}}
	b := testutil.StartBrowser(t, rr.front.URL+"/player?"+q.Encode())
	t.Cleanup(b.Close)
	if midway != nil {
		testutil.Eventually(t, time.Minute, "10 s of playback", func() bool {
			first := rr.firstPart.Load()
			return first != 0 && time.Since(time.Unix(0, first)) >= 10*time.Second
		})
		midway()
	}
	var rep browserReport
	select {
	case rep = <-rr.reports:
	case <-b.Exited():
		t.Fatalf("chromium exited before reporting:\n%s", b.Output())
	case <-time.After(3 * time.Minute):
		t.Fatalf("no report from the browser after 3 minutes:\n%s", b.Output())
	}
	counts := make([]int64, len(rr.served))
	for i := range rr.served {
		counts[i] = rr.served[i].Load()
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
	return rep, counts
}

// publish starts a new publisher of the stream: a new transcoder, as a
// job's owner runs.
func (rr *roundRobin) publish() {
	rr.job = startJob(rr.t, "")
	ctx, cancel := context.WithCancel(context.Background())
	rr.cancel, rr.published = cancel, make(chan struct{})
	go func(job *transcode.Transcoder, done chan struct{}) {
		defer close(done)
		_ = relay.Publish(ctx, rr.pub, testStream, job) // ends with cancel
	}(rr.job, rr.published)
}

func (rr *roundRobin) stopPublisher() {
	rr.cancel()
	<-rr.published
	_ = rr.job.Close()
}

// failover replaces the publisher and returns how long the stream had no
// media: from the old publisher's end to the new one's first packet on
// the first node.
func (rr *roundRobin) failover() time.Duration {
	before := rr.nodes[0].follow.Changes()
	rr.stopPublisher()
	stopped := time.Now()
	rr.publish()
	testutil.Eventually(rr.t, 20*time.Second, "the nodes to follow the new publisher", func() bool {
		for _, n := range rr.nodes {
			if n.follow.Changes() == before {
				return false
			}
		}
		return true
	})
	return time.Since(stopped)
}
