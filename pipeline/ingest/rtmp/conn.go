package rtmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

var errPanic = errors.New("rtmp: internal error in the connection")

// conn is one accepted connection, served by one goroutine.
type conn struct {
	s   *Server
	nc  net.Conn
	bc  *budgetConn
	log *slog.Logger

	sess   *ingest.Session
	kicked atomic.Bool // the node closed the session (Session.Close)

	// Timed events inside the stream (events.go), on the read goroutine.
	eventRate     pipeline.TokenBucket
	eventsRefused uint64 // malformed or over the rate
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{
		s:   s,
		nc:  nc,
		bc:  &budgetConn{Conn: nc, left: s.MaxAnalyzeBytes, limited: true},
		log: s.Log.With("remote", nc.RemoteAddr().String()),

		eventRate: pipeline.NewTokenBucket(dataEventRate, dataEventBurst),
	}
}

// fail ends the session, if one was admitted, with err.
func (c *conn) fail(err error) {
	if c.sess != nil {
		c.sess.End(err)
	}
}

// serve runs the connection to its end. It does not recover panics: the
// caller does (handle), and the fuzz target wants to see them.
func (c *conn) serve() {
	err := c.run()
	if c.sess == nil {
		// Port scanners and refused publishers: refusals were logged
		// already, the rest is noise at Info.
		c.log.Debug("rtmp: connection closed", "err", safeErr(err))
	} else {
		cnt := c.sess.Counters()
		c.log.Info("rtmp: publisher gone", "err", safeErr(c.sess.Err()),
			"packets", cnt.Packets, "bytes", cnt.Bytes, "events", cnt.Events, "events_refused", c.eventsRefused,
			"duration", time.Since(c.sess.Started).Round(time.Millisecond))
	}
}

func (c *conn) run() error {
	_ = c.nc.SetDeadline(time.Now().Add(c.s.HandshakeTimeout))
	sc := &gortmplib.ServerConn{RW: c.bc}
	if err := sc.Initialize(); err != nil {
		return fmt.Errorf("handshake/connect: %w", err)
	}
	if err := sc.AcceptConn(); err != nil {
		return fmt.Errorf("waiting for publish: %w", err)
	}
	if !sc.Publish {
		c.log.Info("rtmp: play refused", "reason", ErrPlay.Error())
		c.refuse(sc, ErrPlay)
		return ErrPlay
	}

	stream, key, query, err := ParseURL(sc.URL)
	if err == nil {
		req := ingest.Request{Protocol: ingest.RTMP, Stream: stream, Key: key, Remote: c.nc.RemoteAddr(), Query: query}
		ctx, cancel := context.WithTimeout(c.s.ctx, c.s.HandshakeTimeout)
		var sess *ingest.Session
		sess, err = c.s.Handler.Publish(ctx, req)
		cancel()
		if err == nil && sess == nil {
			err = errors.New("rtmp: the handler returned no session")
		}
		if err == nil {
			c.sess = sess
		}
	}
	if err != nil {
		c.log.Info("rtmp: publish refused", "stream", stream, "reason", safeErr(err))
		c.refuse(sc, err)
		return fmt.Errorf("publish refused: %w", err)
	}

	c.sess.OnClose(func() {
		c.kicked.Store(true)
		c.nc.Close()
	})
	select {
	case <-c.sess.Done():
		// Closed by the node before OnClose was set.
		c.kicked.Store(true)
		return c.end(nil, net.ErrClosed)
	default:
	}
	c.log = c.log.With("stream", stream)
	c.log.Info("rtmp: publishing")
	if err := sc.AcceptAction(); err != nil {
		return c.end(nil, err)
	}

	// A fresh deadline for the analysis: the handler and the publisher's
	// round trips must not eat into the two seconds of media it needs.
	_ = c.nc.SetDeadline(time.Now().Add(c.s.HandshakeTimeout))
	in := &inspector{Conn: sc, onData: c.onData}
	r := &gortmplib.Reader{Conn: in}
	if err := r.Initialize(); err != nil {
		err = c.end(in, fmt.Errorf("reading the tracks: %w", err))
		if in.unpublished {
			lingerClose(c.nc)
		}
		return err
	}
	c.bc.unlimit()

	m := &mapper{sess: c.sess, log: c.log, fps: in.fps, av1SeqHdr: in.av1SeqHdr()}
	tracks, err := m.setup(r)
	if err != nil {
		return c.end(in, err)
	}
	if err := c.sess.SetTracks(tracks); err != nil {
		return c.end(in, err)
	}
	for _, t := range tracks {
		c.log.Info("rtmp: track", "kind", t.Kind.String(), "codec", t.Codec, "width", t.Width, "height", t.Height,
			"fps", t.FPS, "sample_rate", t.SampleRate, "channels", t.Channels)
	}

	for {
		_ = c.nc.SetDeadline(time.Now().Add(c.s.ReadTimeout))
		err := r.Read()
		if in.unpublished {
			c.sess.End(nil)
			// FFmpeg sends FCUnpublish, then deleteStream: closing at the
			// first would reset the second and fail its exit.
			lingerClose(c.nc)
			return nil
		}
		if err != nil {
			return c.end(in, err)
		}
	}
}

// onData hands an event inside the stream to the session (inspector, on
// the read goroutine). A refused one is logged the first time and
// counted.
func (c *conn) onData(payload amf0.Data) {
	now := time.Now()
	req, ok, err := dataEvent(payload, now)
	if !ok {
		return
	}
	if err == nil && !c.eventRate.Take(now) {
		err = fmt.Errorf("%w: more than %d a second from this publisher", pipeline.ErrEvent, dataEventRate)
	}
	if err != nil {
		if c.eventsRefused == 0 {
			c.log.Info("rtmp: event in the stream refused (later ones counted)", "reason", err)
		}
		c.eventsRefused++
		return
	}
	c.sess.WriteEvent(req)
}

// end ends the session for a read loop that stopped with err, telling a
// clean stop (unpublish, the node's kick) from a lost publisher.
func (c *conn) end(in *inspector, err error) error {
	switch {
	case c.kicked.Load():
		err = nil
	case c.s.ctx.Err() != nil:
		err = ErrServerClosed
	case in != nil && in.unpublished:
		if c.sess.Tracks() == nil {
			err = errors.New("rtmp: the publisher stopped before its tracks were known")
		} else {
			err = nil
		}
	case errors.Is(err, io.EOF):
		err = fmt.Errorf("rtmp: connection closed without unpublishing: %w", io.ErrUnexpectedEOF)
	case isTimeout(err):
		err = fmt.Errorf("rtmp: no data from the publisher in time: %w", err)
	default:
		err = fmt.Errorf("rtmp: %w", err)
	}
	c.sess.End(err)
	return err
}

// refuse answers a refused publish (or play) after the refusal delay and
// lets the publisher read the answer before the connection closes.
func (c *conn) refuse(sc *gortmplib.ServerConn, reason error) {
	if d := c.s.RefusalDelay(); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.s.ctx.Done():
			t.Stop()
			return
		}
	}
	_ = c.nc.SetDeadline(time.Now().Add(c.s.HandshakeTimeout))
	code, desc := refusalStatus(reason)
	var err error
	if code == "" {
		err = sc.RejectAction() // NetStream.Publish.Unauthorized
	} else {
		err = sc.Write(&message.CommandAMF0{
			ChunkStreamID:   5,
			MessageStreamID: 0x1000000,
			Name:            "onStatus",
			Arguments: []any{nil, amf0.Object{
				{Key: "level", Value: "error"},
				{Key: "code", Value: code},
				{Key: "description", Value: desc},
			}},
		})
	}
	if err != nil {
		return
	}
	lingerClose(c.nc)
}

// refusalStatus maps a refusal to its RTMP status; "" means the library's
// NetStream.Publish.Unauthorized.
func refusalStatus(err error) (code, desc string) {
	switch {
	case errors.Is(err, ErrPlay):
		return "NetStream.Play.Failed", "play is not served here; publish only"
	case errors.Is(err, ingest.ErrNotFound):
		return "NetStream.Publish.BadName", ingest.ErrNotFound.Error()
	case errors.Is(err, ingest.ErrConflict):
		return "NetStream.Publish.BadName", ingest.ErrConflict.Error()
	case errors.Is(err, ingest.ErrUnsupported):
		return "NetStream.Publish.Failed", ingest.ErrUnsupported.Error()
	}
	return "", ""
}

// lingerClose half-closes nc and drains briefly, so that the peer reads
// our last message, and ends its own, without a reset caused by data we
// left unread.
func lingerClose(nc net.Conn) {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := nc.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
	_ = nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.Copy(io.Discard, io.LimitReader(nc, 1<<20))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// safeErr renders err for a log line: without URLs (an RTMP URL carries
// the stream key) and short (a hostile client chooses what gortmplib's
// errors quote).
func safeErr(err error) string {
	if err == nil {
		return ""
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return "invalid URL: " + safeErr(ue.Err)
	}
	s := err.Error()
	const maxLen = 200
	if len(s) > maxLen {
		s = s[:maxLen] + "…"
	}
	return s
}

func stackTrace() string {
	s := string(debug.Stack())
	if len(s) > 4096 {
		s = s[:4096]
	}
	return s
}

// budgetConn fails reads once a connection has sent more than its budget
// before its tracks are known.
type budgetConn struct {
	net.Conn
	left    int64
	limited bool
}

func (b *budgetConn) Read(p []byte) (int, error) {
	if !b.limited {
		return b.Conn.Read(p)
	}
	if b.left <= 0 {
		return 0, ErrBudget
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.Conn.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *budgetConn) unlimit() { b.limited = false }
