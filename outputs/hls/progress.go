package hls

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
)

// Why a request that waited did not get what it waited for.
var (
	errEnded   = errors.New("stream ended")
	errTimeout = errors.New("timed out")
)

// playlistState is what one muxer has published, as read back from its own
// media playlist right after a write. gohlslib has no progress callback, and
// its playlist is the authoritative view of which segments and parts exist.
type playlistState struct {
	ready           bool          // the first complete segment exists
	firstMSN        int           // first segment that is not an EXT-X-GAP placeholder
	nextMSN         int           // media sequence number of the segment being written
	parts           int           // complete parts of segment nextMSN
	lastSegParts    int           // parts of segment nextMSN-1
	lastSegDuration time.Duration // duration of segment nextMSN-1
	firstDuration   time.Duration // duration of segment firstMSN
	nextPart        uint64        // gohlslib's id of the part being written: the preload hint
	prefix          string        // gohlslib's file prefix, new for every muxer
	// delta maps gohlslib's segment numbers onto the stream's timeline
	// (timeline.go): every MSN above is gohlslib's plus delta.
	delta int
	bases []partBase // gohlslib's id of the first part of the latest segments
}

// hasPart mirrors gohlslib's muxerStream.hasPart exactly: once it is true
// for a blocking request, gohlslib answers that request without waiting (it
// would wait, deaf to the client going away, in every other case). For the
// last complete segment gohlslib only treats a part index past its end as
// part 0 of the next segment once that one is complete too.
func (s playlistState) hasPart(msn, part int) bool {
	switch {
	case !s.ready || msn > s.nextMSN || msn < s.firstMSN:
		return false
	case msn < s.nextMSN-1:
		return true
	case msn == s.nextMSN-1:
		return part < s.lastSegParts
	default:
		return part < s.parts
	}
}

// moved is s with its segment numbers moved by d more.
func (s playlistState) moved(d int) playlistState {
	s.firstMSN += d
	s.nextMSN += d
	s.delta += d
	bases := make([]partBase, len(s.bases))
	for i, b := range s.bases {
		b.msn += d
		bases[i] = b
	}
	s.bases = bases
	return s
}

// joinDistance is how many parts before the point hold parts behind the
// live edge the newest IDR at or before that point lies: what a player
// starting PART-HOLD-BACK behind the edge has to download ahead of its
// start position. It is negative when that IDR lies further back than the
// last complete segment's start (segments shorter than hold parts).
func (s playlistState) joinDistance(hold int) int {
	if s.parts >= hold {
		return s.parts - hold
	}
	return s.parts + s.lastSegParts - hold
}

// progress holds the latest playlistState of a muxer and wakes the requests
// that wait for it to move on. Waiters select on a channel that is closed and
// replaced on every change, so they can also watch their own context: nothing
// ever waits inside gohlslib, where a blocked request ignores cancellation.
type progress struct {
	mu      sync.Mutex
	state   playlistState
	ended   bool
	changed chan struct{}
}

func newProgress() *progress { return &progress{changed: make(chan struct{})} }

func (p *progress) get() (playlistState, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state, p.ended
}

func (p *progress) set(s playlistState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
	p.state = s
	close(p.changed)
	p.changed = make(chan struct{})
}

// end releases every waiter for good: the muxer is closing.
func (p *progress) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ended {
		p.ended = true
		close(p.changed)
	}
}

// wait returns the state once cond holds, or errEnded, errTimeout or the
// context's error.
func (p *progress) wait(ctx context.Context, deadline <-chan time.Time, cond func(playlistState) bool) (playlistState, error) {
	for {
		p.mu.Lock()
		s, ended, ch := p.state, p.ended, p.changed
		p.mu.Unlock()
		if ended {
			return s, errEnded
		}
		if cond(s) {
			return s, nil
		}
		select {
		case <-ch:
		case <-deadline:
			return s, errTimeout
		case <-ctx.Done():
			return s, ctx.Err()
		}
	}
}

// memWriter captures a response of gohlslib's handler in memory.
type memWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func newMemWriter() *memWriter { return &memWriter{header: http.Header{}} }

func (w *memWriter) Header() http.Header { return w.header }

func (w *memWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *memWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// status is the response code, 0 when gohlslib wrote nothing (unknown path).
func (w *memWriter) status() int { return w.code }

// fetchPlaylist runs gohlslib's handler for a media playlist of m. It blocks
// inside gohlslib until m has its first segment: call it only when that is
// known, or from a goroutine that Close releases.
func fetchPlaylist(m *gohlslib.Muxer, file, rawQuery string) (*memWriter, error) {
	w := newMemWriter()
	m.Handle(w, &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/" + file, RawQuery: rawQuery}, Header: http.Header{}})
	if w.status() != http.StatusOK {
		return w, fmt.Errorf("gohlslib answered %d for %s", w.status(), file)
	}
	return w, nil
}

var (
	hintRE = regexp.MustCompile(`_part([0-9]+)\.mp4$`)
	initRE = regexp.MustCompile(`^([0-9a-f]+)_[a-z]+[0-9]+_init\.mp4$`)
)

// readState reads back what m has published for its video stream, with
// segment numbers moved by delta onto the stream's timeline.
func readState(m *gohlslib.Muxer, delta int) (playlistState, error) {
	w, err := fetchPlaylist(m, videoPlaylist, "")
	if err != nil {
		return playlistState{}, err
	}
	var pl playlist.Media
	if err := pl.Unmarshal(w.body.Bytes()); err != nil {
		return playlistState{}, fmt.Errorf("gohlslib's own playlist: %w", err)
	}
	return stateOf(&pl, delta)
}

func stateOf(pl *playlist.Media, delta int) (playlistState, error) {
	if pl.PreloadHint == nil || pl.Map == nil || len(pl.Segments) == 0 {
		return playlistState{}, errors.New("gohlslib's playlist lacks a segment, a map or a preload hint")
	}
	hint := hintRE.FindStringSubmatch(pl.PreloadHint.URI)
	init := initRE.FindStringSubmatch(pl.Map.URI)
	if hint == nil || init == nil {
		return playlistState{}, fmt.Errorf("unexpected gohlslib file names %q, %q", pl.PreloadHint.URI, pl.Map.URI)
	}
	next, err := strconv.ParseUint(hint[1], 10, 64)
	if err != nil {
		return playlistState{}, err
	}
	// gohlslib puts 7 EXT-X-GAP segments in front of the first one (iOS
	// wants a full window); they can never be waited for.
	first := pl.MediaSequence
	var firstDuration time.Duration
	for _, seg := range pl.Segments {
		if !seg.Gap {
			firstDuration = seg.Duration
			break
		}
		first++
	}
	next0 := pl.MediaSequence + len(pl.Segments)
	var bases []partBase
	for i, seg := range pl.Segments {
		if len(seg.Parts) == 0 {
			continue
		}
		if m := hintRE.FindStringSubmatch(seg.Parts[0].URI); m != nil {
			if id, err := strconv.ParseUint(m[1], 10, 64); err == nil {
				bases = append(bases, partBase{msn: pl.MediaSequence + i + delta, first: id, n: len(seg.Parts)})
			}
		}
	}
	bases = append(bases, partBase{msn: next0 + delta, first: next - uint64(len(pl.Parts)), n: len(pl.Parts)})
	return playlistState{
		ready:           true,
		firstMSN:        first + delta,
		nextMSN:         next0 + delta,
		parts:           len(pl.Parts),
		lastSegParts:    len(pl.Segments[len(pl.Segments)-1].Parts),
		lastSegDuration: pl.Segments[len(pl.Segments)-1].Duration,
		firstDuration:   firstDuration,
		nextPart:        next,
		prefix:          init[1],
		delta:           delta,
		bases:           bases,
	}, nil
}
