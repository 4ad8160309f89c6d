// Package hlscheck checks live LL-HLS playlists as a player meets them,
// reload after reload, against the rules of RFC 8216 (and its LL-HLS
// revision) that players rely on. Tests in any package can point it at a
// served stream.
package hlscheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
)

// maxProblems bounds the problems kept; the count goes on.
const maxProblems = 50

// Checker holds what it has seen of one stream's playlists.
type Checker struct {
	Client *http.Client
	// Frame is the tolerance of EXT-X-PROGRAM-DATE-TIME against EXTINF:
	// one frame interval. Default 1/30 s.
	Frame time.Duration

	mu       sync.Mutex
	index    string
	bw       map[string]int    // media playlist URL → BANDWIDTH last read
	audioOf  map[string]string // video playlist URL → its audio playlist URL
	renders  []string          // every media playlist URL, sorted
	media    map[string]*media
	problems []string
	count    int
	stats    Stats
	ranges   map[string]DateRange // EXT-X-DATERANGE by ID (daterange.go)
}

// Stats counts what was checked, so a test can tell it checked something.
type Stats struct {
	Reloads, BlockingReloads, Segments, Parts, Discontinuities int
	EmptyParts                                                 int // parts without a sample of their first track
	Unavailable                                                int // 503 answers to blocking requests
}

// media is what was seen of one media playlist.
type media struct {
	target     int
	partTarget time.Duration
	seq        int
	ds         int
	next       int // MSN of the segment being written
	nextParts  int // its parts
	seen       bool
	segs       map[int]*segment
	parts      map[string]bool // part file → checked
}

type segment struct {
	uri  string
	dur  time.Duration
	pdt  *time.Time
	disc bool
	bits float64 // served bit rate, 0 until fetched

	reported bool // its PDT was found off
}

// New returns a checker using client (http.DefaultClient when nil).
func New(client *http.Client) *Checker {
	if client == nil {
		client = http.DefaultClient
	}
	return &Checker{Client: client, Frame: time.Second / 30, bw: map[string]int{}, audioOf: map[string]string{}, media: map[string]*media{}}
}

func (c *Checker) problem(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count++
	if len(c.problems) < maxProblems {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

// Problems are the rule violations found, with a total when some were
// left out.
func (c *Checker) Problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := slices.Clone(c.problems)
	if c.count > len(p) {
		p = append(p, fmt.Sprintf("... %d problems in all", c.count))
	}
	return p
}

// Stats returns the counts so far.
func (c *Checker) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Checker) get(ctx context.Context, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	res, err := c.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

func resolve(base, ref string) string {
	b, err := url.Parse(base)
	if err != nil {
		return ref
	}
	r, err := url.Parse(ref)
	if err != nil {
		return ref
	}
	return b.ResolveReference(r).String()
}

// stripQuery drops the query: part and segment URIs carry the delivery
// directives of the request that listed them.
func stripQuery(u string) string {
	s, _, _ := strings.Cut(u, "?")
	return s
}

// Multivariant reads the multivariant playlist: its media playlists and
// their BANDWIDTH, which must never fall (players keep the first figure).
func (c *Checker) Multivariant(ctx context.Context, index string) error {
	code, b, err := c.get(ctx, index)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s: %d", index, code)
	}
	var mv playlist.Multivariant
	if err := mv.Unmarshal(b); err != nil {
		c.problem("multivariant playlist does not parse: %v", err)
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index = index
	audio := map[string]string{}
	var all []string
	for _, r := range mv.Renditions {
		if r.URI != nil && r.Type == playlist.MultivariantRenditionTypeAudio {
			u := resolve(index, *r.URI)
			audio[r.GroupID] = u
			all = append(all, u)
		}
	}
	for _, v := range mv.Variants {
		u := resolve(index, v.URI)
		all = append(all, u)
		if old, ok := c.bw[u]; ok && v.Bandwidth < old {
			c.mu.Unlock()
			c.problem("%s: BANDWIDTH fell from %d to %d", v.URI, old, v.Bandwidth)
			c.mu.Lock()
		}
		c.bw[u] = v.Bandwidth
		if a, ok := audio[v.Audio]; ok {
			c.audioOf[u] = a
		}
	}
	slices.Sort(all)
	c.renders = slices.Compact(all)
	return nil
}

// Bandwidth is the BANDWIDTH last read per variant's media playlist URL.
func (c *Checker) Bandwidth() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.bw)
}

// Renditions are the media playlist URLs of the last multivariant read.
func (c *Checker) Renditions() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.renders)
}

// Media reloads media playlist u, as a blocking request for the part after
// the last one seen when blocking is set, and checks it.
func (c *Checker) Media(ctx context.Context, u string, blocking bool) error {
	c.mu.Lock()
	m := c.media[u]
	if m == nil {
		m = &media{segs: map[int]*segment{}, parts: map[string]bool{}}
		c.media[u] = m
	}
	req := u
	if blocking && m.seen {
		req += fmt.Sprintf("?_HLS_msn=%d&_HLS_part=%d", m.next, m.nextParts)
	}
	c.mu.Unlock()
	code, b, err := c.get(ctx, req)
	if err != nil {
		return err
	}
	if code == http.StatusServiceUnavailable {
		// A blocking request the media did not answer in time (the
		// source stalled): players retry, and so does the checker.
		c.mu.Lock()
		c.stats.Unavailable++
		c.mu.Unlock()
		return nil
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s: %d %s", req, code, b)
	}
	var pl playlist.Media
	if err := pl.Unmarshal(b); err != nil {
		c.problem("%s: does not parse: %v", u, err)
		return nil
	}
	c.check(ctx, u, m, &pl, blocking && m.seen)
	c.checkDateRanges(u[strings.LastIndex(u[:max(0, strings.LastIndex(u, "/"))], "/")+1:], b)
	return nil
}

func (c *Checker) check(ctx context.Context, u string, m *media, pl *playlist.Media, blocking bool) {
	c.mu.Lock()
	c.stats.Reloads++
	if blocking {
		c.stats.BlockingReloads++
	}
	c.mu.Unlock()
	name := u[strings.LastIndex(u, "/")+1:]
	if i := strings.LastIndex(u[:max(0, strings.LastIndex(u, "/"))], "/"); i >= 0 {
		name = u[i+1:]
	}
	// Constant targets.
	if m.seen && pl.TargetDuration != m.target {
		c.problem("%s: EXT-X-TARGETDURATION changed from %d to %d", name, m.target, pl.TargetDuration)
	}
	var partTarget time.Duration
	if pl.PartInf != nil {
		partTarget = pl.PartInf.PartTarget
		if m.seen && partTarget != m.partTarget {
			c.problem("%s: PART-TARGET changed from %v to %v", name, m.partTarget, partTarget)
		}
	}
	// Monotonic numbering.
	next := pl.MediaSequence + len(pl.Segments)
	ds := 0
	if pl.DiscontinuitySequence != nil {
		ds = *pl.DiscontinuitySequence
	}
	if m.seen {
		switch {
		case pl.MediaSequence < m.seq:
			c.problem("%s: EXT-X-MEDIA-SEQUENCE went back from %d to %d", name, m.seq, pl.MediaSequence)
		case next < m.next || (next == m.next && len(pl.Parts) < m.nextParts):
			c.problem("%s: went back from segment %d part %d to segment %d part %d", name, m.next, m.nextParts, next, len(pl.Parts))
		}
		// Discontinuity sequence: the tags of the segments that left.
		want, known := m.ds, true
		for msn := m.seq; msn < pl.MediaSequence; msn++ {
			s, ok := m.segs[msn]
			if !ok {
				known = false
				break
			}
			if s.disc {
				want++
			}
		}
		if known && ds != want {
			c.problem("%s: EXT-X-DISCONTINUITY-SEQUENCE %d at segment %d, want %d", name, ds, pl.MediaSequence, want)
		}
	}
	m.seen, m.target, m.partTarget, m.seq, m.ds = true, pl.TargetDuration, partTarget, pl.MediaSequence, ds
	m.next, m.nextParts = next, len(pl.Parts)

	for i, s := range pl.Segments {
		msn := pl.MediaSequence + i
		if s.Gap {
			continue
		}
		if d := int(math.Round(s.Duration.Seconds())); d > pl.TargetDuration {
			c.problem("%s: segment %d lasts %v, over EXT-X-TARGETDURATION %d", name, msn, s.Duration, pl.TargetDuration)
		}
		for j, p := range s.Parts {
			c.checkPart(ctx, u, name, m, p, partTarget, fmt.Sprintf("%d.%d", msn, j))
		}
		old, ok := m.segs[msn]
		if !ok {
			old = &segment{uri: stripQuery(s.URI), dur: s.Duration, disc: s.Discontinuity}
			m.segs[msn] = old
			c.mu.Lock()
			c.stats.Segments++
			if s.Discontinuity {
				c.stats.Discontinuities++
			}
			c.mu.Unlock()
			delete(m.segs, msn-64)
		} else {
			if old.uri != stripQuery(s.URI) || old.dur != s.Duration || old.disc != s.Discontinuity {
				c.problem("%s: segment %d changed between reloads", name, msn)
			}
		}
		if s.DateTime != nil {
			if old.pdt != nil && !old.pdt.Equal(*s.DateTime) {
				c.problem("%s: PROGRAM-DATE-TIME of segment %d changed from %v to %v", name, msn, *old.pdt, *s.DateTime)
			}
			t := *s.DateTime
			old.pdt = &t
		}
		if old.bits == 0 && s.Duration > 0 {
			if code, b, err := c.get(ctx, resolve(u, s.URI)); err == nil && code == http.StatusOK {
				old.bits = float64(len(b)) * 8 / s.Duration.Seconds()
			}
		}
	}
	for j, p := range pl.Parts {
		c.checkPart(ctx, u, name, m, p, partTarget, fmt.Sprintf("%d.%d", next, j))
	}
	// PDT against EXTINF inside a discontinuity span.
	for msn, s := range m.segs {
		n, ok := m.segs[msn+1]
		if !ok || n.disc || s.pdt == nil || n.pdt == nil {
			continue
		}
		if d := n.pdt.Sub(*s.pdt) - s.dur; d > c.Frame || d < -c.Frame {
			if !n.reported {
				n.reported = true
				c.problem("%s: PROGRAM-DATE-TIME of segment %d is %v off its predecessor's plus EXTINF", name, msn+1, d)
			}
		}
	}
	c.checkReports(u, name, pl)
}

func (c *Checker) checkPart(ctx context.Context, u, name string, m *media, p *playlist.MediaPart, target time.Duration, id string) {
	if target > 0 && p.Duration > target+time.Millisecond {
		c.problem("%s: part %s lasts %v, over PART-TARGET %v", name, id, p.Duration, target)
	}
	file := stripQuery(p.URI)
	if m.parts[file] {
		return
	}
	code, b, err := c.get(ctx, resolve(u, p.URI))
	if err != nil || code != http.StatusOK {
		return // gone already
	}
	m.parts[file] = true
	if len(m.parts) > 1024 {
		clear(m.parts)
	}
	c.mu.Lock()
	c.stats.Parts++
	c.mu.Unlock()
	sync, known := PartStartsWithSync(b, 1)
	if !known {
		// No sample of the track (the audio's first parts, before the
		// AAC of the start arrived): nothing to be independent of.
		c.mu.Lock()
		c.stats.EmptyParts++
		c.mu.Unlock()
		return
	}
	if sync != p.Independent {
		c.problem("%s: part %s: INDEPENDENT=%v but its first sample is sync=%v", name, id, p.Independent, sync)
	}
}

// checkReports wants an EXT-X-RENDITION-REPORT for every other rendition.
func (c *Checker) checkReports(u, name string, pl *playlist.Media) {
	c.mu.Lock()
	all := slices.Clone(c.renders)
	c.mu.Unlock()
	if len(all) == 0 || pl.PartInf == nil {
		return
	}
	have := map[string]bool{}
	for _, r := range pl.RenditionReport {
		have[resolve(u, r.URI)] = true
	}
	for _, o := range all {
		if o != u && !have[o] {
			c.problem("%s: no EXT-X-RENDITION-REPORT for %s", name, o)
		}
	}
}

// CheckBandwidth wants every variant's BANDWIDTH at least the peak bit
// rate of its segments as served, video and audio of the same segment
// together.
func (c *Checker) CheckBandwidth() {
	c.mu.Lock()
	type want struct {
		uri       string
		bw        int
		bits, msn int
		v, a      int
	}
	var bad []want
	for u, bw := range c.bw {
		v := c.media[u]
		if v == nil {
			continue
		}
		a := c.media[c.audioOf[u]]
		for msn, s := range v.segs {
			var abits float64
			if a != nil {
				if as, ok := a.segs[msn]; ok {
					abits = as.bits
				}
			}
			if int(s.bits+abits) > bw {
				bad = append(bad, want{u, bw, int(s.bits + abits), msn, int(s.bits), int(abits)})
			}
		}
	}
	c.mu.Unlock()
	for _, b := range bad {
		c.problem("%s: segment %d served at %d bit/s (video %d, audio %d), over BANDWIDTH %d", b.uri, b.msn, b.bits, b.v, b.a, b.bw)
	}
}

// Poll checks the stream under index until ctx ends: the multivariant
// playlist every second and each media playlist in turn plainly and as a
// blocking request for its next part, one goroutine per playlist (each
// playlist's reloads in order, so they must never go back). It returns
// when every goroutine has, with the error that stopped one, if any.
func (c *Checker) Poll(ctx context.Context, index string) error {
	if err := c.Multivariant(ctx, index); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for _, u := range c.Renditions() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				for _, blocking := range []bool{false, true} {
					if err := c.Media(ctx, u, blocking); err != nil && ctx.Err() == nil {
						errs <- fmt.Errorf("%s: %w", u, err)
						return
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := c.Multivariant(ctx, index); err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
			}
		}
	}()
	wg.Wait()
	close(errs)
	var all []error
	for e := range errs {
		all = append(all, e)
	}
	c.CheckBandwidth()
	return errors.Join(all...)
}

// PartStartsWithSync tells whether the first sample of track ID in an fMP4
// part (moof+mdat) is a sync sample; known is false when the part does not
// parse or lacks the track.
func PartStartsWithSync(b []byte, track int) (independent, known bool) {
	var ps fmp4.Parts
	if err := ps.Unmarshal(b); err != nil {
		return false, false
	}
	for _, p := range ps {
		for _, t := range p.Tracks {
			if t.ID == track && len(t.Samples) > 0 {
				return !t.Samples[0].IsNonSyncSample, true
			}
		}
	}
	return false, false
}

// PDTJumps lists, for every discontinuity seen with the PROGRAM-DATE-TIME
// of the segments on both sides, how far the wall clock jumped past the
// media: PDT after minus (PDT before plus EXTINF before).
func (c *Checker) PDTJumps() map[string][]time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]time.Duration{}
	for u, m := range c.media {
		for msn, s := range m.segs {
			p, ok := m.segs[msn-1]
			if s.disc && ok && s.pdt != nil && p.pdt != nil {
				out[u] = append(out[u], s.pdt.Sub(*p.pdt)-p.dur)
			}
		}
	}
	return out
}

// String summarises the counts.
func (s Stats) String() string {
	return strconv.Itoa(s.Reloads) + " reloads (" + strconv.Itoa(s.BlockingReloads) + " blocking), " +
		strconv.Itoa(s.Segments) + " segments, " + strconv.Itoa(s.Parts) + " parts, " +
		strconv.Itoa(s.Discontinuities) + " discontinuities, " + strconv.Itoa(s.EmptyParts) + " empty parts, " + strconv.Itoa(s.Unavailable) + " 503s"
}
