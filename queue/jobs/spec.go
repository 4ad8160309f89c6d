package jobs

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/prism-streaming/prism/pipeline"
)

// Playback policies (Spec.Play).
const (
	PlayPublic = "public"
	PlaySigned = "signed"
)

// Output names a delivery a job feeds.
const (
	OutputHLS    = pipeline.OutputHLS
	OutputWebRTC = pipeline.OutputWebRTC
)

// encoders are the values Constraints.Encoder accepts: the ladder's encoder
// names, so a job can require what its ladder asks for.
var encoders = []string{"auto", "x264", "nvenc", "qsv", "vaapi"}

// maxInputLen bounds Input: URLs longer than this are mistakes, and every
// job record is rewritten on each lease renewal.
const maxInputLen = 4096

// MaxPublishTargets bounds Spec.Publish: each target is a WebRTC session
// (an encoder's worth of packets, a connection) held by the job's node.
const MaxPublishTargets = 8

// Spec is what a client asks for: one input transcoded with one ladder.
// The ID is also the stream name under which its media is published.
type Spec struct {
	ID     string `json:"id"`    // a valid stream name (pipeline.ValidStreamName)
	Input  string `json:"input"` // libavformat URL or lavfi:<graph>
	Ladder string `json:"ladder,omitempty"`
	// LadderYAML is an inline ladder; when set it is the ladder and Ladder
	// is only a label for it.
	LadderYAML string `json:"ladder_yaml,omitempty"`
	// Outputs are the deliveries that serve the job's stream (OutputHLS,
	// OutputWebRTC); none listed means all of them.
	Outputs     []string    `json:"outputs,omitempty"`
	Constraints Constraints `json:"constraints,omitzero"`
	// Restart keeps a live stream up: when its input ends or cannot be
	// reached, the owner starts it again (backing off) instead of ending
	// the job. Crashes still count as failed attempts, and so does an input
	// that never came up in DefaultMaxAttempts tries in a row.
	Restart bool `json:"restart,omitempty"`
	// Play is who may watch the stream: PlayPublic (the default) or
	// PlaySigned (a credential granting play on it).
	Play string `json:"play,omitempty"`
	// Realtime paces file and lavfi inputs at 1x, as a live source would
	// (network inputs are paced by their sender). Unset means true.
	Realtime *bool `json:"realtime,omitempty"`
	// Publish pushes the ladder to other WebRTC servers over WHIP, one
	// simulcast track with a RID per rung, from the node that runs the job.
	Publish []PublishTarget `json:"publish,omitempty"`
	// Ingest is set on a pushed stream's job (Input "ingest://<stream>"):
	// the worker follows the publisher's source over NATS.
	Ingest *IngestSpec `json:"ingest,omitempty"`
}

// IngestSpec is what a pushed stream's job knows of its publisher.
type IngestSpec struct {
	Protocol string `json:"protocol"` // rtmp, srt, whip (of the first publisher)
	// Grace is how long the job waits for a publisher that dropped.
	Grace time.Duration `json:"grace_ns"`
	// The publisher's video, which prices the job (StoreConfig.SourceCost).
	Width  int     `json:"width,omitempty"`
	Height int     `json:"height,omitempty"`
	FPS    float64 `json:"fps,omitempty"`
}

// Paced reports whether file and lavfi inputs are read at 1x (Realtime).
func (s *Spec) Paced() bool { return s.Realtime == nil || *s.Realtime }

// PublishTarget is a WHIP endpoint and its bearer token.
type PublishTarget struct {
	URL   string `json:"url"`
	Token string `json:"token,omitempty"`
}

// Constraints restrict which nodes may run a job.
type Constraints struct {
	NeedsGPU bool   `json:"needs_gpu,omitempty"`
	Encoder  string `json:"encoder,omitempty"` // one of the ladder encoders; a node must list it
}

// Validate checks the fields that do not need a ladder resolver. Errors wrap
// ErrInvalidSpec and name the field.
func (s *Spec) Validate() error {
	if err := pipeline.ValidStreamName(s.ID); err != nil {
		return fmt.Errorf("%w: id: %w", ErrInvalidSpec, err)
	}
	switch {
	case strings.TrimSpace(s.Input) == "":
		return fmt.Errorf("%w: %s: input: required", ErrInvalidSpec, s.ID)
	case len(s.Input) > maxInputLen:
		return fmt.Errorf("%w: %s: input: longer than %d bytes", ErrInvalidSpec, s.ID, maxInputLen)
	case strings.IndexFunc(s.Input, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: %s: input: contains control characters", ErrInvalidSpec, s.ID)
	}
	if s.Ladder == "" && s.LadderYAML == "" {
		return fmt.Errorf("%w: %s: ladder: required (a shipped ladder name, a file path, or ladder_yaml)", ErrInvalidSpec, s.ID)
	}
	if s.Play != "" && s.Play != PlayPublic && s.Play != PlaySigned {
		return fmt.Errorf("%w: %s: play: %q is not %q or %q", ErrInvalidSpec, s.ID, s.Play, PlayPublic, PlaySigned)
	}
	for i, o := range s.Outputs {
		if o != OutputHLS && o != OutputWebRTC {
			return fmt.Errorf("%w: %s: outputs[%d]: %q is not %q or %q", ErrInvalidSpec, s.ID, i, o, OutputHLS, OutputWebRTC)
		}
		if slices.Contains(s.Outputs[:i], o) {
			return fmt.Errorf("%w: %s: outputs[%d]: %q listed twice", ErrInvalidSpec, s.ID, i, o)
		}
	}
	if len(s.Publish) > MaxPublishTargets {
		return fmt.Errorf("%w: %s: publish: %d targets, at most %d", ErrInvalidSpec, s.ID, len(s.Publish), MaxPublishTargets)
	}
	for i, p := range s.Publish {
		if !strings.HasPrefix(p.URL, "http://") && !strings.HasPrefix(p.URL, "https://") {
			return fmt.Errorf("%w: %s: publish[%d].url: %q is not an http(s) WHIP endpoint", ErrInvalidSpec, s.ID, i, p.URL)
		}
	}
	if e := s.Constraints.Encoder; e != "" && !slices.Contains(encoders, e) {
		return fmt.Errorf("%w: %s: constraints.encoder: %q is not one of %s", ErrInvalidSpec, s.ID, e, strings.Join(encoders, ", "))
	}
	return nil
}

// equal reports whether two specs ask for the same work (an empty and a nil
// output list are the same).
func (s *Spec) equal(o *Spec) bool {
	return s.ID == o.ID && s.Input == o.Input && s.Ladder == o.Ladder && s.LadderYAML == o.LadderYAML &&
		slices.Equal(s.Outputs, o.Outputs) && s.Constraints == o.Constraints && s.Restart == o.Restart &&
		slices.Equal(s.Publish, o.Publish) && s.Paced() == o.Paced() && s.Signed() == o.Signed()
}

// Signed reports whether playing the stream needs a credential.
func (s *Spec) Signed() bool { return s.Play == PlaySigned }

// Serves reports whether the named output delivers the job's stream.
func (s *Spec) Serves(output string) bool {
	return len(s.Outputs) == 0 || slices.Contains(s.Outputs, output)
}

// State is where a job is in its life. The transitions (see README.md):
//
//	pending  → starting (a node claimed it: Owner set)
//	starting → running (the runner reported media flowing)
//	starting, running → pending (handed back on drain, retry after an
//	    error, or the owner died and the taker cannot run it itself)
//	starting, running → starting (the owner died or stopped listing it:
//	    another node took it over)
//	starting, running → stopping (Stop) → stopped (by the owner, or by any
//	    node once the owner died)
//	pending → stopped (Stop before any node claimed it)
//	starting, running, pending → failed (MaxAttempts failed attempts)
//	stopped, failed → pending (submitted again)
type State string

// Job states.
const (
	StatePending  State = "pending"
	StateStarting State = "starting"
	StateRunning  State = "running"
	StateStopping State = "stopping"
	StateStopped  State = "stopped"
	StateFailed   State = "failed"
)

// Terminal reports whether no node will act on the job any more.
func (s State) Terminal() bool { return s == StateStopped || s == StateFailed }

// owned reports whether the state has an owner.
func (s State) owned() bool {
	return s == StateStarting || s == StateRunning || s == StateStopping
}

// Job is the record of one job in the prism_jobs bucket. Every write is
// revision-checked, so at any revision exactly one node (Owner) may run it,
// and only while its heartbeats (which list the job) go on.
type Job struct {
	Spec   Spec   `json:"spec"`
	State  State  `json:"state"`
	Reason string `json:"reason,omitempty"` // why it is pending, failed or stopped
	Owner  string `json:"owner,omitempty"`  // node id while starting, running or stopping
	// Lease is no longer written: the owner's node heartbeat is the lease
	// (see Node). Kept so that records of older versions decode; nothing
	// decides on it.
	Lease time.Time `json:"lease,omitzero"`
	// Attempts counts failed attempts since the job last ran for
	// Node.Retry.StableAfter; the job fails when it reaches Node.MaxAttempts.
	Attempts int `json:"attempts"`
	// Cost is the job's nominal encoding load in pixels per second, from the
	// store's LadderCheck at submission.
	Cost float64 `json:"cost"`
	// NotBefore delays the next attempt (retry backoff).
	NotBefore time.Time `json:"not_before,omitzero"`
	UpdatedAt time.Time `json:"updated_at"`
	// Encoding is, while the job runs, how each rung is encoded and why
	// (its runner's ReportEncoding).
	Encoding []RungEncoding `json:"encoding,omitempty"`

	// Revision is the KV revision this copy was read at or written as: the
	// fencing token for the next Update. Not stored.
	Revision uint64 `json:"-"`
}
