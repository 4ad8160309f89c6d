// Package rtmp is Prism's RTMP(S) push listener: publishers (OBS, FFmpeg,
// hardware encoders) connect to rtmp://host/live/<stream>?key=<k>, the
// node's ingest.Handler admits them at the publish command, and their
// H.264, H.265 (Enhanced RTMP), AV1, AAC and Opus access units go into the
// ingest.Session it returns.
//
// gortmplib drives the protocol of one connection; this package owns the
// listener, the limits (connection count, deadlines, the bytes one
// connection may make the server buffer before its tracks are known) and
// the mapping to pipeline tracks and packets.
package rtmp

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prism-streaming/prism/pipeline/ingest"
)

// Defaults of the Server's zero fields.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultReadTimeout      = 10 * time.Second
	DefaultMaxConnections   = 1000
	// DefaultMaxAnalyzeBytes bounds what a connection may send before its
	// tracks are known: gortmplib keeps up to 5000 messages of up to 10 MiB
	// while it analyses the first two seconds of media.
	DefaultMaxAnalyzeBytes = 32 << 20
)

var (
	// ErrServerClosed ends the sessions of a server that was closed.
	ErrServerClosed = errors.New("rtmp: server closed")
	// ErrBudget: a connection sent more than MaxAnalyzeBytes before its
	// tracks were known.
	ErrBudget = errors.New("rtmp: too much data before the tracks were known")
	// ErrPlay: a client asked to play; Prism serves players over HLS/WebRTC.
	ErrPlay = errors.New("rtmp: play is not served, only publish")
)

// Server accepts RTMP (or, with TLSConfig, RTMPS) publishers.
type Server struct {
	Address   string      // e.g. ":1935"; "127.0.0.1:0" in tests
	TLSConfig *tls.Config // when set, the listener is RTMPS
	Handler   ingest.Handler
	Log       *slog.Logger // nil: slog.Default()
	// HandshakeTimeout bounds the handshake up to the publish command, and
	// again the track analysis after it; default 10s.
	HandshakeTimeout time.Duration
	// ReadTimeout is the idle deadline of each read once media flows;
	// default 10s.
	ReadTimeout time.Duration
	// MaxConnections caps concurrent connections; default 1000. Beyond
	// it a connection is accepted and closed at once.
	MaxConnections int
	// RefusalDelay is waited before answering a refused publish, to slow
	// down key guessing; default random 0.5-1.5s. Tests may return 0.
	RefusalDelay func() time.Duration
	// MaxAnalyzeBytes is what a connection may send before its tracks are
	// known; default DefaultMaxAnalyzeBytes.
	MaxAnalyzeBytes int64

	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu    sync.Mutex
	conns map[net.Conn]struct{}

	lastFullLog atomic.Int64 // unix nanoseconds of the last "too many connections" warning
	panics      atomic.Int64 // recovered connection panics, for tests
}

func (s *Server) setDefaults() {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.HandshakeTimeout <= 0 {
		s.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if s.ReadTimeout <= 0 {
		s.ReadTimeout = DefaultReadTimeout
	}
	if s.MaxConnections <= 0 {
		s.MaxConnections = DefaultMaxConnections
	}
	if s.MaxAnalyzeBytes <= 0 {
		s.MaxAnalyzeBytes = DefaultMaxAnalyzeBytes
	}
	if s.RefusalDelay == nil {
		s.RefusalDelay = func() time.Duration {
			return 500*time.Millisecond + rand.N(time.Second)
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.conns = make(map[net.Conn]struct{})
}

// Initialize starts listening on Address.
func (s *Server) Initialize() error {
	if s.Handler == nil {
		return errors.New("rtmp: Server.Handler is nil")
	}
	s.setDefaults()
	ln, err := net.Listen("tcp", s.Address)
	if err != nil {
		s.cancel()
		return err
	}
	if s.TLSConfig != nil {
		// The TLS handshake runs on the first read, so it falls under the
		// handshake deadline like the RTMP one.
		ln = tls.NewListener(ln, s.TLSConfig)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.acceptLoop()
	s.Log.Info("rtmp: listening", "address", ln.Addr().String(), "tls", s.TLSConfig != nil)
	return nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close closes the listener and every connection, and waits for their
// goroutines.
func (s *Server) Close() {
	s.once.Do(func() {
		if s.cancel == nil {
			return // never initialised
		}
		s.cancel()
		if s.ln != nil {
			s.ln.Close()
		}
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	s.wg.Wait()
}

// connections returns the number of connections being served.
func (s *Server) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: wait instead of
			// spinning, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.Log.Warn("rtmp: accept", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		if !s.track(nc) {
			nc.Close()
			continue
		}
		s.wg.Add(1)
		go s.handle(nc)
	}
}

// track registers nc, or reports false when the server is full or closed.
func (s *Server) track(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	if len(s.conns) >= s.MaxConnections {
		now := time.Now().UnixNano()
		if last := s.lastFullLog.Load(); now-last > int64(10*time.Second) && s.lastFullLog.CompareAndSwap(last, now) {
			s.Log.Warn("rtmp: too many connections, closing new ones", "max", s.MaxConnections, "remote", nc.RemoteAddr().String())
		}
		return false
	}
	s.conns[nc] = struct{}{}
	return true
}

func (s *Server) handle(nc net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
	}()
	defer nc.Close()
	c := newConn(s, nc)
	defer func() {
		// A parser bug must cost one connection, never the process.
		if v := recover(); v != nil {
			s.panics.Add(1)
			c.log.Error("rtmp: panic in connection", "panic", v, "stack", stackTrace())
			c.fail(errPanic)
		}
	}()
	c.serve()
}
