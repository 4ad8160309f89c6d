package srt

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

// errKicked: the node closed the session (Session.Close ends it itself).
var errKicked = errors.New("srt: session closed by the node")

// conn is one accepted publisher.
type conn struct {
	s       *Server
	c       gosrt.Conn
	sess    *ingest.Session
	stream  string
	remote  string
	log     *slog.Logger
	started time.Time
	bytes   atomic.Uint64

	reasonMu sync.Mutex
	closed   bool
	reason   error // why we closed c; nil: the peer did

	// The coalescing buffer, written by serve and by the flush timer.
	mu    sync.Mutex
	buf   []byte
	align tsAligner
	flush *time.Timer
	armed bool
	done  bool
}

// close closes the SRT connection once, recording why.
func (c *conn) close(reason error) {
	c.reasonMu.Lock()
	first := !c.closed
	if first {
		c.closed, c.reason = true, reason
	}
	c.reasonMu.Unlock()
	if first {
		c.c.Close()
	}
}

func (c *conn) closeReason() error {
	c.reasonMu.Lock()
	defer c.reasonMu.Unlock()
	return c.reason
}

// serve hands the connection to the session and reads it until it ends.
func (c *conn) serve() {
	c.sess.OnClose(func() { c.close(errKicked) })
	if err := c.sess.SetTracks([]pipeline.Track{track}); err != nil {
		c.close(err)
		c.sess.End(err)
		return
	}
	if !c.s.register(c) {
		c.close(ErrServerClosed)
		c.sess.End(ErrServerClosed)
		return
	}
	defer c.s.unregister(c)
	c.log.Info("srt: publishing")

	err := c.read()
	c.close(err) // a no-op when we closed it already
	c.mu.Lock()
	c.done = true
	c.emitLocked()
	c.mu.Unlock()

	if err == nil {
		err = c.closeReason()
	}
	if errors.Is(err, errKicked) {
		err = nil
	}
	c.log.Info("srt: publisher gone", "error", err, "bytes", c.bytes.Load(), "dropped", c.align.dropped)
	c.sess.End(err)
}

// read copies payloads into the session until the connection ends: nil
// when it ended without a read error of ours (the peer's shutdown, or a
// close whose reason closeReason holds).
func (c *conn) read() (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.s.logPanic("connection", r)
			err = fmt.Errorf("%w: %v", ErrPanic, r)
		}
	}()
	// gosrt's SetReadDeadline does nothing and keepalives keep its peer
	// timeout from firing, so a watchdog ends a caller that sends no media.
	idle := time.AfterFunc(c.s.ReadTimeout, func() { c.close(ErrIdle) })
	defer idle.Stop()
	for {
		p, err := c.c.ReadPacket()
		if err != nil {
			// gosrt returns io.EOF however the connection ended.
			return nil
		}
		idle.Reset(c.s.ReadTimeout)
		if c.s.readHook != nil {
			c.s.readHook(p.Data())
		}
		c.write(p.Data())
		p.Decommission()
	}
}

// write adds one SRT payload to the buffer, which goes out as one Packet
// once it holds coalesceBytes or is coalesceDelay old.
func (c *conn) write(payload []byte) {
	c.bytes.Add(uint64(len(payload)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		c.buf = make([]byte, 0, coalesceBytes+2*1500)
	}
	c.buf = c.align.Append(c.buf, payload)
	switch {
	case len(c.buf) >= coalesceBytes:
		c.emitLocked()
	case len(c.buf) > 0 && !c.armed:
		c.armed = true
		if c.flush == nil {
			c.flush = time.AfterFunc(coalesceDelay, c.flushTimer)
		} else {
			c.flush.Reset(coalesceDelay)
		}
	}
}

func (c *conn) flushTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		c.emitLocked()
	}
}

// emitLocked writes the buffer as one Packet; the Packet owns it.
func (c *conn) emitLocked() {
	if c.armed {
		c.armed = false
		c.flush.Stop()
	}
	if len(c.buf) == 0 {
		return
	}
	c.sess.WritePacket(&pipeline.Packet{Track: 0, Data: c.buf})
	c.buf = nil
}
