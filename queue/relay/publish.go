package relay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/pipeline"
)

// Media subjects of a stream (the stream name is a job id, valid as a
// subject token):
//
//	media.<stream>.<track>  packets of track <track> (wire.go)
//	media.<stream>.tracks   request → StreamInfo (JSON)
//	media.<stream>.stats    StreamStatus (JSON) every StatsInterval, and a
//	                        last one with Ended set when the publisher stops
//	media.<stream>.status   request → StreamStatus (JSON) computed then
//	                        (Describe: a node's API without following)
//	media.<stream>.timeline request → timelinePosition (JSON), answered by
//	                        the nodes following the stream (timeline.go)
//	media.<stream>.event    a stamped timed event (events.go)
//	media.<stream>.events   request → the active events (events.go)
//	media.<stream>.ctl      "keyframe:<reason>": ask the job for an IDR on
//	                        every rung, for one of the pipeline.Keyframe*
//	                        reasons (plain "keyframe", from older nodes, and
//	                        unknown reasons count as "other")
//
// A pushed stream's source (a publisher's compressed media, on its way from
// the node that accepted the publisher to the worker that transcodes it)
// has the same subjects one level down, under media.<stream>.source.: the
// job's own subscribers (media.<stream>.*) never see it.
func mediaPrefix(stream string) string { return "media." + stream + "." }

// sourcePrefix is the subject prefix of stream's pushed source.
func sourcePrefix(stream string) string { return "media." + stream + ".source." }

// prefixFor is the subject prefix of stream on the plane o selects.
func (o options) prefixFor(stream string) string {
	if o.source {
		return sourcePrefix(stream)
	}
	return mediaPrefix(stream)
}

const (
	subjTracks = "tracks"
	subjStats  = "stats"
	subjStatus = "status"
	subjCtl    = "ctl"
	// subjTimeline is answered by followers, not by the publisher.
	subjTimeline = "timeline"

	ctlKeyframe = "keyframe" // ctlKeyframe + ":" + reason, or alone
	// ctlStop (source plane only) disconnects the publisher: a newer one
	// of the same stream takes over (ingest takeover: newest).
	ctlStop = "stop"
)

// StopSource asks the node holding stream's publisher to disconnect it.
func StopSource(nc *nats.Conn, stream string) error {
	return nc.Publish(sourcePrefix(stream)+subjCtl, []byte(ctlStop))
}

// SourceLive reports whether stream's source has a publisher now (one
// answered its track request within timeout).
func SourceLive(ctx context.Context, nc *nats.Conn, stream string, timeout time.Duration) bool {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := nc.RequestWithContext(rctx, sourcePrefix(stream)+subjTracks, nil)
	return err == nil
}

// StatsInterval is how often a publisher sends its job's statistics. They
// double as its liveness signal for subscribers.
const StatsInterval = time.Second

// StreamInfo describes a published stream: what SubscribeMedia needs to
// present it as a pipeline.Source.
type StreamInfo struct {
	Stream   string           `json:"stream"`
	Instance string           `json:"instance"` // the publisher; packets carry it too
	Tracks   []pipeline.Track `json:"tracks"`   // with codec configuration (Extradata)
	Started  time.Time        `json:"started"`
}

// StreamStatus is a publisher's periodic report.
type StreamStatus struct {
	Instance string               `json:"instance"`
	Stats    pipeline.SourceStats `json:"stats"`
	Ended    bool                 `json:"ended,omitempty"`
	Err      string               `json:"err,omitempty"` // why the job ended, if it failed
}

// Publish publishes job's packets, track list, statistics and
// keyframe service on the stream's subjects until ctx ends (it returns nil)
// or the job ends (it returns job.Err()). It reads the job through its own
// reader: when NATS cannot keep up, that reader drops (and video resumes at
// a keyframe it asks for), and the job itself never waits.
func Publish(ctx context.Context, nc *nats.Conn, stream string, job pipeline.Source) error {
	return publish(ctx, nc, stream, mediaPrefix(stream), job)
}

// PublishSource is Publish for a pushed stream's source: src's packets are
// the publisher's own access units (pipeline/ingest), published under
// media.<stream>.source. for the worker that runs the stream's job
// (FollowSource).
func PublishSource(ctx context.Context, nc *nats.Conn, stream string, src pipeline.Source) error {
	return publish(ctx, nc, stream, sourcePrefix(stream), src)
}

func publish(ctx context.Context, nc *nats.Conn, stream, prefix string, job pipeline.Source) error {
	if err := pipeline.ValidStreamName(stream); err != nil {
		return err
	}
	instance := newInstance()
	info := StreamInfo{Stream: stream, Instance: instanceString(instance), Tracks: job.Tracks(), Started: time.Now().UTC()}
	infoJSON, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("publish %s: %w", stream, err)
	}
	// Timed events are stamped where the stream is transcoded: on the
	// media plane only (a pushed source's publisher is not the job).
	var events *stamper
	if prefix == mediaPrefix(stream) {
		events = newStamper(nc, stream, info.Instance)
	}
	// Subscribe to the job before announcing the stream, so that every
	// packet from the first answer on reaches NATS.
	reader := job.Subscribe(pipeline.WithName("nats:"+stream),
		pipeline.WithKeyframeRequest(func(int) { job.RequestKeyframe(pipeline.KeyframeDrop) }))
	defer reader.Close()

	// The subscriptions' callbacks run on nats.go's goroutines, which end
	// with the unsubscribe below.
	tracksSub, err := nc.Subscribe(prefix+subjTracks, func(m *nats.Msg) { _ = m.Respond(infoJSON) })
	if err != nil {
		return fmt.Errorf("publish %s: %w", stream, err)
	}
	defer func() { _ = tracksSub.Unsubscribe() }()
	ctlSub, err := nc.Subscribe(prefix+subjCtl, func(m *nats.Msg) {
		cmd, reason, _ := strings.Cut(string(m.Data), ":")
		switch cmd {
		case ctlKeyframe:
			// The job's keyframe budget decides; the reason only labels it.
			job.RequestKeyframe(pipeline.KeyframeReason(reason))
		case ctlStop:
			if prefix == sourcePrefix(stream) {
				_ = job.Close() // an ingest session's Close only closes its connection
			}
		}
	})
	if err != nil {
		return fmt.Errorf("publish %s: %w", stream, err)
	}
	defer func() { _ = ctlSub.Unsubscribe() }()

	// Stats are computed when asked for, so an API that describes the
	// stream sees them as of now rather than up to a StatsInterval old.
	statusSub, err := nc.Subscribe(prefix+subjStatus, func(m *nats.Msg) {
		st := StreamStatus{Instance: info.Instance, Stats: job.Stats()}
		if events != nil {
			st.Stats.Events = events.stats()
		}
		if b, err := json.Marshal(st); err == nil {
			_ = m.Respond(b)
		}
	})
	if err != nil {
		return fmt.Errorf("publish %s: %w", stream, err)
	}
	defer func() { _ = statusSub.Unsubscribe() }()

	status := func(ended bool) {
		st := StreamStatus{Instance: info.Instance, Stats: job.Stats(), Ended: ended}
		if events != nil {
			st.Stats.Events = events.stats()
		}
		if ended {
			if err := job.Err(); err != nil {
				st.Err = err.Error()
			}
		}
		if b, err := json.Marshal(st); err == nil {
			_ = nc.Publish(prefix+subjStats, b)
		}
	}
	statsCtx, stopStats := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { // owned here: stopped and waited for before returning
		t := time.NewTicker(StatsInterval)
		defer t.Stop()
		for {
			status(false)
			select {
			case <-statsCtx.Done():
				return
			case <-t.C:
			}
		}
	})

	if events != nil {
		stopEvents, err := events.start(ctx)
		if err != nil {
			stopStats()
			wg.Wait()
			return fmt.Errorf("publish %s: events: %w", stream, err)
		}
		defer stopEvents()
	}
	tracks := job.Tracks()

	pub := packetPublisher{nc: nc, prefix: prefix, instance: instance, seq: make(map[int]uint32)}
	var runErr error
	for {
		p, err := reader.Read(ctx)
		if err != nil {
			break // the job ended (its fan-out closed) or ctx ended
		}
		if events != nil && p.Track >= 0 && p.Track < len(tracks) && tracks[p.Track].Kind == pipeline.KindVideo {
			err = events.publishFrame(p, tracks[p.Track].ClockRate, pub.publish)
		} else {
			err = pub.publish(p)
		}
		if err != nil {
			if errors.Is(err, nats.ErrConnectionClosed) {
				runErr = fmt.Errorf("publish %s: %w", stream, err)
				break
			}
			// Otherwise we are disconnected: the reconnect buffer takes what
			// it can, the rest is lost, and subscribers see the gap in the
			// sequence numbers.
		}
	}
	stopStats()
	wg.Wait()
	if runErr != nil {
		return runErr
	}
	// Say that the stream ended, so subscribers end at once instead of
	// timing out.
	status(true)
	_ = nc.FlushTimeout(time.Second)
	if ctx.Err() != nil {
		return nil // stopped from outside: stop, lost ownership, drain
	}
	return job.Err()
}

// packetPublisher turns packets into media messages.
type packetPublisher struct {
	nc       *nats.Conn
	prefix   string
	instance uint64
	seq      map[int]uint32
	buf      []byte
}

func (pp *packetPublisher) publish(p *pipeline.Packet) error {
	maxPayload := int(pp.nc.MaxPayload()) // the server's; may change after a reconnect
	chunks, err := chunkCount(len(p.Data), maxPayload)
	if err != nil {
		return err
	}
	seq := pp.seq[p.Track] + 1
	pp.seq[p.Track] = seq
	h := packetHeader(p, pp.instance, seq, chunks)
	room := maxPayload - headerLen
	subject := pp.prefix + strconv.Itoa(p.Track)
	for i := range chunks {
		data := p.Data[min(i*room, len(p.Data)):min((i+1)*room, len(p.Data))]
		// Publish copies into the connection's buffer, so one scratch
		// buffer serves every message.
		pp.buf = appendMessage(pp.buf[:0], h, i, data)
		if err := pp.nc.Publish(subject, pp.buf); err != nil {
			return err
		}
	}
	return nil
}

func newInstance() uint64 {
	for {
		var b [8]byte
		_, _ = rand.Read(b[:]) // never fails: it panics rather than return an error
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

func instanceString(v uint64) string { return strconv.FormatUint(v, 16) }
