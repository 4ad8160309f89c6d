// Package fake has test doubles that need the pipeline types (testutil
// itself must not import pipeline: pipeline's own tests use testutil).
package fake

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// Source is a pipeline.Source whose packets the test publishes itself:
// no FFmpeg, every edge case on purpose. It has a 320x180 H.264 rung and
// an AAC track unless NewSource is given tracks.
type Source struct {
	fanout    pipeline.Fanout
	tracks    []pipeline.Track
	keyframes atomic.Int32
	mu        sync.Mutex
	reasons   []string
	done      chan struct{}
	once      sync.Once
	// MediaTime is what Stats reports.
	MediaTime time.Duration
}

var _ pipeline.Source = (*Source)(nil)

// NewSource returns a source with the given tracks (IDs are their
// indexes), or the default two.
func NewSource(tracks ...pipeline.Track) *Source {
	if len(tracks) == 0 {
		tracks = []pipeline.Track{
			{Name: "180p", Kind: pipeline.KindVideo, Codec: pipeline.CodecH264, ClockRate: pipeline.VideoClockRate, Width: 320, Height: 180, FPS: 30, Encoder: "libx264", Bitrate: 200_000},
			{Name: "aac", Kind: pipeline.KindAudio, Codec: pipeline.CodecAAC, ClockRate: 48000, SampleRate: 48000, Channels: 2, Extradata: []byte{0x11, 0x90}, Bitrate: 64_000},
		}
	}
	for i := range tracks {
		tracks[i].ID = i
	}
	return &Source{tracks: tracks, done: make(chan struct{}), MediaTime: 42 * time.Second}
}

// Publish hands p to every reader.
func (s *Source) Publish(p *pipeline.Packet) { s.fanout.Publish(p, s.tracks[p.Track].Kind) }

// Readers is how many readers are subscribed.
func (s *Source) Readers() int { return s.fanout.Readers() }

// Keyframes counts RequestKeyframe calls.
func (s *Source) Keyframes() int { return int(s.keyframes.Load()) }

// Tracks implements pipeline.Source.
func (s *Source) Tracks() []pipeline.Track { return s.tracks }

// Subscribe implements pipeline.Source.
func (s *Source) Subscribe(o ...pipeline.ReaderOption) *pipeline.Reader {
	return s.fanout.Subscribe(o...)
}

// KeyframeReasons lists the reasons of the RequestKeyframe calls, oldest first.
func (s *Source) KeyframeReasons() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reasons)
}

// RequestKeyframe implements pipeline.Source.
func (s *Source) RequestKeyframe(reason string) {
	s.mu.Lock()
	s.reasons = append(s.reasons, reason)
	s.mu.Unlock()
	s.keyframes.Add(1)
}

// Stats implements pipeline.Source.
func (s *Source) Stats() pipeline.SourceStats {
	return pipeline.SourceStats{MediaTime: s.MediaTime}
}

// Done implements pipeline.Source.
func (s *Source) Done() <-chan struct{} { return s.done }

// Err implements pipeline.Source: a fake source ends cleanly.
func (s *Source) Err() error { return nil }

// Close implements pipeline.Source: readers see the end.
func (s *Source) Close() error {
	s.once.Do(func() {
		s.fanout.Close()
		close(s.done)
	})
	return nil
}
