// Package srt is Prism's SRT push listener: every caller shares one UDP
// port (gosrt), is routed by its streamid and admitted by the node's
// ingest.Handler before the handshake completes, and its MPEG-TS bytes go
// into the Session on one container track, which the worker demuxes.
package srt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

// Errors a session ends with.
var (
	// ErrServerClosed: Close stopped the listener.
	ErrServerClosed = errors.New("srt: server closed")
	// ErrIdle: the publisher sent no media for ReadTimeout.
	ErrIdle = errors.New("srt: no media from the publisher")
	// ErrPanic: a bug in the listener (or the library) ended the connection.
	ErrPanic = errors.New("srt: internal error")
)

// Defaults of the Server fields.
const (
	DefaultLatency        = 120 * time.Millisecond
	DefaultReadTimeout    = 10 * time.Second
	DefaultMaxStreamIDLen = 512
	DefaultMaxPending     = 128
)

const (
	// coalesceBytes and coalesceDelay bound a Packet: SRT delivers 1316
	// bytes at a time, far too small a message for the relay to the worker.
	coalesceBytes = 16 << 10
	coalesceDelay = 5 * time.Millisecond
	// idleSlack lets the data watchdog (ReadTimeout) fire before gosrt's
	// own peer timeout, so the session ends with ErrIdle, not a bare EOF.
	idleSlack = 2 * time.Second
)

// hint is what a caller without a usable streamid is told (in the log).
const hint = "set streamid=publish:<stream>[:<key>] (FFmpeg: srt://host:port?streamid=publish:<stream>:<key>)"

// Server accepts SRT publishers on one UDP port.
type Server struct {
	Address string // e.g. ":8890"; Addr reports the bound port
	Handler ingest.Handler
	// Passphrase returns the stream's passphrase ("" = no encryption
	// allowed); nil: no stream is encrypted.
	Passphrase func(stream string) string
	Latency    time.Duration // receiver latency; DefaultLatency if 0
	Log        *slog.Logger
	// ReadTimeout ends a publisher that sends no media for that long, and
	// bounds the Handler's decision; DefaultReadTimeout if 0.
	ReadTimeout time.Duration
	// RefusalDelay is how long a refused caller waits for its answer, to
	// slow down key guessing; nil: random 0.5-1.5 s.
	RefusalDelay   func() time.Duration
	MaxStreamIDLen int // DefaultMaxStreamIDLen if 0
	// MaxPending bounds the handshakes being decided at once (a refusal
	// waits RefusalDelay, the Handler may be slow); callers beyond it are
	// refused with REJX_OVERLOAD. DefaultMaxPending if 0.
	MaxPending int

	ln      gosrt.Listener
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	pending chan struct{}

	mu     sync.Mutex
	closed bool
	conns  map[*conn]struct{}

	// readHook, if set, sees every payload first: tests panic in it.
	readHook func(payload []byte)

	panics    atomic.Uint64
	lastPanic atomic.Int64 // unix nanoseconds of the last logged panic
}

// Initialize starts listening.
func (s *Server) Initialize() error {
	if s.Handler == nil {
		return errors.New("srt: Server.Handler is nil")
	}
	if s.Latency == 0 {
		s.Latency = DefaultLatency
	}
	if s.ReadTimeout == 0 {
		s.ReadTimeout = DefaultReadTimeout
	}
	if s.MaxStreamIDLen == 0 {
		s.MaxStreamIDLen = DefaultMaxStreamIDLen
	}
	if s.MaxPending == 0 {
		s.MaxPending = DefaultMaxPending
	}
	if s.RefusalDelay == nil {
		s.RefusalDelay = func() time.Duration {
			return 500*time.Millisecond + rand.N(time.Second)
		}
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	addr, err := claimPort(s.Address)
	if err != nil {
		return err
	}
	cfg := gosrt.DefaultConfig()
	cfg.Latency = s.Latency
	cfg.PeerIdleTimeout = s.ReadTimeout + idleSlack
	ln, err := gosrt.Listen("srt", addr, cfg)
	if err != nil {
		return fmt.Errorf("srt: %w", err)
	}
	s.ln = ln
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.pending = make(chan struct{}, s.MaxPending)
	s.conns = map[*conn]struct{}{}
	s.wg.Add(1)
	go s.run()
	s.Log.Info("srt: listening", "addr", ln.Addr().String())
	return nil
}

// claimPort checks that address is free and returns it with its port
// chosen. gosrt binds with SO_REUSEADDR, which on Linux lets a second
// listener share a UDP port and take its datagrams: a second node on the
// same port would silently steal the first one's publishers. A plain bind
// fails on a port that is taken, whoever holds it.
func claimPort(address string) (string, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return "", fmt.Errorf("srt: address %q: %w", address, err)
	}
	probe, err := net.ListenPacket("udp", address)
	if err != nil {
		return "", fmt.Errorf("srt: %w", err)
	}
	port := probe.LocalAddr().(*net.UDPAddr).Port
	probe.Close()
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// Addr is the bound UDP address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close closes the listener and every connection (their sessions end with
// ErrServerClosed) and waits for its goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed || s.ln == nil { // closed, or never initialized
		s.closed = true
		s.mu.Unlock()
		return
	}
	s.closed = true
	for c := range s.conns {
		c.close(ErrServerClosed)
	}
	s.mu.Unlock()
	s.cancel()
	s.ln.Close()
	s.wg.Wait()
}

// run accepts handshakes until the listener closes.
func (s *Server) run() {
	defer s.wg.Done()
	for {
		req, err := s.accept()
		if errors.Is(err, ErrPanic) {
			continue
		}
		if err != nil {
			if s.ctx.Err() == nil {
				s.Log.Error("srt: listener stopped", "error", err)
			}
			return
		}
		select {
		case s.pending <- struct{}{}:
		default:
			s.Log.Warn("srt: too many handshakes at once, refusing", "remote", req.RemoteAddr().String())
			req.Reject(gosrt.REJX_OVERLOAD)
			continue
		}
		s.wg.Add(1)
		go s.handle(req)
	}
}

// accept is Accept2 with a recover: gosrt parses the handshake inside it,
// and a malformed one must not stop the listener.
func (s *Server) accept() (req gosrt.ConnRequest, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.logPanic("handshake", r)
			req, err = nil, ErrPanic
		}
	}()
	return s.ln.Accept2()
}

// logPanic logs a recovered panic, with its stack at most once a second:
// hostile packets that trip one must not flood the log.
func (s *Server) logPanic(where string, r any) {
	n := s.panics.Add(1)
	now := time.Now().UnixNano()
	last := s.lastPanic.Load()
	if now-last < int64(time.Second) || !s.lastPanic.CompareAndSwap(last, now) {
		return
	}
	s.Log.Error("srt: recovered a panic", "in", where, "panic", fmt.Sprint(r), "panics", n, "stack", string(debug.Stack()))
}

// handle decides one handshake and, once accepted, reads the publisher.
func (s *Server) handle(req gosrt.ConnRequest) {
	defer s.wg.Done()
	released := false
	release := func() {
		if !released {
			released = true
			<-s.pending
		}
	}
	defer release()
	var (
		sess *ingest.Session
		sc   gosrt.Conn
	)
	defer func() {
		if r := recover(); r != nil {
			s.logPanic("handshake", r)
			req.Reject(gosrt.REJ_PEER) // a no-op once accepted
			if sc != nil {
				sc.Close()
			}
			if sess != nil {
				sess.End(fmt.Errorf("%w: %v", ErrPanic, r))
			}
		}
	}()
	remote := req.RemoteAddr()
	log := s.Log.With("remote", remote.String())

	sess, ireq, code, err := s.admit(req, remote)
	if err != nil {
		log.Info("srt: refused publisher", "reject", rejectName(code), "error", err)
		req.Reject(code)
		return
	}
	log = log.With("stream", ireq.Stream)
	sc, err = req.Accept()
	if err != nil {
		log.Warn("srt: accepting failed", "error", err)
		sess.End(fmt.Errorf("srt: accept: %w", err))
		return
	}
	release()
	c := &conn{s: s, c: sc, sess: sess, stream: ireq.Stream, remote: remote.String(), log: log, started: time.Now()}
	c.serve()
}

// admit checks the streamid, the passphrase and the Handler, in that
// order. On refusal it returns the reject code, after RefusalDelay for
// credential failures.
func (s *Server) admit(req gosrt.ConnRequest, remote net.Addr) (*ingest.Session, ingest.Request, gosrt.RejectionReason, error) {
	var none ingest.Request
	if req.Version() < 5 {
		return nil, none, gosrt.REJX_BAD_REQUEST, fmt.Errorf("%w: handshake v%d carries none: %s", ErrNoStreamID, req.Version(), hint)
	}
	id := req.StreamId()
	if len(id) > s.MaxStreamIDLen {
		return nil, none, gosrt.REJX_BAD_REQUEST, fmt.Errorf("%w: %d bytes, more than %d", ErrStreamID, len(id), s.MaxStreamIDLen)
	}
	sid, err := ParseStreamID(id)
	switch {
	case errors.Is(err, ErrNoStreamID):
		return nil, none, gosrt.REJX_BAD_REQUEST, fmt.Errorf("%w: %s", err, hint)
	case errors.Is(err, ingest.ErrNotFound):
		return nil, none, gosrt.REJX_NOTFOUND, err
	case err != nil:
		return nil, none, gosrt.REJX_BAD_REQUEST, fmt.Errorf("%w: %s", err, hint)
	}
	if sid.Mode != ModePublish {
		mode := "an unknown mode" // not echoed: it may be a key in the wrong place
		switch sid.Mode {
		case "request", "play", "read", "subscribe", "bidirectional":
			mode = "mode " + sid.Mode
		}
		return nil, none, gosrt.REJX_BAD_MODE, fmt.Errorf("srt: %s: Prism takes publishers only (m=publish); play over HLS or WebRTC", mode)
	}
	pass := ""
	if s.Passphrase != nil {
		pass = s.Passphrase(sid.Stream)
	}
	switch {
	case pass != "" && (len(pass) < 10 || len(pass) > 79):
		// SRT passphrases are 10 to 79 bytes: no caller could match this.
		return nil, none, gosrt.REJ_BADSECRET, fmt.Errorf("srt: the passphrase configured for stream %q is not 10 to 79 bytes", sid.Stream)
	case pass != "" && !req.IsEncrypted():
		return nil, none, s.refuse(gosrt.REJ_BADSECRET), fmt.Errorf("%w: stream %q needs one", ingest.ErrBadSecret, sid.Stream)
	case pass != "":
		if err := req.SetPassphrase(pass); err != nil {
			return nil, none, s.refuse(gosrt.REJ_BADSECRET), fmt.Errorf("%w: for stream %q", ingest.ErrBadSecret, sid.Stream)
		}
	case req.IsEncrypted():
		return nil, none, s.refuse(gosrt.REJ_UNSECURE), fmt.Errorf("srt: the caller encrypts but stream %q has no passphrase", sid.Stream)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.ReadTimeout)
	defer cancel()
	ireq := ingest.Request{Protocol: ingest.SRT, Stream: sid.Stream, Key: sid.Key, Remote: remote, Query: sid.Query}
	sess, err := s.Handler.Publish(ctx, ireq)
	if err != nil {
		return nil, none, s.refuse(rejectCode(err)), err
	}
	if sess == nil {
		return nil, none, gosrt.REJ_PEER, errors.New("srt: the handler returned no session")
	}
	if s.ctx.Err() != nil {
		sess.End(ErrServerClosed)
		return nil, none, gosrt.REJ_CLOSE, ErrServerClosed
	}
	return sess, ireq, 0, nil
}

// refuse waits RefusalDelay (or until Close) and returns code.
func (s *Server) refuse(code gosrt.RejectionReason) gosrt.RejectionReason {
	if d := s.RefusalDelay(); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
	}
	return code
}

// rejectCode maps a Handler refusal to its SRT reject code.
func rejectCode(err error) gosrt.RejectionReason {
	switch {
	case errors.Is(err, ingest.ErrUnauthorized):
		return gosrt.REJX_UNAUTHORIZED
	case errors.Is(err, ingest.ErrBadSecret):
		return gosrt.REJ_BADSECRET
	case errors.Is(err, ingest.ErrNotFound):
		return gosrt.REJX_NOTFOUND
	case errors.Is(err, ingest.ErrConflict):
		return gosrt.REJX_CONFLICT
	case errors.Is(err, ingest.ErrUnsupported):
		return gosrt.REJX_UNACCEPTABLE
	}
	return gosrt.REJ_PEER
}

// rejectName names the codes Prism sends, for logs.
func rejectName(code gosrt.RejectionReason) string {
	switch code {
	case gosrt.REJ_PEER:
		return "REJ_PEER"
	case gosrt.REJ_CLOSE:
		return "REJ_CLOSE"
	case gosrt.REJ_BADSECRET:
		return "REJ_BADSECRET"
	case gosrt.REJ_UNSECURE:
		return "REJ_UNSECURE"
	case gosrt.REJX_BAD_REQUEST:
		return "REJX_BAD_REQUEST"
	case gosrt.REJX_UNAUTHORIZED:
		return "REJX_UNAUTHORIZED"
	case gosrt.REJX_OVERLOAD:
		return "REJX_OVERLOAD"
	case gosrt.REJX_NOTFOUND:
		return "REJX_NOTFOUND"
	case gosrt.REJX_BAD_MODE:
		return "REJX_BAD_MODE"
	case gosrt.REJX_UNACCEPTABLE:
		return "REJX_UNACCEPTABLE"
	case gosrt.REJX_CONFLICT:
		return "REJX_CONFLICT"
	}
	return fmt.Sprintf("reject %d", uint32(code))
}

// ConnStats is one publisher's connection.
type ConnStats struct {
	Stream  string
	Remote  string
	Started time.Time
	Bytes   uint64 // MPEG-TS bytes received
	// SRT data packets: received (with retransmissions), detected missing,
	// dropped as too late, retransmitted to us.
	PacketsReceived, PacketsLost, PacketsDropped, PacketsRetransmitted uint64
	RTT                                                                time.Duration
	MbpsRecvRate                                                       float64
}

// Stats returns the connections' statistics.
func (s *Server) Stats() []ConnStats {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	out := make([]ConnStats, 0, len(conns))
	for _, c := range conns {
		var st gosrt.Statistics
		c.c.Stats(&st)
		out = append(out, ConnStats{
			Stream:               c.stream,
			Remote:               c.remote,
			Started:              c.started,
			Bytes:                c.bytes.Load(),
			PacketsReceived:      st.Accumulated.PktRecv,
			PacketsLost:          st.Accumulated.PktRecvLoss,
			PacketsDropped:       st.Accumulated.PktRecvDrop,
			PacketsRetransmitted: st.Accumulated.PktRecvRetrans,
			RTT:                  time.Duration(st.Instantaneous.MsRTT * float64(time.Millisecond)),
			MbpsRecvRate:         st.Instantaneous.MbpsRecvRate,
		})
	}
	return out
}

// register adds c to the connections Close closes; false once closed.
func (s *Server) register(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// track is the session's one track: the worker demuxes the TS.
var track = pipeline.Track{Kind: pipeline.KindContainer, Codec: pipeline.CodecMPEGTS, Name: "mpegts"}
