package hls

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestStreamLifecycle: a stream that goes away releases the requests that
// wait on it at once; a new job under the same name is served under a new
// epoch, so that no player ever gets a playlist that goes backwards; a job
// that ends on its own stops its muxers and goroutines.
func TestStreamLifecycle(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	f := startFixture(t, Config{}, "", nil)
	defer f.close()

	mv := f.index()
	hi := mv.Variants[len(mv.Variants)-1].URI
	pl := f.media(hi)
	next := pl.MediaSequence + len(pl.Segments)

	// A request waiting for media when the stream is removed.
	type result struct {
		code int
		body string
		err  error
	}
	waiting := make(chan result, 1)
	go func() { // returns once the request is answered
		res, err := f.client.Get(fmt.Sprintf("%s%s?_HLS_msn=%d&_HLS_part=3", f.base, hi, next+1))
		if err != nil {
			waiting <- result{err: err}
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		waiting <- result{code: res.StatusCode, body: string(b)}
	}()
	testutil.Eventually(t, 5*time.Second, "the request to wait", func() bool { return len(f.srv.blocking) == 1 })
	removed := time.Now()
	if _, ok := f.reg.Remove(testStream); !ok {
		t.Fatal("stream not registered")
	}
	select {
	case r := <-waiting:
		if r.err != nil || r.code != http.StatusNotFound || !strings.Contains(r.body, "ended") {
			t.Errorf("waiting request after removal: %d %q %v, want 404 stream ended", r.code, r.body, r.err)
		}
		if d := time.Since(removed); d > 500*time.Millisecond {
			t.Errorf("waiting request answered %s after the removal", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting request was not released by the removal")
	}
	if res, body := f.get("index.m3u8"); res.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "unknown stream") {
		t.Errorf("index.m3u8 of a removed stream: %d %q", res.StatusCode, body)
	}

	// The same name again, with a new job: a new epoch.
	job2 := startJob(t, "")
	defer job2.Close()
	if err := f.reg.Add(testStream, job2); err != nil {
		t.Fatal(err)
	}
	mv2 := f.index()
	hi2 := mv2.Variants[len(mv2.Variants)-1].URI
	if dir(hi2) == dir(hi) {
		t.Fatalf("the new job is served under the old URL %s", hi2)
	}
	if res, body := f.get(hi); res.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "was restarted") {
		t.Errorf("old playlist URL after a restart: %d %q, want 404 was restarted", res.StatusCode, body)
	}
	pl2 := f.media(hi2)
	t.Logf("old job at segment %d, new job's numbering starts over at %d: only the epoch tells them apart", next, pl2.MediaSequence+len(pl2.Segments))

	// The job ends while registered: its stream stops serving.
	st := f.srv.stream(testStream)
	if err := job2.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not stop after its job ended")
	}
	if res, body := f.get(hi2); res.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "ended") {
		t.Errorf("playlist of an ended job: %d %q, want 404 ended", res.StatusCode, body)
	}
	if _, _, ok := f.srv.Latency("nope"); ok {
		t.Error("latency of an unknown stream")
	}
}
