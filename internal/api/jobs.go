package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/prism-streaming/prism/internal/auth"
	"github.com/prism-streaming/prism/internal/redact"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// maxSpecBody bounds a job submission: specs are small, inline ladders too.
const maxSpecBody = 256 << 10

// JobInfo is a job as the API shows it, with its worker process when the
// job runs on the node answering.
type JobInfo struct {
	*jobs.Job
	WorkerPID int `json:"worker_pid,omitempty"`
}

func (s *Server) jobInfo(j *jobs.Job) JobInfo {
	info := JobInfo{Job: redacted(j)}
	if j.Owner == s.Node.ID() {
		info.WorkerPID = s.Node.WorkerPID(j.Spec.ID)
	}
	return info
}

// jobRoutes: /api/v1/jobs (GET list, POST submit), /api/v1/jobs/{id}
// (GET, DELETE = stop), /api/v1/jobs/{id}/stop (POST), /api/v1/nodes.
func (s *Server) jobRoutes(mux *http.ServeMux) {
	store := s.Node.Store()
	mux.HandleFunc("GET /api/v1/jobs", s.guarded(func(w http.ResponseWriter, r *http.Request, p auth.Principal) {
		list, err := store.List(r.Context())
		if err != nil {
			apiError(w, err)
			return
		}
		out := make([]JobInfo, 0, len(list))
		for _, j := range list {
			if p.Permits(auth.ActionAPIRead, j.Spec.ID) == nil {
				out = append(out, s.jobInfo(j))
			}
		}
		writeJSON(w, http.StatusOK, out)
	}))
	mux.HandleFunc("POST /api/v1/jobs", s.guardedSubmit(func(w http.ResponseWriter, r *http.Request, p auth.Principal) {
		var spec jobs.Spec
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSpecBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("job spec larger than %d bytes", maxSpecBody)})
				return
			}
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "job spec: " + err.Error()})
			return
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "job spec: one JSON object, with nothing after it"})
			return
		}
		if err := p.Permits(auth.ActionAPIWrite, spec.ID); err != nil {
			refuse(w, http.StatusForbidden, err.Error())
			return
		}
		if err := s.checkSources(r, &spec); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("job %s: %v", spec.ID, err)})
			return
		}
		if spec.Signed() && !s.Auth.Enabled() {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "play: signed needs auth.tokens or auth.jwt on the node to verify tokens"})
			return
		}
		var opts []jobs.SubmitOption
		if r.URL.Query().Get("replace") == "true" {
			opts = append(opts, jobs.Replace()) // give an ended job's id new work
		}
		j, err := store.Submit(r.Context(), spec, opts...)
		if err != nil {
			apiError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, s.jobInfo(j))
	}))
	mux.HandleFunc("GET /api/v1/jobs/{id}", s.guarded(func(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
		j, err := store.Get(r.Context(), r.PathValue("id"))
		if err != nil {
			apiError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s.jobInfo(j))
	}))
	stop := s.guarded(func(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
		j, err := store.Stop(r.Context(), r.PathValue("id"))
		if err != nil {
			apiError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s.jobInfo(j))
	})
	mux.HandleFunc("DELETE /api/v1/jobs/{id}", stop)
	mux.HandleFunc("POST /api/v1/jobs/{id}/stop", stop)
	mux.HandleFunc("GET /api/v1/nodes", s.guarded(func(w http.ResponseWriter, r *http.Request, _ auth.Principal) {
		nodes, err := store.Nodes(r.Context())
		if err != nil {
			apiError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, nodes)
	}))
}

// apiError maps job store errors to HTTP status codes.
func apiError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, jobs.ErrInvalidSpec):
		code = http.StatusBadRequest
	case errors.Is(err, jobs.ErrJobNotFound):
		code = http.StatusNotFound
	case errors.Is(err, jobs.ErrJobExists), errors.Is(err, jobs.ErrJobActive), errors.Is(err, jobs.ErrConflict),
		errors.Is(err, jobs.ErrCorruptJob):
		code = http.StatusConflict
	case errors.Is(err, jobs.ErrTooManyJobs):
		code = http.StatusTooManyRequests
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// checkSources applies the input policy to what a submitted job would read
// and where it would post: its input, its ladder, its WHIP targets.
func (s *Server) checkSources(r *http.Request, spec *jobs.Spec) error {
	if s.Inputs == nil {
		return nil
	}
	// The spec's own faults first, then its ladder, then what it reads:
	// the answer names the first thing to fix.
	if err := spec.Validate(); err != nil {
		return err
	}
	if err := s.Inputs.CheckLadder(spec.Ladder, spec.LadderYAML, ladder.IsPath); err != nil {
		return err
	}
	if _, err := ladder.Check(spec.Ladder, spec.LadderYAML); err != nil {
		return fmt.Errorf("ladder: %w", err)
	}
	if err := s.Inputs.CheckInput(r.Context(), spec.Input); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	for i, p := range spec.Publish {
		if err := s.Inputs.CheckPublishTarget(r.Context(), p.URL); err != nil {
			return fmt.Errorf("publish[%d]: %w", i, err)
		}
	}
	return nil
}

// redacted is a copy of j for showing: passwords and key-like parameters
// in its URLs and reason masked, WHIP tokens removed.
func redacted(j *jobs.Job) *jobs.Job {
	c := *j
	c.Spec.Input = redact.URL(c.Spec.Input)
	c.Spec.Publish = slices.Clone(c.Spec.Publish)
	for i := range c.Spec.Publish {
		c.Spec.Publish[i].URL = redact.URL(c.Spec.Publish[i].URL)
		if c.Spec.Publish[i].Token != "" {
			c.Spec.Publish[i].Token = redact.Mask
		}
	}
	c.Reason = redact.Text(c.Reason)
	return &c
}
