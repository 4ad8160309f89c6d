// Package hls serves every running ladder as one multivariant Low-Latency
// HLS stream at /hls/<stream>/index.m3u8: one gohlslib muxer per H.264 rung,
// the AAC track as an audio rendition, a multivariant playlist written here,
// and the HTTP rules gohlslib leaves to its user (404s, CORS, caching,
// cancellation of blocking requests, limits).
package hls

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prism-streaming/prism/pipeline"
)

// Server serves the streams of a registry over LL-HLS. Set the exported
// fields, call Start, mount it at "/hls/", and Close it at the end.
type Server struct {
	Streams *pipeline.Registry
	Config  Config
	Log     *slog.Logger

	ctx       context.Context
	ctxCancel context.CancelFunc
	unwatch   func()
	blocking  chan struct{} // one token per request waiting for media
	abandoned atomic.Int64  // waits ended because the client went away
	joins     joinLog       // which clients play which playlist (join.go)

	clientsMu       sync.Mutex
	blockingClients map[string]int // requests waiting for media, by clientKey

	// testHook, when set by a test, is called by every feeder before it
	// handles a packet (to simulate a muxer that falls behind).
	testHook func(rung string, p *pipeline.Packet)

	mu      sync.Mutex
	closed  bool
	streams map[string]*stream
	wg      sync.WaitGroup // one per stream.run
}

// Start validates the configuration (after filling defaults) and starts
// serving the streams of the registry, present and future.
func (s *Server) Start() error {
	if s.Streams == nil {
		return errors.New("hls: Streams is nil")
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	s.Config.Defaults()
	if err := s.Config.Validate(); err != nil {
		return err
	}
	s.ctx, s.ctxCancel = context.WithCancel(context.Background())
	s.blocking = make(chan struct{}, s.Config.MaxBlockingRequests)
	s.blockingClients = map[string]int{}
	s.streams = map[string]*stream{}
	s.unwatch = s.Streams.Watch(s.onStream)
	return nil
}

// Close stops serving: muxers are closed, waiting requests are answered and
// every goroutine of the server has returned.
func (s *Server) Close() {
	if s.unwatch == nil {
		return // never initialized
	}
	s.unwatch()
	s.mu.Lock()
	s.closed = true
	for _, st := range s.streams {
		st.close()
	}
	s.streams = map[string]*stream{}
	s.mu.Unlock()
	s.ctxCancel()
	s.wg.Wait()
}

// onStream runs on the goroutine that changed the registry: it only starts
// or cancels, never waits.
func (s *Server) onStream(ev pipeline.StreamEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if old := s.streams[ev.Name]; old != nil {
		old.close()
		delete(s.streams, ev.Name)
	}
	if ev.Removed || !ev.Serves(pipeline.OutputHLS) {
		return
	}
	st, err := newStream(s.ctx, ev.Name, ev.Source, s.Config, s.Log)
	if err == nil {
		st.testHook = s.testHook
	}
	if err != nil {
		s.Log.Warn("hls: stream not served", "stream", ev.Name, "error", err)
		return
	}
	s.streams[ev.Name] = st
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		st.run()
	}()
}

func (s *Server) stream(name string) *stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[name]
}

// Latency returns the median and 95th percentile, over the last frames of
// every rung, of the time from a frame's Ingest to the moment the part that
// holds it could be downloaded. ok is false for an unknown stream or before
// the first part.
func (s *Server) Latency(stream string) (p50, p95 time.Duration, ok bool) {
	st := s.stream(stream)
	if st == nil {
		return 0, 0, false
	}
	return st.latency.percentiles()
}
