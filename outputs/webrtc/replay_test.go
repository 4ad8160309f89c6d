package webrtc

import (
	"context"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil/fake"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// clip is a few whole GOPs of a real ladder's output (smallLadder over
// smallSource), encoded once per test binary, that a replay source loops at
// real time. It lets the delivery benchmarks measure the WebRTC output with
// real H.264 and Opus packets but without an encoder in the same process.
type clip struct {
	tracks  []pipeline.Track
	packets []pipeline.Packet // in media-time order; times relative to the clip start
	at      []time.Duration   // media time of each packet
	length  time.Duration     // loop length: whole GOPs, so the loop starts on an IDR of every rung
}

var (
	clipOnce sync.Once
	theClip  *clip
	clipErr  error
)

// recordClip encodes the clip (faster than real time) the first time it is
// called.
func recordClip(tb testing.TB) *clip {
	tb.Helper()
	clipOnce.Do(func() { theClip, clipErr = encodeClip(6 * time.Second) })
	if clipErr != nil {
		tb.Fatal(clipErr)
	}
	return theClip
}

func encodeClip(d time.Duration) (*clip, error) {
	l, err := ladder.Parse("test.yaml", []byte(smallLadder))
	if err != nil {
		return nil, err
	}
	job, err := transcode.Start(context.Background(), transcode.Options{Input: smallSource, Ladder: l,
		Duration: d, Logger: testLogger()})
	if err != nil {
		return nil, err
	}
	defer job.Close()
	r := job.Subscribe(pipeline.Lossless(), pipeline.WithBufferSize(1<<14), pipeline.WithName("clip"))
	var all []pipeline.Packet
	for {
		p, err := r.Read(context.Background())
		if err != nil {
			if !errors.Is(err, pipeline.ErrClosed) {
				return nil, err
			}
			break
		}
		all = append(all, *p)
	}
	if err := job.Err(); err != nil {
		return nil, err
	}
	return cutClip(job.Tracks(), all)
}

// cutClip keeps the packets from the first to the last PTS at which every
// rung has a keyframe (the reader may have missed the very first packets).
func cutClip(tracks []pipeline.Track, all []pipeline.Packet) (*clip, error) {
	keys := map[int64]int{} // PTS -> rungs with a keyframe there
	nVideo := 0
	for _, tr := range tracks {
		if tr.Kind == pipeline.KindVideo {
			nVideo++
		}
	}
	for _, p := range all {
		if tracks[p.Track].Kind == pipeline.KindVideo && p.Keyframe {
			keys[p.PTS]++
		}
	}
	var common []int64
	for pts, n := range keys {
		if n == nVideo {
			common = append(common, pts)
		}
	}
	sort.Slice(common, func(i, j int) bool { return common[i] < common[j] })
	if len(common) < 2 {
		return nil, errors.New("clip: fewer than two keyframes shared by every rung")
	}
	start, end := common[0], common[len(common)-1]
	toDur := func(pts int64, rate int) time.Duration {
		return time.Duration(pts * int64(time.Second) / int64(rate))
	}
	c := &clip{tracks: tracks, length: toDur(end-start, pipeline.VideoClockRate)}
	startT := toDur(start, pipeline.VideoClockRate)
	for _, p := range all {
		rate := tracks[p.Track].ClockRate
		at := toDur(p.PTS, rate) - startT
		if at < 0 || at >= c.length {
			continue
		}
		shift := startT.Nanoseconds() * int64(rate) / int64(time.Second)
		p.PTS -= shift
		p.DTS -= shift
		c.packets = append(c.packets, p)
		c.at = append(c.at, at)
	}
	idx := make([]int, len(c.packets))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool { return c.at[idx[i]] < c.at[idx[j]] })
	pk, at := make([]pipeline.Packet, len(idx)), make([]time.Duration, len(idx))
	for i, j := range idx {
		pk[i], at[i] = c.packets[j], c.at[j]
	}
	c.packets, c.at = pk, at
	return c, nil
}

// replay publishes the clip in a loop at real time, each pass shifted by the
// clip's length so timestamps keep rising, until the test ends. Keyframe
// requests are counted and ignored: the clip has an IDR every GOP.
func (c *clip) replay(tb testing.TB) *fake.Source {
	tb.Helper()
	src := fake.NewSource(append([]pipeline.Track(nil), c.tracks...)...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	tb.Cleanup(func() { cancel(); <-done; _ = src.Close() })
	go func() {
		defer close(done)
		t0 := time.Now()
		timer := time.NewTimer(0)
		defer timer.Stop()
		for pass := int64(0); ; pass++ {
			off := time.Duration(pass) * c.length
			for i := range c.packets {
				if wait := time.Until(t0.Add(off + c.at[i])); wait > 0 {
					timer.Reset(wait)
					select {
					case <-ctx.Done():
						return
					case <-timer.C:
					}
				} else if ctx.Err() != nil {
					return
				}
				p := c.packets[i]
				shift := off.Nanoseconds() * int64(c.tracks[p.Track].ClockRate) / int64(time.Second)
				p.PTS += shift
				p.DTS += shift
				p.Ingest = time.Now()
				src.Publish(&p)
			}
		}
	}()
	return src
}
