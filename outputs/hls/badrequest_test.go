package hls

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/prism-streaming/prism/internal/testutil"
)

// twoSecondGOP makes segments of 2 s (10 parts): a blocking request for
// part 3 of the segment after the next one is then ~3 s away, time enough to
// cancel a thousand of them before media could release them.
const twoSecondGOP = `name: hlstest2
gop: 2s
rungs:
  - {name: 360p, height: 360, bitrate: 500k, preset: ultrafast}
  - {name: 180p, height: 180, bitrate: 150k, preset: ultrafast}
audio:
  aac: {bitrate: 64k}
  opus: {bitrate: 32k}
`

// TestBadRequests: every malformed, unknown, hostile or abandoned request
// gets a precise answer, and none leaves anything behind.
func TestBadRequests(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	const maxBlocking = 1000
	// One test client plays a thousand players here: the per-client cap
	// must not be what refuses them (TestBlockingPerClient checks it).
	f := startFixture(t, Config{MaxBlockingRequests: maxBlocking, MaxBlockingPerClient: 2 * maxBlocking,
		CORSOrigins: []string{"https://player.example"}}, twoSecondGOP, nil)
	defer f.close()

	mv := f.index()
	hi := mv.Variants[len(mv.Variants)-1].URI // <epoch>/360p/video1_stream.m3u8
	epoch := strings.Split(hi, "/")[0]
	pl := f.media(hi)

	t.Run("objects", func(t *testing.T) {
		checkObjects(t, f, mv, hi)
	})

	t.Run("not found", func(t *testing.T) {
		for _, c := range []struct{ path, want string }{
			{"/hls/nope/index.m3u8", `unknown stream "nope"`},
			{"/hls/live/nothing.m3u8", "no such file"},
			{"/hls/live/index.m3u8/x", "no such file"},
			{"/hls/", "unknown stream"},
			{"/hls/live/" + epoch + "/360p/nothing.mp4", "no file"},
			{"/hls/live/" + epoch + "/360p/index.m3u8", "no file"}, // gohlslib's own single-variant playlist
			{"/hls/live/" + epoch + "/360p/999999.mp4", "does not exist yet"},
			{"/hls/live/" + epoch + "/360p/999999.0.mp4", "does not exist yet"},
			{"/hls/live/" + epoch + "/360p/0.mp4", "not in the playlist window"},
			{"/hls/live/" + epoch + "/360p/0123456789ab_video1_init.mp4", "no file"},
			{"/hls/live/" + epoch + "/999p/video1_stream.m3u8", `no rendition "999p"`},
			{"/hls/live/" + epoch + "/_audio/video1_stream.m3u8", "no file"},
			{"/hls/live/deadbeef/360p/video1_stream.m3u8", "was restarted"},
		} {
			res, body := f.get(f.http.URL + c.path)
			if res.StatusCode != http.StatusNotFound || !strings.Contains(string(body), c.want) {
				t.Errorf("%s: %d %q, want 404 with %q", c.path, res.StatusCode, body, c.want)
			}
			if cc := res.Header.Get("Cache-Control"); cc != cacheError {
				t.Errorf("%s: Cache-Control %q on an error", c.path, cc)
			}
		}
	})

	t.Run("traversal", func(t *testing.T) {
		// Straight to the handler (no ServeMux cleaning the path first), and
		// through the ServeMux the service mounts it on.
		direct := httptest.NewServer(f.srv)
		defer direct.Close()
		for _, p := range []string{
			"/hls/../../etc/passwd",
			"/hls/%2e%2e/%2e%2e/etc/passwd",
			"/hls/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
			"/hls/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
			"/hls/live/..%2f..%2f..%2fetc%2fpasswd",
			"/hls/live/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
			"/hls/live/" + epoch + "/360p/..%2f..%2f..%2f..%2fetc%2fpasswd",
			"/hls/live/" + epoch + "/360p/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
			"/hls/live/" + epoch + "/..%5c..%5c..%5cetc%5cpasswd",
			"/hls/live/" + epoch + "/360p/..\\..\\etc\\passwd",
			"/hls/live/%00/index.m3u8",
			"/hls/live/" + epoch + "/360p/%2e%2e%2f%2e%2e%2findex.m3u8",
		} {
			for _, srv := range []*httptest.Server{direct, f.http} {
				code, body := rawGet(t, srv.Listener.Addr().String(), p)
				ok := code == http.StatusBadRequest || code == http.StatusNotFound ||
					(srv == f.http && code >= 300 && code < 400) // ServeMux redirects to the cleaned path, outside /hls/
				if !ok || strings.Contains(body, "root:") {
					t.Errorf("%s (mux %v): %d %q", p, srv == f.http, code, body)
				}
				if srv == direct && code != http.StatusBadRequest {
					t.Errorf("%s: %d, want 400 from the handler itself", p, code)
				}
			}
		}
	})

	t.Run("directives", func(t *testing.T) {
		next := pl.MediaSequence + len(pl.Segments)
		for _, q := range []string{
			"_HLS_msn=99999999",
			"_HLS_msn=99999999&_HLS_part=0",
			"_HLS_msn=99999999999999999999",
			"_HLS_msn=-1",
			"_HLS_msn=abc",
			"_HLS_msn=1e3",
			"_HLS_msn=%2B5",
			"_HLS_msn=",
			"_HLS_part=1",
			"_HLS_msn=0", // an EXT-X-GAP placeholder: never available
			"_HLS_msn=1&_HLS_msn=2",
			"_HLS_skip=NO",
			fmt.Sprintf("_HLS_msn=%d&_HLS_part=99", next+1),
			fmt.Sprintf("_HLS_msn=%d", next+2),
		} {
			start := time.Now()
			res, body := f.get(hi + "?" + q)
			if res.StatusCode != http.StatusBadRequest {
				t.Errorf("?%s: %d %q, want 400", q, res.StatusCode, body)
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Errorf("?%s: answered after %s, want at once", q, d)
			}
		}
	})

	t.Run("methods and CORS", func(t *testing.T) {
		res, _ := f.client.Post(f.base+"index.m3u8", "text/plain", strings.NewReader("x"))
		res.Body.Close()
		if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") == "" {
			t.Errorf("POST: %d, Allow %q", res.StatusCode, res.Header.Get("Allow"))
		}
		for _, c := range []struct {
			origin string
			allow  string
		}{{"https://player.example", "https://player.example"}, {"https://evil.example", ""}} {
			req, _ := http.NewRequest(http.MethodGet, f.base+"index.m3u8", nil)
			req.Header.Set("Origin", c.origin)
			res := do(t, f.client, req)
			if got := res.Header.Get("Access-Control-Allow-Origin"); got != c.allow {
				t.Errorf("GET from %s: Access-Control-Allow-Origin %q, want %q", c.origin, got, c.allow)
			}
			if !strings.Contains(res.Header.Get("Vary"), "Origin") {
				t.Errorf("GET from %s: no Vary: Origin", c.origin)
			}
			req, _ = http.NewRequest(http.MethodOptions, f.base+hi, nil)
			req.Header.Set("Origin", c.origin)
			req.Header.Set("Access-Control-Request-Method", "GET")
			req.Header.Set("Access-Control-Request-Headers", "range")
			res = do(t, f.client, req)
			want := http.StatusNoContent
			if c.allow == "" {
				want = http.StatusForbidden
			}
			if res.StatusCode != want {
				t.Errorf("preflight from %s: %d, want %d", c.origin, res.StatusCode, want)
			}
			if c.allow != "" && (res.Header.Get("Access-Control-Allow-Methods") == "" || res.Header.Get("Access-Control-Allow-Headers") != "range") {
				t.Errorf("preflight from %s: headers %v", c.origin, res.Header)
			}
		}
	})

	t.Run("cancelled blocking requests", func(t *testing.T) {
		// Wait for a fresh segment so that the target below is ~3 s away.
		var cur playlistState
		testutil.Eventually(t, 10*time.Second, "a segment to start", func() bool {
			cur, _ = f.srv.stream(testStream).rungs[0].prog.get()
			return cur.ready && cur.parts == 0
		})
		target := fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=3", hi, cur.nextMSN+1)
		abandoned := f.srv.abandoned.Load()
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)

		const n = maxBlocking + 100
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		tr := &http.Transport{MaxIdleConnsPerHost: -1}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		var busy, cancelled, other atomic.Int64
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.base+target, nil)
				res, err := client.Do(req)
				switch {
				case err != nil && ctx.Err() != nil:
					cancelled.Add(1)
				case err == nil && res.StatusCode == http.StatusServiceUnavailable && res.Header.Get("Retry-After") != "":
					busy.Add(1)
				default:
					other.Add(1)
				}
				if err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			}()
		}
		testutil.Eventually(t, 20*time.Second, "1000 requests waiting and 100 refused", func() bool {
			return len(f.srv.blocking) == maxBlocking && busy.Load() == n-maxBlocking
		})
		var during runtime.MemStats
		runtime.ReadMemStats(&during)
		if s, _ := f.srv.stream(testStream).rungs[0].prog.get(); s.hasPart(cur.nextMSN+1, 3) {
			t.Fatalf("the awaited part arrived before the requests were cancelled: the machine is too slow for this test")
		}
		cancel()
		released := time.Now()
		testutil.Eventually(t, 2*time.Second, "the waits to end", func() bool { return len(f.srv.blocking) == 0 })
		wg.Wait()
		if s, _ := f.srv.stream(testStream).rungs[0].prog.get(); s.hasPart(cur.nextMSN+1, 3) {
			t.Fatalf("the awaited part arrived before the waits ended: nothing proves they ended on cancellation")
		}
		if got := f.srv.abandoned.Load() - abandoned; got != maxBlocking {
			t.Errorf("%d waits ended on cancellation, want %d", got, maxBlocking)
		}
		if cancelled.Load() != maxBlocking || other.Load() != 0 {
			t.Errorf("client side: %d cancelled, %d refused with 503, %d other", cancelled.Load(), busy.Load(), other.Load())
		}
		growth := int64(during.HeapInuse) - int64(before.HeapInuse)
		t.Logf("%d waiting requests (both ends in this process) held %.1f MB of heap; released in %s",
			maxBlocking, float64(growth)/1e6, time.Since(released).Round(time.Millisecond))
		if growth > 100<<20 {
			t.Errorf("heap grew by %d MB with %d waiting requests", growth>>20, maxBlocking)
		}
		// And a blocking request that stays gets its playlist, with the part.
		res, body := f.get(target)
		var got playlist.Media
		if res.StatusCode != http.StatusOK || got.Unmarshal(body) != nil {
			t.Fatalf("blocking request after the storm: %d %s", res.StatusCode, body)
		}
		if next := got.MediaSequence + len(got.Segments); next < cur.nextMSN+1 || (next == cur.nextMSN+1 && len(got.Parts) < 4) {
			t.Errorf("blocking request for segment %d part 3 got a playlist at segment %d with %d parts", cur.nextMSN+1, next, len(got.Parts))
		}
	})
}

// checkObjects fetches one object of each kind and checks its headers, and
// the LL-HLS tags of the media playlists.
func checkObjects(t *testing.T, f *fixture, mv *playlist.Multivariant, video string) {
	audio := *mv.Renditions[0].URI
	vpl, apl := f.media(video), f.media(audio)
	last := vpl.Segments[len(vpl.Segments)-1]
	alast := apl.Segments[len(apl.Segments)-1]
	for _, c := range []struct{ uri, ctype, cache string }{
		{"index.m3u8", contentTypePlaylist, cachePlaylist},
		{video, contentTypePlaylist, cachePlaylist},
		{audio, contentTypePlaylist, cachePlaylist},
		{dir(video) + vpl.Map.URI, "video/mp4", cacheMedia},
		{dir(video) + last.URI, "video/mp4", cacheMedia},
		{dir(video) + last.Parts[0].URI, "video/mp4", cacheMedia},
		{dir(video) + vpl.PreloadHint.URI, "video/mp4", cacheMedia}, // waits for the part
		{dir(audio) + apl.Map.URI, "audio/mp4", cacheMedia},
		{dir(audio) + alast.URI, "audio/mp4", cacheMedia},
		{dir(audio) + alast.Parts[0].URI, "audio/mp4", cacheMedia},
	} {
		res, body := f.get(c.uri)
		if res.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("%s: %d, %d bytes", c.uri, res.StatusCode, len(body))
			continue
		}
		if got := res.Header.Get("Content-Type"); got != c.ctype {
			t.Errorf("%s: Content-Type %q, want %q", c.uri, got, c.ctype)
		}
		if got := res.Header.Get("Cache-Control"); got != c.cache {
			t.Errorf("%s: Cache-Control %q, want %q", c.uri, got, c.cache)
		}
	}

	sc, pi := vpl.ServerControl, vpl.PartInf
	if sc == nil || pi == nil || !sc.CanBlockReload || sc.PartHoldBack == nil || sc.CanSkipUntil == nil {
		t.Fatalf("%s: EXT-X-SERVER-CONTROL %+v, EXT-X-PART-INF %+v", video, sc, pi)
	}
	if *sc.PartHoldBack < 3*pi.PartTarget {
		t.Errorf("PART-HOLD-BACK=%s with PART-TARGET=%s: want at least 3 parts", *sc.PartHoldBack, pi.PartTarget)
	}
	if pi.PartTarget != 200*time.Millisecond {
		t.Errorf("PART-TARGET=%s, want 200ms (the default, 6 frames at 30 fps)", pi.PartTarget)
	}
	// A report for every other rendition: the other rungs and the audio.
	if vpl.PreloadHint == nil || len(vpl.RenditionReport) != len(mv.Variants)-1+len(mv.Renditions) {
		t.Errorf("%s: preload hint %v, %d rendition reports for %d variants and %d renditions", video, vpl.PreloadHint, len(vpl.RenditionReport), len(mv.Variants), len(mv.Renditions))
	}
	for _, rep := range vpl.RenditionReport {
		if f.media(dir(video)+rep.URI) == nil || rep.LastPart == nil {
			t.Errorf("rendition report %+v", rep)
		}
	}
	// Delta update: the segments older than CAN-SKIP-UNTIL are skipped.
	next := vpl.MediaSequence + len(vpl.Segments)
	res, body := f.get(fmt.Sprintf("%s?_HLS_msn=%d&_HLS_skip=YES", video, next))
	var delta playlist.Media
	if res.StatusCode != http.StatusOK || delta.Unmarshal(body) != nil {
		t.Fatalf("delta update: %d %s", res.StatusCode, body)
	}
	if delta.Skip == nil || delta.Skip.SkippedSegments == 0 || delta.Map != nil {
		t.Errorf("delta update without EXT-X-SKIP:\n%s", body)
	}
}

// rawGet sends a request line as is (no client-side cleaning of the path)
// and returns the status and body.
func rawGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func do(t *testing.T, c *http.Client, req *http.Request) *http.Response {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}
