package srt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"
	"github.com/datarhei/gosrt/circular"
	"github.com/datarhei/gosrt/packet"

	"github.com/prism-streaming/prism/internal/testutil"
)

// rawCaller is a UDP socket that speaks SRT handshakes by hand, to send
// what no well-behaved library would.
type rawCaller struct {
	t  *testing.T
	c  *net.UDPConn
	id uint32 // SRT socket id
}

func newRawCaller(t *testing.T, s *testServer) *rawCaller {
	t.Helper()
	c, err := net.DialUDP("udp", nil, s.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawCaller{t: t, c: c, id: rand.Uint32()}
}

func (r *rawCaller) send(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// handshake is a handshake datagram carrying cif.
func handshake(cif *packet.CIFHandshake) []byte {
	p := packet.NewPacket(nil)
	defer p.Decommission()
	p.Header().IsControlPacket = true
	p.Header().ControlType = packet.CTRLTYPE_HANDSHAKE
	p.Header().DestinationSocketId = 0 // handshakes go to the listener
	if err := p.MarshalCIF(cif); err != nil {
		panic(err)
	}
	var b bytes.Buffer
	if err := p.Marshal(&b); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// cif is a handshake of version v and type typ from r.
func (r *rawCaller) cif(v uint32, typ packet.HandshakeType, cookie uint32) *packet.CIFHandshake {
	return &packet.CIFHandshake{
		IsRequest:                   true,
		Version:                     v,
		ExtensionField:              2,
		InitialPacketSequenceNumber: circular.New(1, packet.MAX_SEQUENCENUMBER),
		MaxTransmissionUnitSize:     1500,
		MaxFlowWindowSize:           8192,
		HandshakeType:               typ,
		SRTSocketId:                 r.id,
		SynCookie:                   cookie,
	}
}

// conclusion is a v5 conclusion with the extensions libsrt sends.
func (r *rawCaller) conclusion(cookie uint32, streamid string) *packet.CIFHandshake {
	c := r.cif(5, packet.HSTYPE_CONCLUSION, cookie)
	c.HasHS = true
	c.SRTHS = &packet.CIFHandshakeExtension{
		SRTVersion: 0x010500,
		SRTFlags: packet.CIFHandshakeExtensionFlags{
			TSBPDSND: true, TSBPDRCV: true, CRYPT: true, TLPKTDROP: true, PERIODICNAK: true, REXMITFLG: true,
		},
		RecvTSBPDDelay: 120,
		SendTSBPDDelay: 120,
	}
	c.HasSID = true
	c.StreamId = streamid
	return c
}

// read returns the next handshake answer, or an error after timeout.
func (r *rawCaller) read(timeout time.Duration) (*packet.CIFHandshake, error) {
	buf := make([]byte, 2048)
	if err := r.c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	for {
		n, err := r.c.Read(buf)
		if err != nil {
			return nil, err
		}
		p, err := packet.NewPacketFromData(r.c.RemoteAddr(), buf[:n])
		if err != nil || !p.Header().IsControlPacket || p.Header().ControlType != packet.CTRLTYPE_HANDSHAKE {
			continue
		}
		cif := &packet.CIFHandshake{}
		err = p.UnmarshalCIF(cif)
		p.Decommission()
		if err != nil {
			return nil, err
		}
		return cif, nil
	}
}

// induction sends an induction and returns the SYN cookie of the answer.
func (r *rawCaller) induction() uint32 {
	r.t.Helper()
	r.send(handshake(r.cif(4, packet.HSTYPE_INDUCTION, 0)))
	ans, err := r.read(5 * time.Second)
	if err != nil {
		r.t.Fatalf("no induction answer: %v", err)
	}
	if ans.HandshakeType != packet.HSTYPE_INDUCTION || ans.Version != 5 {
		r.t.Fatalf("induction answer %s v%d", ans.HandshakeType, ans.Version)
	}
	return ans.SynCookie
}

// TestHostile: one server takes each attack in turn and still admits a
// legitimate publisher (every TS byte, aligned) after each; the log says
// why callers were refused; nothing leaks.
func TestHostile(t *testing.T) {
	leakCheck(t)
	ts := tsClip(t)
	s := startServer(t, newHandler(map[string]string{"cam": "secret"}), func(s *Server) {
		s.readHook = func(payload []byte) {
			if bytes.Contains(payload, []byte("PANIC!")) {
				panic("a bug in the read loop")
			}
		}
	})
	legit := func(t *testing.T) {
		t.Helper()
		publishGoSRT(t, s, "cam", "secret", ts)
	}
	legit(t)

	t.Run("random datagrams", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		r := newRawCaller(t, s)
		for i := range 60 {
			b := make([]byte, 1+rng.IntN(1500))
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			if i%2 == 0 && len(b) >= 16 {
				// Half look like handshakes to the listener, so that they
				// reach gosrt's handshake parser.
				binary.BigEndian.PutUint16(b[0:], 0x8000)
				binary.BigEndian.PutUint32(b[12:], 0)
			}
			r.send(b)
		}
		legit(t)
	})

	t.Run("4 KiB streamid", func(t *testing.T) {
		r := newRawCaller(t, s)
		cookie := r.induction()
		// Larger than a datagram the listener reads (MSS 1500): gosrt
		// drops the truncated handshake, unanswered.
		r.send(handshake(r.conclusion(cookie, "publish:cam:"+strings.Repeat("k", 4096))))
		if ans, err := r.read(300 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("answer %v, %v; want none", ans, err)
		}
		// The largest streamid the protocol carries (512 bytes) is parsed
		// and refused on its stream name.
		r.send(handshake(r.conclusion(cookie, "publish:"+strings.Repeat("n", 504))))
		ans, err := r.read(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := gosrt.RejectionReason(ans.HandshakeType); got != gosrt.REJX_NOTFOUND {
			t.Fatalf("512-byte streamid: %s, want REJX_NOTFOUND", rejectName(got))
		}
		legit(t)
	})

	t.Run("200 inductions", func(t *testing.T) {
		r := newRawCaller(t, s)
		ind := handshake(r.cif(4, packet.HSTYPE_INDUCTION, 0))
		for range 200 {
			r.send(ind)
		}
		answers := 0
		for {
			ans, err := r.read(500 * time.Millisecond)
			if err != nil {
				break
			}
			if ans.HandshakeType != packet.HSTYPE_INDUCTION {
				t.Fatalf("answer %s", ans.HandshakeType)
			}
			answers++
		}
		t.Logf("%d of 200 inductions answered (gosrt's backlog holds 128)", answers)
		if answers == 0 {
			t.Fatal("no induction answered")
		}
		legit(t)
	})

	t.Run("v4 conclusion", func(t *testing.T) {
		r := newRawCaller(t, s)
		cookie := r.induction()
		r.send(handshake(r.cif(4, packet.HSTYPE_CONCLUSION, cookie)))
		ans, err := r.read(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := gosrt.RejectionReason(ans.HandshakeType); got != gosrt.REJX_BAD_REQUEST {
			t.Fatalf("v4 handshake: %s, want REJX_BAD_REQUEST", rejectName(got))
		}
		s.logged(t, "handshake v4 carries none: set streamid=publish:<stream>")
		legit(t)
	})

	t.Run("truncated extension", func(t *testing.T) {
		// A v5 conclusion announcing extensions with 2 bytes of one:
		// gosrt's CIF parser indexes past them and panics inside Accept2
		// (v0.11.0 packet.go), which the accept loop recovers.
		r := newRawCaller(t, s)
		b := handshake(r.cif(5, packet.HSTYPE_CONCLUSION, 0))
		binary.BigEndian.PutUint16(b[16+6:], 5) // extension field: HSREQ | SID
		r.send(append(b, 0, 1))
		s.logged(t, "recovered a panic")
		legit(t)
	})

	t.Run("panic while reading", func(t *testing.T) {
		c, err := dial(s, "publish:cam:secret", "")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		p := s.h.next(t, 5*time.Second)
		if _, err := c.Write([]byte("PANIC!")); err != nil {
			t.Fatal(err)
		}
		if err := p.wait(t, 5*time.Second); !errors.Is(err, ErrPanic) {
			t.Fatalf("session ended with %v, want ErrPanic", err)
		}
		// (The panic itself may fall in the once-a-second log limit.)
		s.logged(t, "error=\"srt: internal error: a bug in the read loop\"")
		legit(t)
	})

	t.Run("conclusion flood", func(t *testing.T) {
		// Valid handshakes from many sockets at once, all refused: the
		// pending bound and the gosrt reservations must drain.
		for i := range 50 {
			r := newRawCaller(t, s)
			r.id = uint32(i + 1)
			cookie := r.induction()
			r.send(handshake(r.conclusion(cookie, "publish:cam:wrong")))
		}
		testutil.Eventually(t, 10*time.Second, "50 refusals", func() bool {
			return strings.Count(s.logs.String(), "reject=REJX_UNAUTHORIZED") == 50
		})
		legit(t)
	})
}
