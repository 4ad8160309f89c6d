// Package api is a node's HTTP API and player pages: health and readiness,
// the streams this node serves (from the registry, wherever they are
// transcoded), the cluster's jobs and nodes, Prometheus metrics, and the
// player page with hls.js embedded at build time.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/prism-streaming/prism/config"
	"github.com/prism-streaming/prism/internal/auth"
	"github.com/prism-streaming/prism/internal/inputs"
	"github.com/prism-streaming/prism/internal/node"
	"github.com/prism-streaming/prism/outputs/webrtc"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/queue/relay"
)

// Server answers a node's HTTP API. Fill the fields and mount Handler;
// it has no goroutines of its own.
type Server struct {
	Node       *node.Node
	Streams    *pipeline.Registry
	Configured []config.Stream // streams from the configuration, for /readyz
	// Auth decides who may call the API, scrape /metrics and play signed
	// streams (guard.go); nil means nothing is configured.
	Auth *auth.Authorizer
	// Inputs is what jobs submitted here may read; nil allows anything
	// (tests of trusted callers only).
	Inputs *inputs.Policy
	// HLSLatency reports ingest-to-part-downloadable for a stream, when
	// the HLS output serves it.
	HLSLatency func(stream string) (p50, p95 time.Duration, ok bool)
	// WebRTCLatency reports ingest to a frame handed to a WebRTC viewer.
	WebRTCLatency func(stream string) (p50, p95 time.Duration, ok bool)
	// Ingest is the node's push ingest (nil: none): its publishers show in
	// /api/v1/streams and its metrics on /metrics.
	Ingest *node.Ingest
	// WebRTC is the node's WebRTC output (nil: none): its viewers show in
	// /api/v1/streams/<name> and on /metrics.
	WebRTC *webrtc.Server
}

// StreamInfo is a stream as /api/v1/streams shows it.
type StreamInfo struct {
	Name   string               `json:"name"`
	State  string               `json:"state"`
	Tracks []pipeline.Track     `json:"tracks"`
	Stats  pipeline.SourceStats `json:"stats"`
	// Restarts counts publisher changes the stream survived here: input
	// restarts and failovers to other nodes.
	Restarts int       `json:"restarts"`
	Job      *jobs.Job `json:"job,omitempty"`
	// Publisher is the stream's publisher, when it is pushed to this node.
	Publisher *node.PublisherInfo `json:"publisher,omitempty"`
	// WebRTC: the stream's WebRTC viewers on this node (estimate, rung,
	// loss, RTT, switches by reason, freezes, keyframe requests).
	WebRTC *webrtc.StreamView `json:"webrtc,omitempty"`
}

// describe is what this node knows of stream name; ok is false when it
// knows nothing (no job, not registered here). A stream that runs but is
// not followed here (node.follow: on_demand) gets its tracks and stats from
// its publisher (relay.Describe, bounded by relay.DescribeTimeout and by
// live): describing never makes the node follow it.
func (s *Server) describe(ctx, live context.Context, name string) (info StreamInfo, ok bool) {
	info = StreamInfo{Name: name, Tracks: []pipeline.Track{}}
	job, err := s.Node.Store().Get(ctx, name)
	if err == nil {
		info.Job, info.State = redacted(job), string(job.State)
	}
	if s.Ingest != nil {
		if p, ok := s.Ingest.Publisher(name); ok {
			info.Publisher = &p
		}
	}
	if s.WebRTC != nil {
		if v, ok := s.WebRTC.Stream(name); ok {
			info.WebRTC = &v
		}
	}
	if src, ok := s.Streams.Get(name); ok {
		info.Tracks, info.Stats = src.Tracks(), src.Stats()
		if f, ok := src.(*relay.Stream); ok {
			info.Restarts = f.Changes()
		}
		if info.State == "" {
			info.State = "running"
		}
	} else if s.Streams.Offered(name) {
		ri, stats, derr := relay.Describe(live, s.Node.Store().Conn(), name)
		switch {
		case derr == nil:
			info.Tracks, info.Stats = ri.Tracks, stats
			if info.State == "" {
				info.State = "running"
			}
		case err != nil:
			return info, false
		default:
			// Starting, moving or just ended: the job says which.
			slog.Debug("describing a stream not followed here", "stream", name, "error", derr)
		}
	} else if err != nil {
		return info, false
	}
	return info, true
}

// Bounds of /api/v1/streams, which describes every stream: streams that
// are not followed here each cost a question to their publisher, asked
// describeParallel at a time and all within listLiveTimeout (past it, a
// stream is listed without tracks and stats).
const (
	describeParallel = 16
	listLiveTimeout  = 2 * relay.DescribeTimeout
)

// describeAll describes names concurrently, in their order, leaving out
// those describe knows nothing of.
func (s *Server) describeAll(ctx context.Context, names []string) []StreamInfo {
	live, cancel := context.WithTimeout(ctx, listLiveTimeout)
	defer cancel()
	infos := make([]StreamInfo, len(names))
	found := make([]bool, len(names))
	sem := make(chan struct{}, describeParallel)
	var wg sync.WaitGroup
	for i, n := range names {
		sem <- struct{}{}
		wg.Go(func() { // owned here: waited for below
			defer func() { <-sem }()
			infos[i], found[i] = s.describe(ctx, live, n)
		})
	}
	wg.Wait()
	out := make([]StreamInfo, 0, len(names))
	for i, info := range infos {
		if found[i] {
			out = append(out, info)
		}
	}
	return out
}

// Handler returns the API's routes: /healthz, /readyz, /metrics,
// /api/v1/..., the player page at / and /hls.js. Outputs mount their own
// paths (/hls/, /whep/) on it.
func (s *Server) Handler() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.ready)
	mux.HandleFunc("GET /api/v1/streams", s.guarded(func(w http.ResponseWriter, r *http.Request, p auth.Principal) {
		// Running streams whether or not this node follows them now
		// (node.follow: on_demand); describe fills in what it knows.
		var names []string
		for _, n := range s.Streams.Available() {
			if p.Permits(auth.ActionAPIRead, n) == nil {
				names = append(names, n)
			}
		}
		writeJSON(w, http.StatusOK, s.describeAll(r.Context(), names))
	}))
	mux.HandleFunc("GET /api/v1/streams/{name}", s.guarded(func(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
		info, ok := s.describe(r.Context(), r.Context(), r.PathValue("name"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown stream " + r.PathValue("name")})
			return
		}
		writeJSON(w, http.StatusOK, info)
	}))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newStreamCollector(s.Streams, s.HLSLatency, s.WebRTCLatency), newAuthCollector(s.Auth), s.Node.RelayCollector())
	if s.WebRTC != nil {
		reg.MustRegister(newWebRTCCollector(s.WebRTC))
	}
	if s.Ingest != nil {
		reg.MustRegister(s.Ingest.Collectors()...)
	}
	mux.Handle("GET /metrics", s.metricsGuard(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	s.jobRoutes(mux)
	s.eventRoutes(mux)
	webRoutes(mux)
	return mux
}

// ready: the job store answers and every configured stream plays. It
// reads the node's KV-watched view of the jobs rather than the store: a
// probe, however often load balancers send it, costs no JetStream request.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	// The view outlives a lost connection (it is kept for the reconnect),
	// so the connection itself says whether the store can be reached.
	if nc := s.Node.Store().Conn(); !nc.IsConnected() {
		http.Error(w, "job store unreachable: NATS connection "+nc.Status().String(), http.StatusServiceUnavailable)
		return
	}
	known, ok := s.Node.KnownJobs()
	if !ok {
		http.Error(w, "job store unreachable: the job view is not loaded yet", http.StatusServiceUnavailable)
		return
	}
	byID := make(map[string]*jobs.Job, len(known))
	for _, j := range known {
		byID[j.Spec.ID] = j
	}
	for _, sc := range s.Configured {
		// Offered is enough: a stream that runs plays here, followed on
		// the first request if it is not followed yet (node.follow).
		if !s.Streams.Offered(sc.Name) {
			reason := "not running yet"
			if j := byID[sc.Name]; j != nil {
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
