package rtmp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"

	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"rtmp://h/live/cam?key=k", "rtmp://h:1935/live/cam?token=t&x=1", "rtmp://h/live//cam",
		"rtmp://h/live/cam?key=a&token=b", "rtmp://h/app/cam", "rtmp://h/live/%00", "rtmps://h/live/c-m_1?key=%zz",
		"rtmp://h/live/cam/extra?key=k", "rtmp://[::1]/live/a?key=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		stream, key, q, err := ParseURL(u)
		if err != nil {
			if !errors.Is(err, ingest.ErrNotFound) && !errors.Is(err, ingest.ErrUnauthorized) {
				t.Fatalf("ParseURL(%q): %v wraps no refusal", s, err)
			}
			if key != "" {
				t.Fatalf("ParseURL(%q) returned a key with an error", s)
			}
			return
		}
		if !pipeline.ValidName(stream) {
			t.Fatalf("ParseURL(%q) accepted stream %q", s, stream)
		}
		if q.Has("key") || q.Has("token") {
			t.Fatalf("ParseURL(%q) left the credential in the query", s)
		}
	})
}

func FuzzAccessUnit(f *testing.F) {
	f.Add([]byte("\x67\x64\x00\x1f\x00\x00\x01\x68\xee\x00\x00\x01\x65\x88"), false)
	f.Add([]byte("\x09\xf0\x00\x00\x01\x65\x88"), false)
	f.Add([]byte("\x46\x01\x00\x00\x01\x40\x01\x00\x00\x01\x42\x01\x00\x00\x01\x44\x01\x00\x00\x01\x26\x01"), true)
	f.Add([]byte("\x02\x01\x00\x00\x01\x00\x00\x01"), true)
	f.Fuzz(func(t *testing.T, data []byte, hevc bool) {
		w := &videoWriter{hevc: hevc}
		params := [][]byte{{0x67}, {0x68}}
		if hevc {
			params = [][]byte{{0x40, 1}, {0x42, 1}, {0x44, 1}}
		}
		for _, p := range params {
			w.setParam(p)
		}
		au := bytes.Split(data, []byte{0, 0, 1})
		out, key, ok := w.accessUnit(au)
		if !ok {
			return
		}
		found := 0
		for _, n := range out {
			if len(n) == 0 {
				t.Fatal("an empty NALU in the output")
			}
			if w.isParam(w.nalType(n)) {
				found++
			}
		}
		if key && found != len(params) {
			t.Fatalf("a keyframe with %d parameter sets, want %d: %x", found, params, out)
		}
	})
}

func FuzzMetadataFPS(f *testing.F) {
	for _, d := range []amf0.Data{
		{"@setDataFrame", "onMetaData", amf0.ECMAArray{{Key: "framerate", Value: float64(30)}}},
		{"onMetaData", amf0.Object{{Key: "videoframerate", Value: float64(59.94)}}},
		{"onMetaData"},
	} {
		b, err := d.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := amf0.Unmarshal(b)
		if err != nil {
			return
		}
		if fps := metadataFPS(d); fps < 0 || fps > 1000 {
			t.Fatalf("fps %v", fps)
		}
	})
}

// FuzzConn feeds bytes as a whole client connection into one connection
// handler, over net.Pipe: no panic (serve does not recover), and an
// admitted session always ends.
func FuzzConn(f *testing.F) {
	for _, tracks := range [][]*gortmplib.Track{
		{{Codec: &codecs.H264{SPS: testSPS, PPS: testPPS}}, {Codec: &codecs.MPEG4Audio{Config: testAAC}}},
		{{Codec: &codecs.AV1{}}, {Codec: &codecs.Opus{IDHeader: &opus.IDHeader{ChannelCount: 2}}}},
		{{Codec: &codecs.MPEG4Audio{Config: testAAC}}},
	} {
		f.Add(clientSession(f, tracks, 3))
	}
	f.Add(clientSession(f, nil, 0))
	f.Add([]byte{3})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := serveBytes(data)
		if c.sess != nil {
			select {
			case <-c.sess.Done():
			default:
				t.Fatal("an admitted session was not ended")
			}
			if tr := c.sess.Tracks(); tr != nil && tr[0].Kind != pipeline.KindVideo {
				t.Fatalf("first track %+v", tr[0])
			}
		}
	})
}

// TestFuzzSeeds: FuzzConn's seeds go all the way to the media.
func TestFuzzSeeds(t *testing.T) {
	c := serveBytes(clientSession(t, []*gortmplib.Track{
		{Codec: &codecs.H264{SPS: testSPS, PPS: testPPS}}, {Codec: &codecs.MPEG4Audio{Config: testAAC}},
	}, 3))
	if c.sess == nil || len(c.sess.Tracks()) != 2 || c.sess.Err() != nil || c.sess.Counters().Packets < 200 {
		t.Fatalf("the seed did not publish: %+v", c.sess)
	}
	if c.sess.Request.Query.Get("x") != "1" || c.sess.Request.Key != "k" {
		t.Fatalf("request %+v", c.sess.Request)
	}
}

// serveBytes runs one connection handler on data as the client's bytes.
func serveBytes(data []byte) *conn {
	s := &Server{
		Handler: ingest.HandlerFunc(func(_ context.Context, req ingest.Request) (*ingest.Session, error) {
			return ingest.NewSession(req), nil
		}),
		Log:              slog.New(slog.DiscardHandler),
		HandshakeTimeout: 300 * time.Millisecond,
		ReadTimeout:      300 * time.Millisecond,
		MaxAnalyzeBytes:  1 << 20,
		RefusalDelay:     func() time.Duration { return 0 },
	}
	s.setDefaults()
	defer s.cancel()
	// Two pipes, so that the client's end of data is an EOF for the
	// server while the server can still write its answers.
	in, inServer := net.Pipe()
	outServer, out := net.Pipe()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() {
		defer wg.Done()
		_, _ = in.Write(data)
		in.Close()
	}()
	c := newConn(s, duplex{r: inServer, w: outServer})
	c.serve()
	inServer.Close()
	outServer.Close()
	wg.Wait()
	return c
}

// clientSession is what a publisher sends: handshake, connect,
// createStream, publish, the tracks and seconds of media, deleteStream.
func clientSession(f testing.TB, tracks []*gortmplib.Track, seconds int) []byte {
	var buf bytes.Buffer
	buf.WriteByte(3)
	buf.Write(make([]byte, 2*1536)) // C1, C2 (not checked)
	bc := bytecounter.NewWriter(&buf)
	mw := message.NewWriter(bc, bc, false)
	for _, m := range []message.Message{
		&message.SetChunkSize{Value: 4096},
		&message.CommandAMF0{ChunkStreamID: 3, Name: "connect", CommandID: 1, Arguments: []any{amf0.Object{
			{Key: "app", Value: "live"}, {Key: "tcUrl", Value: "rtmp://127.0.0.1/live"}, {Key: "flashVer", Value: "FMLE/3.0"},
		}}},
		&message.CommandAMF0{ChunkStreamID: 3, Name: "createStream", CommandID: 2, Arguments: []any{nil}},
		&message.CommandAMF0{ChunkStreamID: 8, MessageStreamID: 0x1000000, Name: "publish", CommandID: 3,
			Arguments: []any{nil, "cam?key=k&x=1", "live"}},
	} {
		if err := mw.Write(m); err != nil {
			f.Fatal(err)
		}
	}
	if tracks != nil {
		w := &gortmplib.Writer{Conn: writeConn{mw}, Tracks: tracks}
		if err := w.Initialize(); err != nil {
			f.Fatal(err)
		}
		if err := writeSynthetic(w, seconds); err != nil {
			f.Fatal(err)
		}
	}
	if err := mw.Write(&message.CommandAMF0{ChunkStreamID: 3, Name: "deleteStream", CommandID: 4, Arguments: []any{nil, float64(1)}}); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}

// duplex is a net.Conn reading from one pipe and writing to another.
type duplex struct{ r, w net.Conn }

func (d duplex) Read(b []byte) (int, error)  { return d.r.Read(b) }
func (d duplex) Write(b []byte) (int, error) { return d.w.Write(b) }
func (d duplex) Close() error {
	d.r.Close()
	return d.w.Close()
}
func (d duplex) LocalAddr() net.Addr                { return d.r.LocalAddr() }
func (d duplex) RemoteAddr() net.Addr               { return d.r.RemoteAddr() }
func (d duplex) SetReadDeadline(t time.Time) error  { return d.r.SetReadDeadline(t) }
func (d duplex) SetWriteDeadline(t time.Time) error { return d.w.SetWriteDeadline(t) }
func (d duplex) SetDeadline(t time.Time) error {
	_ = d.r.SetDeadline(t)
	return d.w.SetDeadline(t)
}

// writeConn is a gortmplib.Conn that only writes, into a message.Writer.
type writeConn struct{ w *message.Writer }

func (writeConn) BytesReceived() uint64           { return 0 }
func (writeConn) BytesSent() uint64               { return 0 }
func (writeConn) Read() (message.Message, error)  { return nil, io.EOF }
func (c writeConn) Write(m message.Message) error { return c.w.Write(m) }
