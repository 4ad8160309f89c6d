package hls

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/relay"
)

// node is one serving node of TestNodesServeOneTimeline: a relay.Stream
// following the job over NATS, its registry and its HLS server.
type node struct {
	fixture
	follow *relay.Stream
}

func startNode(t *testing.T, e *bus.Embedded, name string) *node {
	t.Helper()
	nc := testutil.DialNATS(t, e, name)
	// The publisher may not answer yet: it was started just before.
	var s *relay.Stream
	var err error
	testutil.Eventually(t, 10*time.Second, "the publisher to answer", func() bool {
		s, err = relay.Follow(context.Background(), nc, testStream)
		if errors.Is(err, relay.ErrStreamNotFound) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return true
	})
	n := &node{follow: s}
	n.t, n.reg = t, &pipeline.Registry{}
	n.srv = &Server{Streams: n.reg}
	if err := n.srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := n.reg.Add(testStream, s); err != nil {
		t.Fatal(err)
	}
	n.http = httptest.NewServer(n.srv)
	n.client = &http.Client{}
	n.base = n.http.URL + "/hls/" + testStream + "/"
	return n
}

func (n *node) stop() {
	n.client.CloseIdleConnections()
	n.reg.Remove(testStream)
	n.srv.Close()
	n.http.Close()
	_ = n.follow.Close()
}

// TestNodesServeOneTimeline: two nodes follow one publisher, the second
// starting seconds after the first. For the same media time they serve
// the same multivariant playlist, the same media sequence numbers, segment
// and part names and durations, and byte-identical init files, segments
// and parts: a player behind a load balancer spreading its requests over
// both plays one timeline.
func TestNodesServeOneTimeline(t *testing.T) {
	testutil.LeakCheck(t)
	testutil.NeedsFFmpeg(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	pub := testutil.DialNATS(t, e, "publisher")
	job := startJob(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	published := make(chan struct{})
	go func() { defer close(published); _ = relay.Publish(ctx, pub, testStream, job) }() // ends with cancel
	defer func() { cancel(); <-published; _ = job.Close() }()

	a := startNode(t, e, "a")
	defer a.stop()
	mv := a.index()
	uris := make([]string, 0, len(mv.Variants)+1)
	for _, v := range mv.Variants {
		uris = append(uris, v.URI)
	}
	for _, r := range mv.Renditions {
		if r.URI != nil {
			uris = append(uris, *r.URI)
		}
	}
	a.waitSegments(uris[:1], 3, 30*time.Second)
	b := startNode(t, e, "b")
	defer b.stop()
	mvb := b.index()
	for i := range mv.Variants {
		if mv.Variants[i].URI != mvb.Variants[i].URI {
			t.Fatalf("variant %d: node a serves %s, node b %s", i, mv.Variants[i].URI, mvb.Variants[i].URI)
		}
	}
	b.waitSegments(uris[:1], 2, 30*time.Second)

	for _, uri := range uris {
		// Ask both nodes for the playlist once part 0 of the segment after
		// a's next exists: the same point of the media timeline.
		next := a.media(uri)
		msn := next.MediaSequence + len(next.Segments) + 1
		q := fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=0", uri, msn)
		pa, pb := a.media(q), b.media(q)
		if pa.MediaSequence != pb.MediaSequence || len(pa.Segments) != len(pb.Segments) {
			t.Errorf("%s: node a's window is segments %d+%d, node b's %d+%d", uri, pa.MediaSequence, len(pa.Segments), pb.MediaSequence, len(pb.Segments))
			continue
		}
		common := 0
		for i, sa := range pa.Segments {
			sb := pb.Segments[i]
			if sa.Gap || sb.Gap {
				continue // b started later: its window begins with placeholders
			}
			common++
			if sa.URI != sb.URI || sa.Duration != sb.Duration || len(sa.Parts) != len(sb.Parts) {
				t.Errorf("%s: segment %d: node a %s (%s, %d parts), node b %s (%s, %d parts)", uri, pa.MediaSequence+i,
					sa.URI, sa.Duration, len(sa.Parts), sb.URI, sb.Duration, len(sb.Parts))
				continue
			}
			for j := range sa.Parts {
				if sa.Parts[j].URI != sb.Parts[j].URI || sa.Parts[j].Duration != sb.Parts[j].Duration {
					t.Errorf("%s: segment %d part %d: node a %s, node b %s", uri, pa.MediaSequence+i, j, sa.Parts[j].URI, sb.Parts[j].URI)
				}
			}
			if sa.DateTime != nil && sb.DateTime != nil {
				if d := sa.DateTime.Sub(*sb.DateTime).Abs(); d > 50*time.Millisecond {
					t.Errorf("%s: segment %d: PROGRAM-DATE-TIME %s on node a, %s on node b", uri, pa.MediaSequence+i, sa.DateTime, sb.DateTime)
				}
			}
		}
		if common < 2 {
			t.Errorf("%s: only %d segments on both nodes", uri, common)
		}
		if pa.Parts[0].URI != pb.Parts[0].URI {
			t.Errorf("%s: first part of segment %d: node a %s, node b %s", uri, msn, pa.Parts[0].URI, pb.Parts[0].URI)
		}
		last := pa.Segments[len(pa.Segments)-1]
		files := []string{pa.Map.URI, last.URI, last.Parts[0].URI, pa.Parts[0].URI}
		for _, file := range files {
			fa, fb := a.mustGet(dir(uri)+file), b.mustGet(dir(uri)+file)
			if !bytes.Equal(fa, fb) {
				t.Errorf("%s%s: node a serves %d bytes, node b %d, not the same", dir(uri), file, len(fa), len(fb))
			}
		}
		t.Logf("%s: segments %d to %d (%d on both nodes), part %s: the same on both nodes", uri, pa.MediaSequence, msn-1, common, pa.Parts[0].URI)
	}

	// A node a segment behind the one that served the player's last
	// playlist holds the player's next requests until it gets there,
	// instead of refusing them as too far ahead: one segment more than a
	// single node allows.
	uri := uris[0]
	cur := b.media(uri)
	next := cur.MediaSequence + len(cur.Segments)
	start := time.Now()
	ahead := b.media(fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=0", uri, next+2))
	if got := ahead.MediaSequence + len(ahead.Segments); got != next+2 {
		t.Errorf("%s: asked for segment %d part 0, the playlist's next segment is %d", uri, next+2, got)
	}
	seg := b.mustGet(dir(uri) + segmentName(next+1))
	t.Logf("%s: segment %d part 0 from node b at segment %d: served after %s; segment %d: %d bytes", uri, next+2, next, time.Since(start).Round(time.Millisecond), next+1, len(seg))
}

func TestTooFarAhead(t *testing.T) {
	// The playlist is writing segment 10 and has 2 of its parts.
	s := playlistState{nextMSN: 10, parts: 2}
	for _, c := range []struct {
		msn, part, slack int
		far              bool
	}{
		{10, 5, 0, false}, {10, 6, 0, true}, {11, 3, 0, false}, {11, 4, 0, true}, {12, 0, 0, true},
		// Shared timeline: one segment more.
		{11, 9, 1, false}, {12, 3, 1, false}, {12, 4, 1, true}, {13, 0, 1, true},
	} {
		if got := tooFarAhead(s, c.msn, c.part, c.slack); got != c.far {
			t.Errorf("segment %d part %d, slack %d: too far %v, want %v", c.msn, c.part, c.slack, got, c.far)
		}
	}
	for _, c := range []struct {
		f     mediaFile
		slack int
		far   bool
	}{
		{mediaFile{msn: 10}, 0, false}, {mediaFile{msn: 11}, 0, true},
		{mediaFile{msn: 11}, 1, false}, {mediaFile{msn: 12}, 1, true},
		{mediaFile{msn: 11, part: 3, isPart: true}, 0, false}, {mediaFile{msn: 12, part: 0, isPart: true}, 1, false},
	} {
		if got := tooFar(s, c.f, c.slack); got != c.far {
			t.Errorf("%+v, slack %d: too far %v, want %v", c.f, c.slack, got, c.far)
		}
	}
}
