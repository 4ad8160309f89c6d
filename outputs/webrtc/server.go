package webrtc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v5"
	"github.com/pion/webrtc/v4"

	"github.com/prism-streaming/prism/pipeline"
)

// Server serves every stream of Streams over WHEP, at /whep/<stream>. Set
// the fields, call Start, mount it (ServeHTTP) under "/whep/", and Close
// it to end every session.
type Server struct {
	// Streams are the running jobs; the server follows it as streams come and go.
	Streams *pipeline.Registry
	// Config is the webrtc section of the configuration (see Config.Defaults).
	Config Config
	// Log receives the server's logs; nil means slog.Default().
	Log *slog.Logger
	// Net is the network ICE runs on; nil means the host's. Tests use pion's
	// virtual network (vnet) to shape a viewer's bandwidth.
	Net transport.Net
	// OnAction receives viewers' actions ({"type":"action"} on the data
	// channel), bound to the frame on the viewer's screen; nil refuses them.
	// It runs on the session's data channel goroutine, one action at a time
	// per session, at most 10 per second per session (burst 20): it should
	// hand the action on (e.g. publish it to NATS actions.<stream>) without
	// waiting long. An error is logged and the viewer told to try again.
	// Set it before Start (it is read without a lock).
	OnAction func(pipeline.Action) error

	ctx        context.Context
	cancel     context.CancelFunc
	net        *network
	candidates candidateFilter
	cert       webrtc.Certificate
	counters   *counters
	unwatch    func()
	wg         sync.WaitGroup // stream and session goroutines
	reading    atomic.Int64   // request bodies being read: they hold no session slot

	// Lock order: Server.mu may be held while taking a stream's mu (admit),
	// never the reverse; neither is held while calling into pion.
	mu        sync.Mutex
	streams   map[string]*stream
	sessions  map[string]*session
	pending   int            // offers being answered: they hold a session slot
	perClient map[string]int // slots (sessions and pending offers) by slot.client
	perStream map[string]int // slots by stream name
	closed    bool
}

// slot is a session place, held from the reservation for an offer to the
// end of its session. It counts against max_sessions and against the caps
// of its client and its stream.
type slot struct {
	client string // clientKey of the viewer's address
	stream string
}

// Start validates the configuration, opens the ICE ports and starts
// following the stream registry.
func (s *Server) Start() error {
	if s.Streams == nil {
		return errors.New("webrtc: Server.Streams is nil")
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if err := s.Config.Validate(); err != nil {
		return err
	}
	// One certificate for all sessions: generating a key per viewer costs
	// CPU during join bursts and buys nothing, the fingerprint is per answer.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("webrtc: certificate key: %w", err)
	}
	cert, err := webrtc.GenerateCertificate(key)
	if err != nil {
		return fmt.Errorf("webrtc: certificate: %w", err)
	}
	s.cert = *cert
	if s.candidates, err = newCandidateFilter(s.Config.DenyCandidateCIDRs); err != nil {
		return err
	}
	if s.net, err = openNetwork(&s.Config, s.Net, s.candidates, s.Log); err != nil {
		return err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.counters = newCounters()
	s.streams = map[string]*stream{}
	s.sessions = map[string]*session{}
	s.perClient = map[string]int{}
	s.perStream = map[string]int{}
	s.unwatch = s.Streams.Watch(s.onStreamEvent)
	s.Log.Info("webrtc: WHEP ready", "udp", s.net.udpAddr().String(), "tcp_port", s.Config.TCPPort)
	return nil
}

// Close ends every session and stream goroutine and closes the ports.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed || s.cancel == nil {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.unwatch()
	s.cancel()
	s.wg.Wait()
	s.net.close()
}

// UDPAddr is the UDP address all sessions share (useful when udp_port is 0).
func (s *Server) UDPAddr() net.Addr { return s.net.udpAddr() }

// Latency reports, for a stream this server delivers, the time from ingest
// to a video frame's last RTP packet being handed to a viewer's track
// (p50, p95 over every viewer since the stream started).
func (s *Server) Latency(stream string) (p50, p95 time.Duration, ok bool) {
	st, err := s.stream(stream)
	if err != nil || st.latency.Count() == 0 {
		return 0, 0, false
	}
	return st.latency.Quantile(0.5), st.latency.Quantile(0.95), true
}

// SettingEngine returns the ICE settings of the server's peer connections
// (its UDP and ICE-TCP mux, candidate filter), for another WebRTC endpoint
// on the same ports: WHIP ingest.
func (s *Server) SettingEngine() webrtc.SettingEngine { return s.net.settings }

// onStreamEvent runs on the registry's goroutine: it must not block.
func (s *Server) onStreamEvent(ev pipeline.StreamEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if old, ok := s.streams[ev.Name]; ok {
		delete(s.streams, ev.Name)
		old.cancel()
	}
	if ev.Removed || ev.Source == nil || !ev.Serves(pipeline.OutputWebRTC) {
		return
	}
	st := newStream(ev.Name, ev.Source, &s.Config, s.Log)
	if len(st.rungs) == 0 {
		st.reader.Close()
		s.Log.Warn("webrtc: stream has no H.264 rung, not served", "stream", ev.Name)
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	st.cancel = cancel
	s.streams[ev.Name] = st
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		st.run(ctx)
		s.mu.Lock()
		if s.streams[st.name] == st {
			delete(s.streams, st.name)
		}
		s.mu.Unlock()
	}()
}

func (s *Server) stream(name string) (*stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrServerClosed
	}
	st, ok := s.streams[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrStreamNotFound, name)
	}
	return st, nil
}

// follow returns the stream, first asking the node to follow it when it
// runs but is not followed here (pipeline.Registry.Await), at most
// pipeline.FollowWait. A stream that does not run is ErrStreamNotFound at
// once.
func (s *Server) follow(ctx context.Context, name string) (*stream, error) {
	st, err := s.stream(name)
	if !errors.Is(err, ErrStreamNotFound) {
		return st, err
	}
	wctx, cancel := context.WithTimeout(ctx, pipeline.FollowWait)
	defer cancel()
	if _, err := s.Streams.Await(wctx, name, pipeline.OutputWebRTC); err != nil {
		if errors.Is(err, pipeline.ErrStreamUnknown) {
			return nil, fmt.Errorf("%w: %q", ErrStreamNotFound, name)
		}
		return nil, err // not followed in time: 503, retry
	}
	return s.stream(name)
}

// admissible refuses an offer that could not get a slot now, without
// taking one: a burst beyond the caps costs a header check each, not a
// body read.
func (s *Server) admissible(sl slot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checkSlotLocked(sl)
}

func (s *Server) checkSlotLocked(sl slot) error {
	switch {
	case s.closed:
		return ErrServerClosed
	case len(s.sessions)+s.pending >= s.Config.MaxSessions:
		return fmt.Errorf("%w: %d (webrtc.max_sessions)", ErrTooManySessions, s.Config.MaxSessions)
	case s.perStream[sl.stream] >= s.Config.sessionsPerStream():
		return fmt.Errorf("%w: %d (webrtc.max_sessions_per_stream)", ErrTooManySessionsPerStream, s.Config.sessionsPerStream())
	case s.perClient[sl.client] >= s.Config.MaxSessionsPerIP:
		return fmt.Errorf("%w: %d (webrtc.max_sessions_per_ip)", ErrTooManySessionsPerIP, s.Config.MaxSessionsPerIP)
	}
	return nil
}

// reserve takes a session slot for an offer being answered.
func (s *Server) reserve(sl slot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkSlotLocked(sl); err != nil {
		return err
	}
	s.pending++
	s.perClient[sl.client]++
	s.perStream[sl.stream]++
	return nil
}

// release gives back the slot of an offer that did not become a session.
func (s *Server) release(sl slot) {
	s.mu.Lock()
	s.pending--
	s.unclaimLocked(sl)
	s.mu.Unlock()
}

func (s *Server) unclaimLocked(sl slot) {
	if s.perClient[sl.client]--; s.perClient[sl.client] <= 0 {
		delete(s.perClient, sl.client)
	}
	if s.perStream[sl.stream]--; s.perStream[sl.stream] <= 0 {
		delete(s.perStream, sl.stream)
	}
}

// admit turns a reserved slot into a running session; on failure the slot
// is given back.
func (s *Server) admit(sess *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending--
	if s.closed {
		s.unclaimLocked(sess.slot)
		return ErrServerClosed
	}
	if !sess.st.add(sess) {
		s.unclaimLocked(sess.slot)
		return fmt.Errorf("%w: %q ended", ErrStreamNotFound, sess.st.name)
	}
	s.sessions[sess.id] = sess
	s.wg.Add(1)
	sess.start()
	return nil
}

func (s *Server) removeSession(sess *session) {
	s.mu.Lock()
	if s.sessions[sess.id] == sess {
		delete(s.sessions, sess.id)
		s.unclaimLocked(sess.slot)
	}
	s.mu.Unlock()
	if sess.release != nil {
		sess.release()
	}
}

func (s *Server) session(stream, id string) (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[id]
	if !ok || sess.st.name != stream {
		return nil, fmt.Errorf("%w: %s/%s", ErrSessionNotFound, stream, id)
	}
	return sess, nil
}

// relayServers are the configured TURN servers, which the server's own
// PeerConnections use for relay candidates. STUN servers are left out:
// pion gathers reflexive candidates on extra ports, not on the shared one.
func (s *Server) relayServers() []webrtc.ICEServer {
	var out []webrtc.ICEServer
	for _, is := range s.Config.ICEServers {
		var urls []string
		for _, u := range is.URLs {
			if strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:") {
				urls = append(urls, u)
			}
		}
		if len(urls) > 0 {
			out = append(out, webrtc.ICEServer{URLs: urls, Username: is.Username, Credential: is.Credential})
		}
	}
	return out
}

// randomID is 128 random bits in hex: session URLs are capabilities.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
