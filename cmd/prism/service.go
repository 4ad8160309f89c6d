package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prism-streaming/prism/config"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// service runs the configured streams and answers the HTTP API. Each stream
// has a supervisor goroutine, owned by the service, that restarts its job
// when the input fails or ends, as a live source may, and stops with ctx.
type service struct {
	log     *slog.Logger
	streams *pipeline.Registry
	stdout  io.Writer

	mu     sync.Mutex
	states map[string]*streamState
	wg     sync.WaitGroup
}

type streamState struct {
	restarts int
	lastErr  error
}

// Restart pacing for a stream whose job ended: quick at first, then slower.
const (
	restartMin = 1 * time.Second
	restartMax = 30 * time.Second
)

// startStream starts a stream's first job synchronously, so a bad ladder or
// input fails `prism serve` at start-up with its reason, then supervises it.
func (s *service) startStream(ctx context.Context, sc config.Stream) error {
	l, err := loadLadder(sc.Ladder)
	if err != nil {
		return err
	}
	opts := transcode.Options{Input: sc.Input, Ladder: l, Realtime: *sc.Realtime,
		Logger: s.log.With("stream", sc.Name)}
	job, err := transcode.Start(ctx, opts)
	if err != nil {
		return err
	}
	if err := s.streams.Add(sc.Name, job); err != nil {
		job.Close()
		return err
	}
	s.mu.Lock()
	if s.states == nil {
		s.states = map[string]*streamState{}
	}
	st := &streamState{}
	s.states[sc.Name] = st
	s.mu.Unlock()
	s.printTracks(sc.Name, l.Name, job)

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		backoff := restartMin
		for {
			select {
			case <-ctx.Done():
				s.streams.Remove(sc.Name)
				job.Close()
				return
			case <-job.Done():
			}
			s.streams.Remove(sc.Name)
			err := job.Err()
			s.mu.Lock()
			st.lastErr = err
			st.restarts++
			s.mu.Unlock()
			s.log.Warn("stream ended, restarting", "stream", sc.Name, "error", err, "in", backoff)
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, restartMax)
				next, err := transcode.Start(ctx, opts)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					s.mu.Lock()
					st.lastErr = err
					s.mu.Unlock()
					s.log.Warn("stream restart failed", "stream", sc.Name, "error", err, "retry in", backoff)
					continue
				}
				job = next
				backoff = restartMin
				if err := s.streams.Add(sc.Name, job); err != nil {
					job.Close()
					return
				}
				break
			}
		}
	}()
	return nil
}

func (s *service) wait() { s.wg.Wait() }

func (s *service) printTracks(name, ladderName string, job *transcode.Transcoder) {
	fmt.Fprintf(s.stdout, "prism: stream %q running ladder %q:\n", name, ladderName)
	for _, tr := range job.Tracks() {
		if tr.Kind == pipeline.KindVideo {
			fmt.Fprintf(s.stdout, "  %-6s %dx%d@%g %s %s %d kbit/s\n", tr.Name, tr.Width, tr.Height, tr.FPS, tr.Codec, tr.Encoder, tr.Bitrate/1000)
		} else {
			fmt.Fprintf(s.stdout, "  %-6s %s %s %d Hz %d ch %d kbit/s\n", tr.Name, tr.Codec, tr.Encoder, tr.SampleRate, tr.Channels, tr.Bitrate/1000)
		}
	}
	for _, sk := range job.Skipped() {
		fmt.Fprintf(s.stdout, "  %-6s skipped: %s\n", sk.Name, sk.Reason)
	}
}

func (s *service) printStats(w io.Writer) {
	for _, n := range s.streams.Names() {
		j, ok := s.streams.Get(n)
		if !ok {
			continue
		}
		st := j.Stats()
		var parts []string
		for _, ts := range st.Tracks {
			parts = append(parts, fmt.Sprintf("%s %.1f fps %.0f kbit/s", ts.Track, ts.FPS, ts.Bitrate/1000))
		}
		fmt.Fprintf(w, "%s %s media %.1fs speed %.2fx dropped %d | %s\n", time.Now().Format("15:04:05"), n,
			st.MediaTime.Seconds(), st.Speed, st.Dropped, strings.Join(parts, " | "))
	}
}

type streamInfo struct {
	Name     string            `json:"name"`
	State    string            `json:"state"`
	Restarts int               `json:"restarts"`
	Error    string            `json:"error,omitempty"`
	Tracks   []pipeline.Track  `json:"tracks"`
	Stats    pipeline.JobStats `json:"stats"`
}

func (s *service) describe(name string) (streamInfo, bool) {
	info := streamInfo{Name: name, State: "restarting", Tracks: []pipeline.Track{}}
	s.mu.Lock()
	st, known := s.states[name]
	if known {
		info.Restarts = st.restarts
		if st.lastErr != nil {
			info.Error = st.lastErr.Error()
		}
	}
	s.mu.Unlock()
	j, running := s.streams.Get(name)
	if !known && !running {
		return info, false
	}
	if running {
		info.State = "running"
		info.Tracks, info.Stats = j.Tracks(), j.Stats()
	}
	return info, true
}

func (s *service) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.states))
	for n := range s.states {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (s *service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		// Ready when every configured stream has a running job.
		for _, n := range s.names() {
			if _, ok := s.streams.Get(n); !ok {
				info, _ := s.describe(n)
				http.Error(w, fmt.Sprintf("stream %s is not running: %s", n, info.Error), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /api/v1/streams", func(w http.ResponseWriter, r *http.Request) {
		out := []streamInfo{}
		for _, n := range s.names() {
			if info, ok := s.describe(n); ok {
				out = append(out, info)
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /api/v1/streams/{name}", func(w http.ResponseWriter, r *http.Request) {
		info, ok := s.describe(r.PathValue("name"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown stream " + r.PathValue("name")})
			return
		}
		writeJSON(w, http.StatusOK, info)
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newJobCollector(s.streams))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "Prism: live transcoding. Streams: /api/v1/streams")
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil && !errors.Is(err, http.ErrHandlerTimeout) {
		slog.Debug("writing response", "error", err)
	}
}
