package hls

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/prism-streaming/prism/internal/testutil"
)

func TestJoinDistance(t *testing.T) {
	for _, c := range []struct {
		parts, lastSegParts, want int
	}{
		{parts: 3, lastSegParts: 5, want: 0}, // IDR exactly PART-HOLD-BACK behind the edge
		{parts: 4, lastSegParts: 5, want: 1},
		{parts: 0, lastSegParts: 5, want: 2}, // the previous IDR, a segment back
		{parts: 2, lastSegParts: 5, want: 4},
		{parts: 9, lastSegParts: 10, want: 6}, // long GOP, late in it
		{parts: 1, lastSegParts: 1, want: -1}, // segments shorter than the hold-back
	} {
		s := playlistState{ready: true, parts: c.parts, lastSegParts: c.lastSegParts}
		if got := s.joinDistance(holdBackParts); got != c.want {
			t.Errorf("parts %d, last segment %d parts: distance %d, want %d", c.parts, c.lastSegParts, got, c.want)
		}
	}
}

// TestFirstPlaylistAtJoinPoint checks that a playlist request without
// delivery directives, a player's first, is answered when the newest IDR is
// PART-HOLD-BACK (3 parts) or one part more behind the live edge, even when
// it arrives right after a segment started (the worst moment to join).
func TestFirstPlaylistAtJoinPoint(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	f := startFixture(t, Config{}, "", nil)
	defer f.close()
	mv := f.index()
	uri := mv.Variants[0].URI
	st, err := servedState(f.firstLook(uri, "Mozilla/5.0 (test player)"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		// Wait for part 0 of the next segment to complete: the newest IDR is
		// then one part behind the edge, two parts short of the join point.
		msn := st.nextMSN + 1
		f.media(fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=0", uri, msn))
		begin := time.Now()
		st, err = servedState(f.firstLook(uri, fmt.Sprintf("Mozilla/5.0 (test player %d)", i)))
		if err != nil {
			t.Fatal(err)
		}
		waited := time.Since(begin)
		t.Logf("join %d: segment %d, %d parts, waited %s", i, st.nextMSN, st.parts, waited.Round(time.Millisecond))
		if d := st.joinDistance(holdBackParts); d < 0 || d > 1 {
			t.Errorf("join %d: served with the newest IDR %d parts behind the edge (%d parts past PART-HOLD-BACK), want 0 or 1", i, st.parts, d)
		}
		if waited > 3*time.Second {
			t.Errorf("join %d: waited %s, want at most a GOP and a PART-HOLD-BACK", i, waited)
		}
	}
}

// firstLook fetches a media playlist as a new browser player would:
// without directives, under a browser's User-Agent not seen before.
func (f *fixture) firstLook(uri, userAgent string) *playlist.Media {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.base+uri, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("User-Agent", userAgent)
	res, err := f.client.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		f.t.Fatalf("GET %s: %d %s %v", uri, res.StatusCode, b, err)
	}
	var pl playlist.Media
	if err := pl.Unmarshal(b); err != nil {
		f.t.Fatalf("%s: %v\n%s", uri, err, b)
	}
	return &pl
}

// TestJoinLog checks that only a client's first request for a playlist is
// a join, that it is forgotten after joinMemory, and that the log is bounded.
func TestJoinLog(t *testing.T) {
	var j joinLog
	now := time.Unix(1000, 0)
	if !j.first("e/360p/v", "1.2.3.4", "A", now) {
		t.Error("first request not a join")
	}
	if j.first("e/360p/v", "1.2.3.4", "A", now.Add(time.Second)) {
		t.Error("second request a join")
	}
	if !j.first("e/360p/v", "1.2.3.4", "B", now.Add(time.Second)) {
		t.Error("another browser behind the same address not a join")
	}
	if !j.first("e/480p/v", "1.2.3.4", "A", now.Add(time.Second)) {
		t.Error("another playlist not a join")
	}
	if !j.first("e/360p/v", "1.2.3.4", "A", now.Add(time.Second+joinMemory+time.Millisecond)) {
		t.Error("a request after joinMemory of silence not a join")
	}
	for i := range maxJoins + 10 {
		j.first("e/360p/v", fmt.Sprint(i), "A", now.Add(2*joinMemory))
	}
	if n := len(j.seen); n > maxJoins {
		t.Errorf("%d clients remembered, want at most %d", n, maxJoins)
	}
}

// TestJoinOnlyHoldsBrowsers checks that a client that is no browser (FFmpeg,
// gohlslib, this test's Go client) gets its playlist at once, wherever the
// segment is.
func TestJoinOnlyHoldsBrowsers(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	f := startFixture(t, Config{}, "", nil)
	defer f.close()
	uri := f.index().Variants[0].URI
	st, err := servedState(f.media(uri))
	if err != nil {
		t.Fatal(err)
	}
	f.media(fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=0", uri, st.nextMSN+1))
	if st, err = servedState(f.media(uri)); err != nil {
		t.Fatal(err)
	}
	if st.joinDistance(holdBackParts) <= 1 {
		t.Errorf("a Go client's playlist came at a join point (%d parts): held like a browser's?", st.parts)
	}
}

// servedState is the playlistState of a playlist as served (numbers and
// names on the stream's timeline), as far as the tests need it.
func servedState(pl *playlist.Media) (playlistState, error) {
	if pl.PreloadHint == nil || len(pl.Segments) == 0 {
		return playlistState{}, errors.New("playlist lacks a segment or a preload hint")
	}
	return playlistState{
		ready:        true,
		nextMSN:      pl.MediaSequence + len(pl.Segments),
		parts:        len(pl.Parts),
		lastSegParts: len(pl.Segments[len(pl.Segments)-1].Parts),
	}, nil
}
