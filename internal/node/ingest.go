package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/config"
	"github.com/prism-streaming/prism/internal/auth"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
	"github.com/prism-streaming/prism/pipeline/ingest/rtmp"
	"github.com/prism-streaming/prism/pipeline/ingest/srt"
	"github.com/prism-streaming/prism/pipeline/ingest/whip"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/queue/relay"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// Ingest is this node's push ingest: the RTMP(S), SRT and WHIP listeners,
// and what turns each publisher into its stream's job. The listeners parse
// their protocols here (in Go) and the publisher's access units go over
// NATS (relay.PublishSource) to the worker that runs the job, on this node
// or another one with capacity. Fill the exported fields, Initialize,
// Close at the end.
type Ingest struct {
	Node   *Node
	Config config.Ingest
	// Pulled are the configured (pulled) streams: their names cannot be
	// pushed to.
	Pulled []config.Stream
	// Auth checks publish keys and tokens; when it has neither for a
	// stream, only loopback publishers may publish it.
	Auth *auth.Authorizer
	// WebRTC are the WHEP server's ICE settings (its UDP/TCP mux): WHIP
	// publishers use the same port.
	WebRTC webrtc.SettingEngine
	// AllowOrigin is WHIP's CORS origin, as WHEP's (webrtc.allow_origin),
	// so that a page on another origin can publish.
	AllowOrigin string
	Log         *slog.Logger

	limiter     *refusalLimiter
	rtmp, rtmps *rtmp.Server
	srt         *srt.Server
	whip        *whip.Server
	metrics     *ingestMetrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // one goroutine per publisher (run)

	mu         sync.Mutex
	live       map[string]*published
	reconnects map[string]int
}

// published is one publisher on this node.
type published struct {
	sess    *ingest.Session
	started time.Time
	resumed bool // the stream's job was already running: a reconnect
}

// silentAfter: a publisher that sent nothing for this long is taken for
// gone, and a new publisher of its stream replaces it. A live encoder sends
// every frame (30 a second); only a credential for the stream can replace
// it, so a short stall costs nothing to an honest publisher.
const silentAfter = 300 * time.Millisecond

// lastMedia is when the publisher's last packet (or its start) came.
func (p *published) lastMedia() time.Time {
	if c := p.sess.Counters(); c.LastPacket.After(p.started) {
		return c.LastPacket
	}
	return p.started
}

// silent reports whether the publisher sent nothing for silentAfter, past
// the time a new one may take to show its tracks.
func (p *published) silent(now time.Time) bool {
	return now.Sub(p.lastMedia()) > silentAfter && now.Sub(p.started) > readyTimeout/4
}

// PublisherInfo describes a publisher on this node (the JSON API).
type PublisherInfo struct {
	Stream     string    `json:"stream"`
	Protocol   string    `json:"protocol"`
	Remote     string    `json:"remote"`
	Since      time.Time `json:"since"`
	Bitrate    float64   `json:"bitrate"` // bits per second, over the last seconds
	Bytes      uint64    `json:"bytes"`
	Reconnects int       `json:"reconnects"`
	Tracks     []string  `json:"tracks"`
}

// Initialize starts the configured listeners.
func (in *Ingest) Initialize() error {
	if in.Node == nil {
		return fmt.Errorf("%w: Ingest needs Node", ErrConfig)
	}
	if in.Log == nil {
		in.Log = slog.Default()
	}
	in.Log = in.Log.With("component", "ingest")
	in.live = map[string]*published{}
	in.reconnects = map[string]int{}
	in.metrics = newIngestMetrics()
	in.limiter = newRefusalLimiter(maxAuthFailures, authFailureWindow, 4096)
	in.ctx, in.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			in.Close()
		}
	}()
	handler := ingest.HandlerFunc(in.publish)
	if a := in.Config.RTMP; a != "" {
		in.rtmp = &rtmp.Server{Address: a, Handler: handler, Log: in.Log.With("protocol", "rtmp")}
		if err := in.rtmp.Initialize(); err != nil {
			return fmt.Errorf("ingest: rtmp: %w", err)
		}
	}
	if a := in.Config.RTMPS; a != "" {
		cert, err := tls.LoadX509KeyPair(in.Config.TLSCert, in.Config.TLSKey)
		if err != nil {
			return fmt.Errorf("ingest: rtmps: %w", err)
		}
		in.rtmps = &rtmp.Server{Address: a, Handler: handler, Log: in.Log.With("protocol", "rtmps"),
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
		if err := in.rtmps.Initialize(); err != nil {
			return fmt.Errorf("ingest: rtmps: %w", err)
		}
	}
	if a := in.Config.SRT; a != "" {
		in.srt = &srt.Server{Address: a, Handler: handler, Latency: in.Config.SRTLatency, Log: in.Log.With("protocol", "srt"),
			Passphrase: func(stream string) string {
				sc, _ := in.Config.Stream(stream)
				return sc.Passphrase
			}}
		if err := in.srt.Initialize(); err != nil {
			return fmt.Errorf("ingest: srt: %w", err)
		}
	}
	if in.Config.WHIPEnabled() {
		in.whip = &whip.Server{Handler: handler, Settings: in.WebRTC, AllowOrigin: in.AllowOrigin, Log: in.Log.With("protocol", "whip")}
		if err := in.whip.Initialize(); err != nil {
			return fmt.Errorf("ingest: whip: %w", err)
		}
	}
	if !in.Auth.Enabled() {
		in.Log.Warn("no authentication configured: any stream name may be published, from loopback only (set auth.publish_keys or auth.tokens/jwt with the publish action)")
	}
	ok = true
	return nil
}

// RTMPAddr is the RTMP listener's address, or nil.
func (in *Ingest) RTMPAddr() net.Addr {
	if in.rtmp == nil {
		return nil
	}
	return in.rtmp.Addr()
}

// SRTAddr is the SRT listener's address, or nil.
func (in *Ingest) SRTAddr() net.Addr {
	if in.srt == nil {
		return nil
	}
	return in.srt.Addr()
}

// WHIPHandler serves /whip/ (nil when WHIP is off).
func (in *Ingest) WHIPHandler() http.Handler {
	if in.whip == nil {
		return nil
	}
	return in.whip
}

// Close stops the listeners and disconnects every publisher; their
// streams' jobs wait out the grace period (a node restart is a reconnect).
func (in *Ingest) Close() {
	if in.cancel != nil {
		in.cancel()
	}
	if in.rtmp != nil {
		in.rtmp.Close()
	}
	if in.rtmps != nil {
		in.rtmps.Close()
	}
	if in.srt != nil {
		in.srt.Close()
	}
	if in.whip != nil {
		in.whip.Close()
	}
	in.wg.Wait()
}

// Publishers lists this node's publishers, by stream.
func (in *Ingest) Publishers() []PublisherInfo {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []PublisherInfo
	for name, p := range in.live {
		c := p.sess.Counters()
		info := PublisherInfo{Stream: name, Protocol: p.sess.Request.Protocol, Since: p.started,
			Bitrate: c.Bitrate, Bytes: c.Bytes, Reconnects: in.reconnects[name]}
		if r := p.sess.Request.Remote; r != nil {
			info.Remote = r.String()
		}
		for _, t := range p.sess.Tracks() {
			d := t.Codec
			if t.Width > 0 {
				d += fmt.Sprintf(" %dx%d", t.Width, t.Height)
			}
			info.Tracks = append(info.Tracks, d)
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stream < out[j].Stream })
	return out
}

// Publisher returns the publisher of stream on this node, if any.
func (in *Ingest) Publisher(stream string) (PublisherInfo, bool) {
	for _, p := range in.Publishers() {
		if p.Stream == stream {
			return p, true
		}
	}
	return PublisherInfo{}, false
}

// refusal is a publish refused: counted, logged without the credential,
// answered after a short random delay against guessing.
func (in *Ingest) refusal(req ingest.Request, reason string, err error) error {
	in.metrics.rejects.WithLabelValues(req.Protocol, reason).Inc()
	remote := ""
	if req.Remote != nil {
		remote = req.Remote.String()
	}
	in.Log.Warn("publish refused", "protocol", req.Protocol, "stream", req.Stream, "remote", remote, "reason", err)
	// The RTMP and SRT listeners wait before answering a refusal; WHIP
	// answers over HTTP, here.
	if reason == "unauthorized" && req.Protocol == ingest.WHIP {
		select {
		case <-time.After(time.Duration(200+mrand.IntN(600)) * time.Millisecond):
		case <-in.ctx.Done():
		}
	}
	return err
}

// publish is the listeners' ingest.Handler: before any media is read it
// checks the name, the credential and conflicts, then hands back the
// session the listener writes the media into.
func (in *Ingest) publish(ctx context.Context, req ingest.Request) (*ingest.Session, error) {
	name := req.Stream
	if pipeline.ValidStreamName(name) != nil {
		return nil, in.refusal(req, "not_found", fmt.Errorf("%w: %q is not a valid stream name (letters, digits, '-' and '_')", ingest.ErrNotFound, name))
	}
	sc, listed := in.Config.Stream(name)
	if in.Config.OnlyListed && !listed {
		return nil, in.refusal(req, "not_found", fmt.Errorf("%w: %q is not listed in ingest.streams", ingest.ErrNotFound, name))
	}
	for _, p := range in.Pulled {
		if p.Name == name {
			return nil, in.refusal(req, "conflict", fmt.Errorf("%w: %q is a pulled stream (streams in the configuration)", ingest.ErrConflict, name))
		}
	}
	host := remoteHost(req)
	limited := !auth.IsLoopback(host) // a local publisher is trusted not to guess
	if blocked, left := in.limiter.blocked(host, time.Now()); limited && blocked {
		return nil, in.refusal(req, "rate_limited", fmt.Errorf("%w: too many refused attempts from %s: retry in %s",
			ingest.ErrUnauthorized, host, left.Round(time.Second)))
	}
	if err := in.authorize(req); err != nil {
		if limited {
			in.limiter.failed(host, time.Now())
		}
		return nil, in.refusal(req, "unauthorized", err)
	}
	in.limiter.succeeded(host)

	in.mu.Lock()
	old := in.live[name]
	in.mu.Unlock()
	newest := sc.Takeover == config.TakeoverNewest
	silent := old != nil && old.silent(time.Now())
	switch {
	case silent:
		// The publisher dropped without closing (SRT over a lost link, a
		// killed encoder) and its listener has not noticed yet: the new
		// connection is that publisher coming back.
		in.Log.Info("replacing a publisher that went silent", "stream", name, "silent_for", time.Since(old.lastMedia()).Round(time.Millisecond))
		_ = old.sess.Close()
	case old != nil && !newest:
		return nil, in.refusal(req, "conflict", fmt.Errorf("%w: %q is being published (from %s since %s)", ingest.ErrConflict, name,
			old.sess.Request.Protocol, old.started.Format(time.TimeOnly)))
	case old != nil:
		in.Log.Info("publisher taken over by a newer one", "stream", name)
		_ = old.sess.Close()
	case relay.SourceLive(ctx, in.Node.nc, name, 300*time.Millisecond):
		if !newest {
			return nil, in.refusal(req, "conflict", fmt.Errorf("%w: %q is being published to another node", ingest.ErrConflict, name))
		}
		in.Log.Info("publisher on another node taken over by a newer one", "stream", name)
		_ = relay.StopSource(in.Node.nc, name)
	}
	resumed := false
	if j, err := in.Node.store.Get(ctx, name); err == nil && !j.State.Terminal() {
		if j.Spec.Input != ingest.Input(name) {
			return nil, in.refusal(req, "conflict", fmt.Errorf("%w: %q is the id of a job pulling %s", ingest.ErrConflict, name, j.Spec.Input))
		}
		resumed = true
	}

	sess := ingest.NewSession(req)
	sess.OnEvent(func(ev pipeline.EventRequest) { in.sendEvent(name, req.Protocol, ev) })
	p := &published{sess: sess, started: time.Now(), resumed: resumed}
	in.mu.Lock()
	if cur := in.live[name]; cur != nil && cur != old {
		in.mu.Unlock()
		return nil, in.refusal(req, "conflict", fmt.Errorf("%w: %q: another publisher came first", ingest.ErrConflict, name))
	}
	in.live[name] = p
	if resumed {
		in.reconnects[name]++
	}
	in.mu.Unlock()
	if resumed {
		in.metrics.reconnects.WithLabelValues(req.Protocol).Inc()
	}
	in.wg.Add(1)
	go func() { // owned by in: Close cancels in.ctx and waits
		defer in.wg.Done()
		in.run(p, sc)
	}()
	return sess, nil
}

// sendEvent sends an event found inside a publisher's stream to
// events.<stream>, where the stream's publisher stamps it like any other
// (on the listener's goroutine: a NATS publish does not block).
func (in *Ingest) sendEvent(stream, protocol string, ev pipeline.EventRequest) {
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	if err := in.Node.nc.PublishMsg(relay.EventMsg(stream, protocol, b)); err != nil {
		in.Log.Debug("event from the publisher not sent", "stream", stream, "error", err)
		return
	}
	in.metrics.events.WithLabelValues(protocol).Inc()
}

// authorize: a publish key or a token granting publish on the stream;
// with neither configured for it, a loopback publisher.
func (in *Ingest) authorize(req ingest.Request) error {
	if in.Auth.Enabled() || in.Auth.HasPublishKey(req.Stream) {
		if _, err := in.Auth.AuthorizePublishKey(req.Stream, req.Key); err != nil {
			return fmt.Errorf("%w: %w", ingest.ErrUnauthorized, err)
		}
		return nil
	}
	if !auth.IsLoopback(remoteHost(req)) {
		return fmt.Errorf("%w: no authentication is configured, so only loopback publishers are accepted (set auth.publish_keys)", ingest.ErrUnauthorized)
	}
	return nil
}

// Refused credentials: after maxAuthFailures from one remote host within
// authFailureWindow, that host is refused at once until the window passed.
const (
	maxAuthFailures   = 20
	authFailureWindow = time.Minute
)

// remoteHost is the publisher's address without the port.
func remoteHost(req ingest.Request) string {
	if req.Remote == nil {
		return ""
	}
	h, _, err := net.SplitHostPort(req.Remote.String())
	if err != nil {
		return req.Remote.String()
	}
	return h
}

// readyTimeout bounds how long a publisher may take to show its tracks.
const readyTimeout = 20 * time.Second

// run relays one publisher's session until it ends, submitting its
// stream's job once the tracks are known.
func (in *Ingest) run(p *published, sc config.IngestStream) {
	sess, name := p.sess, p.sess.Request.Stream
	proto := sess.Request.Protocol
	in.metrics.sessions.WithLabelValues(proto).Inc()
	defer in.metrics.sessions.WithLabelValues(proto).Dec()
	defer func() {
		in.mu.Lock()
		if in.live[name] == p {
			delete(in.live, name)
		}
		in.mu.Unlock()
		_ = sess.Close()
	}()
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-sess.Ready():
	case <-sess.Done():
		return
	case <-timer.C:
		in.Log.Warn("publisher sent no usable tracks in time", "stream", name, "protocol", proto, "timeout", readyTimeout)
		return
	case <-in.ctx.Done():
		return
	}
	ctx, cancel := context.WithCancel(in.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = sess.Close() })
	defer stop()
	relayed := make(chan error, 1)
	go func() { relayed <- relay.PublishSource(ctx, in.Node.nc, name, sess) }() // owned here: waited for below
	if err := in.ensureJob(ctx, sc, proto, sess.Tracks()); err != nil {
		in.Log.Error("pushed stream: cannot start its job", "stream", name, "error", err)
		cancel()
		if err := <-relayed; err != nil {
			in.Log.Debug("relay of a refused stream", "stream", name, "error", err)
		}
		return
	}
	in.Log.Info("publishing", "stream", name, "protocol", proto, "tracks", len(sess.Tracks()), "reconnect", p.resumed)
	go in.countBytes(ctx, sess) // owned here: ends with ctx
	err := <-relayed
	in.Log.Info("publisher gone", "stream", name, "protocol", proto, "reason", err, "grace", in.Config.Grace)
}

// countBytes feeds the byte counter from the session's counters.
func (in *Ingest) countBytes(ctx context.Context, sess *ingest.Session) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last uint64
	proto := sess.Request.Protocol
	for {
		select {
		case <-ctx.Done():
		case <-sess.Done():
		case <-t.C:
			c := sess.Counters()
			in.metrics.bytes.WithLabelValues(proto).Add(float64(c.Bytes - last))
			last = c.Bytes
			continue
		}
		c := sess.Counters()
		in.metrics.bytes.WithLabelValues(proto).Add(float64(c.Bytes - last))
		return
	}
}

// ensureJob submits the pushed stream's job, unless it runs already (a
// reconnect within the grace period: the same job continues).
func (in *Ingest) ensureJob(ctx context.Context, sc config.IngestStream, proto string, tracks []pipeline.Track) error {
	spec := jobs.Spec{ID: sc.Name, Input: ingest.Input(sc.Name), Ladder: sc.Ladder, Outputs: sc.Outputs, Play: sc.Play,
		Ingest: &jobs.IngestSpec{Protocol: proto, Grace: in.Config.Grace}}
	for _, t := range tracks {
		if t.Kind == pipeline.KindVideo && t.Width > 0 {
			// Priced for this source, not for the ladder's nominal 1080p.
			spec.Ingest.Width, spec.Ingest.Height, spec.Ingest.FPS = t.Width, t.Height, t.FPS
			break
		}
	}
	if ladder.IsPath(sc.Ladder) {
		data, err := os.ReadFile(sc.Ladder)
		if err != nil {
			return err
		}
		spec.LadderYAML = string(data)
	}
	for {
		_, err := in.Node.store.Submit(ctx, spec)
		if !errors.Is(err, jobs.ErrJobExists) {
			return err
		}
		j, gerr := in.Node.store.Get(ctx, sc.Name)
		if gerr != nil {
			return gerr
		}
		switch {
		case !j.State.Terminal() && j.Spec.Input == spec.Input:
			return nil // running: this publisher resumes it
		case !j.State.Terminal():
			return fmt.Errorf("%w: %s is a job pulling %s", ingest.ErrConflict, sc.Name, j.Spec.Input)
		}
		// An ended job of that name: a pushed stream's name is its
		// publisher's to reuse.
		if _, err = in.Node.store.Submit(ctx, spec, jobs.Replace()); !errors.Is(err, jobs.ErrJobExists) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}
