package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prism-streaming/prism/config"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// service answers the HTTP API of a node: its streams (from the registry,
// wherever they are transcoded) and the cluster's jobs and nodes.
type service struct {
	log        *slog.Logger
	streams    *pipeline.Registry
	cluster    *cluster
	stdout     io.Writer
	configured []config.Stream
	hlsLatency func(stream string) (p50, p95 time.Duration, ok bool)
}

// announce prints the tracks of streams that appeared since the last call.
func (s *service) announce(seen map[string]pipeline.Job) {
	for _, n := range s.streams.Names() {
		j, ok := s.streams.Get(n)
		if !ok || seen[n] == j {
			continue
		}
		seen[n] = j
		fmt.Fprintf(s.stdout, "prism: stream %q is running:\n", n)
		for _, tr := range j.Tracks() {
			if tr.Kind == pipeline.KindVideo {
				fmt.Fprintf(s.stdout, "  %-6s %dx%d@%g %s %s %d kbit/s\n", tr.Name, tr.Width, tr.Height, tr.FPS, tr.Codec, tr.Encoder, tr.Bitrate/1000)
			} else {
				fmt.Fprintf(s.stdout, "  %-6s %s %s %d Hz %d ch %d kbit/s\n", tr.Name, tr.Codec, tr.Encoder, tr.SampleRate, tr.Channels, tr.Bitrate/1000)
			}
		}
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
	Name   string            `json:"name"`
	State  string            `json:"state"`
	Tracks []pipeline.Track  `json:"tracks"`
	Stats  pipeline.JobStats `json:"stats"`
	// Restarts counts publisher changes the stream survived here: input
	// restarts and failovers to other nodes.
	Restarts int        `json:"restarts"`
	Job      *queue.Job `json:"job,omitempty"`
}

func (s *service) describe(ctx context.Context, name string) (streamInfo, bool) {
	info := streamInfo{Name: name, Tracks: []pipeline.Track{}}
	job, err := s.cluster.store.Get(ctx, name)
	if err == nil {
		info.Job, info.State = job, string(job.State)
	}
	if j, ok := s.streams.Get(name); ok {
		info.Tracks, info.Stats = j.Tracks(), j.Stats()
		if f, ok := j.(*queue.FollowedJob); ok {
			info.Restarts = f.Changes()
		}
		if info.State == "" {
			info.State = "running"
		}
	} else if err != nil {
		return info, false
	}
	return info, true
}

func (s *service) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		// Ready when the job store answers and every configured stream plays.
		if _, err := s.cluster.store.List(r.Context()); err != nil {
			http.Error(w, "job store unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		for _, sc := range s.configured {
			if _, ok := s.streams.Get(sc.Name); !ok {
				reason := "not running yet"
				if j, err := s.cluster.store.Get(r.Context(), sc.Name); err == nil {
					reason = string(j.State)
					if j.Reason != "" {
						reason += ": " + j.Reason
					}
				}
				http.Error(w, fmt.Sprintf("stream %s: %s", sc.Name, reason), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /api/v1/streams", func(w http.ResponseWriter, r *http.Request) {
		out := []streamInfo{}
		for _, n := range s.streams.Names() {
			if info, ok := s.describe(r.Context(), n); ok {
				out = append(out, info)
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /api/v1/streams/{name}", func(w http.ResponseWriter, r *http.Request) {
		info, ok := s.describe(r.Context(), r.PathValue("name"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown stream " + r.PathValue("name")})
			return
		}
		writeJSON(w, http.StatusOK, info)
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newJobCollector(s.streams, s.hlsLatency))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.jobRoutes(mux)
	s.webRoutes(mux)
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
