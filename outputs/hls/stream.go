package hls

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gohlslib/v2"

	"github.com/prism-streaming/prism/pipeline"
)

// audioDir is the URL folder of the audio rendition. Rung names cannot start
// with '_' (ladder validation), so it never collides with a rung.
const audioDir = "_audio"

// File names gohlslib gives a muxer's playlists: with the tracks ordered
// [video, audio], its streams are "video1" and "audio2".
const (
	videoPlaylist = "video1_stream.m3u8"
	audioPlaylist = "audio2_stream.m3u8"
)

// stream serves one running job: one muxer per H.264 rung, the AAC track
// inside the muxer of one rung, and the multivariant playlist over them.
type stream struct {
	name string
	// epoch is in every URL below index.m3u8. A new job under the same
	// stream name gets new muxers whose media sequence numbers start over:
	// with a new epoch a player still polling the old playlist gets 404 and
	// reloads, instead of a playlist that goes backwards. A source that
	// names its timeline (TimelineSource) gets the same epoch on every
	// node, so that any node serves the same URLs.
	epoch string
	// shared: the source names its timeline, which other nodes serve
	// under the same numbers and URLs (timeline.go).
	shared bool
	job    pipeline.Source
	conf   Config
	log    *slog.Logger

	rungs []*rung         // in job order
	audio *pipeline.Track // the AAC track, nil when the job has none
	host  *rung           // the rung whose muxer also carries audio
	gate  *startGate      // makes all muxers start on the same IDR
	tm    atomic.Pointer[timing]

	latency  latencyWindow
	ingests  ingestLog                             // Ingest by video PTS, for gap repair
	discont  discontinuities                       // segments that start after a source change
	jumps    jumpLog                               // where each rung puts the IDR after a jump
	events   eventLog                              // timed events, for EXT-X-DATERANGE (daterange.go)
	testHook func(rung string, p *pipeline.Packet) // see Server.testHook

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run returned: muxers closed, goroutines gone
	// helpers are the goroutines that read back a muxer's first segment
	// (see feeder.track); they end when it exists or when its muxer closes.
	helpers sync.WaitGroup
}

// rung is one video rendition of a stream.
type rung struct {
	name  string
	track pipeline.Track
	prog  *progress
	muxer atomic.Pointer[gohlslib.Muxer] // set once by the feeder before prog is ready

	mu      sync.Mutex
	sps     []byte          // latest SPS seen, for CODECS, RESOLUTION, FRAME-RATE
	indep   map[string]bool // part file → starts with an IDR (independent.go)
	segBits []float64       // video bit rate of the latest segments as served, bit/s
	peak    float64         // highest video bit rate of a segment ever served
	// The same for the audio rendition, on the host rung.
	audioBits []float64
	audioPeak float64
}

func newStream(ctx context.Context, name string, job pipeline.Source, conf Config, log *slog.Logger) (*stream, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	epoch := timelineEpoch(name, job)
	shared := epoch != ""
	if !shared {
		epoch = hex.EncodeToString(b[:])
	}
	st := &stream{
		name:   name,
		epoch:  epoch,
		shared: shared,
		job:    job,
		conf:   conf,
		log:    log.With("stream", name),
		done:   make(chan struct{}),
	}
	for _, tr := range job.Tracks() {
		switch {
		case tr.Kind == pipeline.KindVideo && tr.Codec == pipeline.CodecH264:
			if !pipeline.ValidName(tr.Name) {
				return nil, fmt.Errorf("rung name %q cannot be a URL folder", tr.Name)
			}
			st.rungs = append(st.rungs, &rung{name: tr.Name, track: tr, prog: newProgress()})
		case tr.Kind == pipeline.KindAudio && tr.Codec == pipeline.CodecAAC && st.audio == nil:
			// Opus is left to WebRTC: HLS players (Safari above all) want AAC.
			a := tr
			st.audio = &a
		}
	}
	if len(st.rungs) == 0 {
		return nil, errors.New("no H.264 rung to serve")
	}
	if st.audio != nil {
		// The cheapest rung carries the audio: its encoder is the least
		// likely to fall behind, and audio rides on its segment cuts.
		st.host = slices.MinFunc(st.rungs, func(a, b *rung) int { return int(a.track.Bitrate - b.track.Bitrate) })
	}
	st.gate = newStartGate(len(st.rungs))
	st.ctx, st.cancel = context.WithCancel(ctx)
	return st, nil
}

// run feeds the muxers until the job ends or the stream is closed, then
// closes them. It is the owner of every goroutine of the stream.
func (st *stream) run() {
	defer close(st.done)
	defer st.cancel()
	// Subscribe every reader before any feeder reads, so that they all see
	// the IDR the start gate picks.
	feeders := make([]*feeder, len(st.rungs))
	for i, r := range st.rungs {
		ids := []int{r.track.ID}
		if r == st.host {
			ids = append(ids, st.audio.ID)
		}
		reader := st.job.Subscribe(
			pipeline.WithTracks(ids...),
			pipeline.WithBufferSize(st.conf.ReaderBuffer),
			pipeline.WithName("hls "+st.name+"/"+r.name),
			// A muxer that lost packets resumes at the next IDR; ask for one
			// now rather than wait up to a GOP (it lands on every rung alike).
			pipeline.WithKeyframeRequest(func(int) { st.job.RequestKeyframe(pipeline.KeyframeHLS) }),
		)
		feeders[i] = newFeeder(st, r, reader)
	}
	// Events are subscribed before the feeders run and seeded with those
	// already active, so that no event falls between the two.
	var events *pipeline.EventReader
	evSrc, hasEvents := st.job.(pipeline.EventSource)
	if hasEvents {
		events = evSrc.SubscribeEvents()
	}
	var wg sync.WaitGroup
	for _, f := range feeders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One rung ending ends the stream: a job's readers all close
			// together, and a stream missing a rung would never be ready.
			defer st.cancel()
			if err := f.run(st.ctx); err != nil && st.ctx.Err() == nil {
				st.log.Error("hls: rung stopped", "rung", f.r.name, "error", err)
			}
		}()
	}
	if hasEvents {
		// On this goroutine: it returns when a rung ends or the stream is
		// closed (both cancel st.ctx), and closes the reader.
		st.events.follow(st.ctx, evSrc, events)
	}
	wg.Wait()
	for _, f := range feeders {
		f.reader.Close()
		f.r.prog.end() // releases waiting requests first
		if m := f.r.muxer.Load(); m != nil {
			m.Close() // releases a read-back helper blocked inside gohlslib
		}
	}
	st.helpers.Wait()
}

func (st *stream) close() { st.cancel() }

// rung returns the rung served under the URL folder dir.
func (st *stream) rung(dir string) *rung {
	for _, r := range st.rungs {
		if r.name == dir {
			return r
		}
	}
	return nil
}

// timing returns the muxers' timing once the start gate has opened.
func (st *stream) timing() (timing, bool) {
	if t := st.tm.Load(); t != nil {
		return *t, true
	}
	return timing{}, false
}

// slack is how many segments more than LL-HLS allows a blocking request
// may run ahead of this node: one for a stream on a timeline shared with
// other nodes (tooFarAhead), none otherwise.
func (st *stream) slack() int {
	if st.shared {
		return 1
	}
	return 0
}

// blockLimit is how long a blocking request may wait: three target
// durations, after which the LL-HLS spec has the server answer 503.
func (st *stream) blockLimit() time.Duration {
	t, ok := st.timing()
	if !ok {
		return 3 * time.Second
	}
	return 3 * t.segmentTarget()
}

// setBits records the bit rates of a complete segment as served, video
// and audio (0 when the rung carries none).
func (r *rung) setBits(video, audio float64, keep int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	add := func(window *[]float64, peak *float64, bits float64) {
		if math.IsNaN(bits) || math.IsInf(bits, 0) || bits <= 0 {
			return
		}
		*window = append(*window, bits)
		if len(*window) > keep {
			*window = (*window)[len(*window)-keep:]
		}
		*peak = max(*peak, bits)
	}
	add(&r.segBits, &r.peak, video)
	add(&r.audioBits, &r.audioPeak, audio)
}
