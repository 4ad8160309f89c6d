package transcode

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/pipeline"
)

// TestInputPolicy is the table of what each input URL may reach, without
// FFmpeg.
func TestInputPolicy(t *testing.T) {
	for _, ca := range []struct {
		url       string
		options   map[string]string
		whitelist string // "" with refused: no whitelist (lavfi)
		refused   string // part of the reason, "" when allowed
	}{
		{url: "http://h/x.m3u8", whitelist: "http,https,tcp,tls,crypto"},
		{url: "https://h/x.m3u8?token=abc&listening=no", whitelist: "http,https,tcp,tls,crypto"},
		{url: "rtmp://h/live/x", whitelist: "rtmp,rtmps,tcp,tls"},
		{url: "rtmps://h/live/x", whitelist: "rtmp,rtmps,tcp,tls"},
		{url: "rtsp://h/x", whitelist: "rtsp,rtsps,rtp,srtp,udp,tcp,tls", options: map[string]string{"rtsp_transport": "tcp", "rtsp_flags": "prefer_tcp"}},
		{url: "rtsps://h/x", whitelist: "rtsp,rtsps,rtp,srtp,udp,tcp,tls"},
		{url: "srt://h:9000?latency=200000&mode=caller", whitelist: "srt,udp", options: map[string]string{"mode": "caller"}},
		{url: "/srv/in.mp4", whitelist: "file"},
		{url: "./clip:1.mp4", whitelist: "file"},
		{url: "file:/srv/in.mp4", whitelist: "file"},
		{url: "file:///srv/in.mp4", whitelist: "file"},
		{url: LavfiPrefix + "testsrc2"},
		// A caller's whitelist narrows, never widens; a blacklist only narrows.
		{url: "http://h/x", options: map[string]string{"protocol_whitelist": "file,http,tcp,udp,data"}, whitelist: "http,tcp"},
		{url: "http://h/x", options: map[string]string{"PROTOCOL_WHITELIST": "file,https,tls,tcp"}, whitelist: "https,tcp,tls"},
		{url: "http://h/x", options: map[string]string{"protocol_whitelist": "http,tcp,tls", "Protocol_Whitelist": "https,tcp,tls"}, whitelist: "tcp,tls"},
		{url: "/srv/in.m3u8", options: map[string]string{"protocol_whitelist": "file,http,tcp"}, whitelist: "file"},
		{url: "http://h/x", options: map[string]string{"protocol_blacklist": "crypto"}, whitelist: "http,https,tcp,tls,crypto"},
		{url: "http://h/x", options: map[string]string{"protocol_whitelist": "file,data"}, refused: "leaves none of http,https,tcp,tls,crypto"},
		{url: LavfiPrefix + "testsrc2", options: map[string]string{"protocol_whitelist": "file"}, refused: "opens no protocol"},
		// Schemes that are not inputs.
		{url: "tcp://127.0.0.1:9000", refused: "scheme tcp is not an input Prism reads"},
		{url: "udp://127.0.0.1:9000", refused: "scheme udp is not an input Prism reads"},
		{url: "rtp://127.0.0.1:9000", refused: "scheme rtp is not an input Prism reads"},
		{url: "concat:/etc/hostname|/etc/hostname", refused: "scheme concat is not"},
		{url: "subfile,,start,0,end,0,,:/etc/hostname", refused: "scheme subfile is not"},
		{url: "data:text/plain;base64,aGk=", refused: "scheme data is not"},
		{url: "pipe:0", refused: "scheme pipe is not"},
		{url: "ftp://h/x", refused: "scheme ftp is not"},
		{url: "crypto+http://h/x", refused: "scheme crypto+http is not"},
		{url: "hls+http://h/x.m3u8", refused: "scheme hls+http is not"},
		{url: "HTTP://h/x", refused: "scheme HTTP is not"},
		{url: ":x", refused: "no scheme"},
		// Listening, in the URL or in the options.
		{url: "tcp://0.0.0.0:9000?listen=1", refused: "scheme tcp is not"},
		{url: "rtmp://127.0.0.1:1935/live/x?listen=1", refused: errListen},
		{url: "rtmp://127.0.0.1:1935/live/x?listen", refused: errListen},
		{url: "http://127.0.0.1:8080/x?a=b&listen=2", refused: errListen},
		{url: "srt://127.0.0.1:9999?mode=listener", refused: errListen},
		{url: "srt://127.0.0.1:9999?mode=rendezvous", refused: errListen},
		{url: "srt://127.0.0.1:9999?listen_timeout=100", refused: errListen},
		{url: "rtmp://h/live/x", options: map[string]string{"listen": "1"}, refused: errListen},
		{url: "rtmp://h/live/x", options: map[string]string{"rtmp_listen": "1"}, refused: errListen},
		{url: "rtmp://h/live/x", options: map[string]string{"timeout": "10"}, refused: "use rw_timeout"},
		{url: "http://h/x", options: map[string]string{"timeout": "10000000"}, whitelist: "http,https,tcp,tls,crypto"},
		{url: "http://h/x", options: map[string]string{"Listen": "2"}, refused: errListen},
		{url: "srt://h:9000", options: map[string]string{"mode": "listener"}, refused: errListen},
		{url: "srt://h:9000", options: map[string]string{"mode": "1"}, refused: errListen},
		{url: "rtsp://h/x", options: map[string]string{"rtsp_flags": "+listen"}, refused: errListen},
		{url: "rtsp://h/x", options: map[string]string{"rtsp_flags": "2"}, refused: errListen},
		{url: "rtsp://h/x", options: map[string]string{"listen_timeout": "5"}, refused: errListen},
	} {
		_, wl, err := inputPolicy(ca.url, ca.options)
		switch {
		case ca.refused != "" && (err == nil || !strings.Contains(err.Error(), ca.refused)):
			t.Errorf("%s %v: got %q, %v; want refused with %q", ca.url, ca.options, wl, err, ca.refused)
		case ca.refused == "" && (err != nil || wl != ca.whitelist):
			t.Errorf("%s %v: got %q, %v; want whitelist %q", ca.url, ca.options, wl, err, ca.whitelist)
		}
	}
}

// acceptCounter is a TCP listener that counts the connections made to it.
type acceptCounter struct {
	l    net.Listener
	n    atomic.Int64
	done sync.WaitGroup
}

func newAcceptCounter(t *testing.T) *acceptCounter {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &acceptCounter{l: l}
	a.done.Add(1)
	go func() {
		defer a.done.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			a.n.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = l.Close(); a.done.Wait() })
	return a
}

func (a *acceptCounter) port() int { return a.l.Addr().(*net.TCPAddr).Port }

// TestRefusedInputs: inputs that are not pulled media are refused with
// ErrOpenInput and the reason, at once, before FFmpeg opens anything.
func TestRefusedInputs(t *testing.T) {
	peer := newAcceptCounter(t)
	tcpPort, udpPort := freeLocalPort(t, "tcp"), freeLocalPort(t, "udp")
	for _, ca := range []struct {
		input   string
		options map[string]string
		reason  string
	}{
		{fmt.Sprintf("tcp://127.0.0.1:%d", peer.port()), nil, "scheme tcp is not an input Prism reads"},
		{"tcp://0.0.0.0:9000?listen=1", nil, "scheme tcp is not an input Prism reads"},
		{fmt.Sprintf("udp://127.0.0.1:%d", udpPort), nil, "scheme udp is not an input Prism reads"},
		{"concat:/etc/hostname|/etc/hostname", nil, "scheme concat is not an input Prism reads"},
		{"subfile,,start,0,end,0,,:/etc/hostname", nil, "scheme subfile is not an input Prism reads"},
		{"data:video/mp2t;base64,AAAA", nil, "scheme data is not an input Prism reads"},
		{"pipe:0", nil, "scheme pipe is not an input Prism reads"},
		{fmt.Sprintf("ftp://127.0.0.1:%d/x", peer.port()), nil, "scheme ftp is not an input Prism reads"},
		{"rtmp://127.0.0.1:1935/live/x?listen=1", nil, errListen},
		{fmt.Sprintf("rtmp://127.0.0.1:%d/live/x?listen=1", tcpPort), nil, errListen},
		{fmt.Sprintf("rtmp://127.0.0.1:%d/live/x", tcpPort), map[string]string{"listen": "1"}, errListen},
		{fmt.Sprintf("rtmp://127.0.0.1:%d/live/x", tcpPort), map[string]string{"timeout": "30"}, errListen},
		{fmt.Sprintf("http://127.0.0.1:%d/x.m3u8", tcpPort), map[string]string{"listen": "1"}, errListen},
		{fmt.Sprintf("http://127.0.0.1:%d/x.m3u8?listen=1", tcpPort), nil, errListen},
		{"srt://127.0.0.1:9999?mode=listener", nil, errListen},
		{fmt.Sprintf("srt://127.0.0.1:%d?mode=listener", udpPort), nil, errListen},
		{fmt.Sprintf("srt://127.0.0.1:%d", udpPort), map[string]string{"mode": "listener"}, errListen},
		{fmt.Sprintf("rtsp://127.0.0.1:%d/x", tcpPort), map[string]string{"rtsp_flags": "listen"}, errListen},
		{fmt.Sprintf("http://127.0.0.1:%d/x.m3u8", peer.port()), map[string]string{"protocol_whitelist": "file"}, "leaves none of"},
	} {
		t.Run(ca.input, func(t *testing.T) {
			defer testutil.CheckGoroutines(t)()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			begin := time.Now()
			job, err := Start(ctx, Options{Input: ca.input, InputOptions: ca.options, Ladder: mustLadder(t, tinyLadder)})
			if err == nil {
				_ = job.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, ErrOpenInput) || !strings.Contains(err.Error(), ca.reason) {
				t.Fatalf("got %v, want ErrOpenInput: %s", err, ca.reason)
			}
			if d := time.Since(begin); d > time.Second {
				t.Errorf("refused after %s, not before opening", d)
			}
			t.Log(err)
		})
	}
	if n := peer.n.Load(); n != 0 {
		t.Errorf("%d connections to the TCP peer", n)
	}
	// Nothing was left listening on the ports the refused inputs named.
	if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort)); err != nil {
		t.Errorf("TCP port %d is taken: %v", tcpPort, err)
	} else {
		_ = l.Close()
	}
	if c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", udpPort)); err != nil {
		t.Errorf("UDP port %d is taken: %v", udpPort, err)
	} else {
		_ = c.Close()
	}
}

// smallLadder fits every source here, down to tiny.ts's 64x64.
const smallLadder = "name: t\nrungs:\n  - {name: a, height: 64, bitrate: 100k, preset: ultrafast}\n"

// media is what a transcode of an input gave.
type media struct {
	err    error // from Start or Wait
	frames int   // video packets
	data   [][]byte
}

func transcodeAll(t *testing.T, input string, options map[string]string) media {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job, err := Start(ctx, Options{Input: input, InputOptions: options, Ladder: mustLadder(t, smallLadder)})
	if err != nil {
		return media{err: err}
	}
	var m media
	r := job.Subscribe(pipeline.Lossless())
	for {
		p, err := r.Read(ctx)
		if err != nil {
			break
		}
		if p.Track == 0 {
			m.frames++
		}
		m.data = append(m.data, p.Data)
	}
	m.err = job.Wait()
	if ctx.Err() != nil {
		t.Fatalf("%s: still running after 30 s", input)
	}
	return m
}

// hlsFixture is a directory of media for HLS tests: a valid two-second HLS
// rendition (index.m3u8 and its segments), one MPEG-TS segment with video
// (secret.ts), the same segment AES-128 encrypted (secret-aes.ts, key in
// key.bin), a file of secret bytes (secret.txt), and tiny.ts: one 64x64
// frame in 564 bytes, small enough to go in a data: URI that FFmpeg can log.
type hlsFixture struct {
	dir    string
	ts     []byte
	tiny   []byte
	key    []byte
	iv     string // hex, as in EXT-X-KEY
	marker []byte // the content of secret.txt
}

func newHLSFixture(t *testing.T) *hlsFixture {
	t.Helper()
	f := &hlsFixture{dir: t.TempDir(), key: []byte("0123456789abcdef"), iv: "0x000102030405060708090a0b0c0d0e0f",
		marker: []byte("PRISM-SECRET-9f7c2a41d0e84b6b-MUST-NOT-LEAK")}
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=2",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "30",
		"-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod", filepath.Join(f.dir, "index.m3u8"))
	secret := filepath.Join(f.dir, "secret.ts")
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=1",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-f", "mpegts", secret)
	var err error
	if f.ts, err = os.ReadFile(secret); err != nil {
		t.Fatal(err)
	}
	f.tiny = tinyTS(t, f.dir)
	// AES-128-CBC with PKCS#7 padding, as HLS wants.
	block, _ := aes.NewCipher(f.key)
	pad := aes.BlockSize - len(f.ts)%aes.BlockSize
	enc := append(append([]byte{}, f.ts...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	iv := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(enc, enc)
	for name, b := range map[string][]byte{"secret-aes.ts": enc, "key.bin": f.key, "secret.txt": f.marker, "tiny.ts": f.tiny} {
		if err := os.WriteFile(filepath.Join(f.dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// tinyTS returns an MPEG-TS of one black 64x64 H.264 frame without x264's
// SEI and without the SDT: PAT, PMT and one video packet.
func tinyTS(t *testing.T, dir string) []byte {
	t.Helper()
	raw, stripped := filepath.Join(dir, "tiny.h264"), filepath.Join(dir, "tiny-nosei.h264")
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "color=black:size=64x64:rate=30", "-frames:v", "1",
		"-c:v", "libx264", "-preset", "ultrafast", "-f", "h264", raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, nal := range bytes.Split(b, []byte{0, 0, 1}) {
		nal = bytes.TrimRight(nal, "\x00")
		if len(nal) > 0 && nal[0]&0x1f != 6 { // not SEI
			out = append(append(out, 0, 0, 0, 1), nal...)
		}
	}
	if err := os.WriteFile(stripped, out, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := filepath.Join(dir, "tiny-sdt.ts")
	testutil.FFmpeg(t, "-f", "h264", "-i", stripped, "-c", "copy", "-f", "mpegts", ts)
	if b, err = os.ReadFile(ts); err != nil {
		t.Fatal(err)
	}
	var tiny []byte
	for i := 0; i+188 <= len(b); i += 188 {
		if pid := int(b[i+1]&0x1f)<<8 | int(b[i+2]); pid != 0x11 {
			tiny = append(tiny, b[i:i+188]...)
		}
	}
	if len(tiny) > 3*188 {
		t.Fatalf("tiny.ts is %d bytes", len(tiny))
	}
	return tiny
}

func (f *hlsFixture) path(name string) string { return filepath.Join(f.dir, name) }

// mediaPlaylist is a VOD playlist of one one-second segment at uri, after
// the lines in head (e.g. an EXT-X-KEY).
func mediaPlaylist(uri string, head ...string) string {
	h := ""
	for _, l := range head {
		h += l + "\n"
	}
	return "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n" +
		h + "#EXTINF:1.000000,\n" + uri + "\n#EXT-X-ENDLIST\n"
}

// hlsServer serves playlists by path and, below /media/, the fixture's
// files, counting every request.
type hlsServer struct {
	*httptest.Server
	requests atomic.Int64
}

func newHLSServer(t *testing.T, f *hlsFixture, playlists map[string]string, tls bool) *hlsServer {
	t.Helper()
	s := &hlsServer{}
	files := http.StripPrefix("/media/", http.FileServer(http.Dir(f.dir)))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if pl, ok := playlists[r.URL.Path]; ok {
			w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
			_, _ = w.Write([]byte(pl))
			return
		}
		files.ServeHTTP(w, r)
	})
	if tls {
		s.Server = httptest.NewTLSServer(h)
	} else {
		s.Server = httptest.NewServer(h)
	}
	t.Cleanup(func() { s.CloseClientConnections(); s.Close() })
	return s
}

// TestHLSNestedProtocols: a playlist fetched over HTTP cannot make FFmpeg
// open anything but HTTP(S): not local files, not raw TCP, not data: URIs,
// for segments, keys and variant playlists alike, even when the caller's
// options ask for more. Every segment here is real video, so a segment that
// was read would show as frames.
func TestHLSNestedProtocols(t *testing.T) {
	f := newHLSFixture(t)
	peer := newAcceptCounter(t)
	tcp := fmt.Sprintf("tcp://127.0.0.1:%d", peer.port())
	key := func(uri string) string {
		return fmt.Sprintf(`#EXT-X-KEY:METHOD=AES-128,URI="%s",IV=%s`, uri, f.iv)
	}
	// tiny.ts, not secret.ts: FFmpeg logs the URI, and go-astiav's log
	// callback formats into a 1024-byte stack buffer (see
	// TestLongURIInFFmpegLog).
	dataURI := "data:video/mp2t;base64," + base64.StdEncoding.EncodeToString(f.tiny)
	srv := newHLSServer(t, f, map[string]string{
		"/hostname.m3u8":     mediaPlaylist("file:///etc/hostname"),
		"/marker.m3u8":       mediaPlaylist("file://" + f.path("secret.txt")),
		"/file.m3u8":         mediaPlaylist("file://" + f.path("secret.ts")),
		"/path.m3u8":         mediaPlaylist(f.path("secret.ts")),
		"/tcp.m3u8":          mediaPlaylist(tcp + "/x.ts"),
		"/data.m3u8":         mediaPlaylist(dataURI),
		"/key-file.m3u8":     mediaPlaylist("/media/secret-aes.ts", key("file://"+f.path("key.bin"))),
		"/key-tcp.m3u8":      mediaPlaylist("/media/secret-aes.ts", key(tcp+"/key")),
		"/key-hostname.m3u8": mediaPlaylist("/media/secret-aes.ts", key("file:///etc/hostname")),
		"/master.m3u8": "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180\nfile://" +
			f.path("index.m3u8") + "\n",
		"/master-tcp.m3u8": "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180\n" + tcp + "/v.m3u8\n",
	}, false)
	hostname, _ := os.ReadFile("/etc/hostname")
	// The HLS demuxer's own extension filter is off: the whitelist alone
	// must stop these.
	all := map[string]string{"allowed_extensions": "ALL", "extension_picky": "0"}
	widen := map[string]string{"allowed_extensions": "ALL", "extension_picky": "0",
		"protocol_whitelist": "file,data,tcp,http,https,tls,crypto", "Protocol_Whitelist": "file,data,tcp,http,https,tls,crypto"}
	for _, ca := range []struct {
		name, playlist string
		options        map[string]string
		connects       bool // may reach the TCP peer (see below)
	}{
		{"segment file:///etc/hostname", "/hostname.m3u8", all, false},
		{"segment file: secret bytes", "/marker.m3u8", all, false},
		{"segment file: video", "/file.m3u8", nil, false},
		{"segment file: video, caller widens", "/file.m3u8", widen, false},
		{"segment local path", "/path.m3u8", all, false},
		{"segment tcp:", "/tcp.m3u8", all, false},
		{"segment tcp:, caller widens", "/tcp.m3u8", widen, false},
		{"segment data:", "/data.m3u8", all, false},
		{"segment data:, caller widens", "/data.m3u8", widen, false},
		{"key file:", "/key-file.m3u8", all, false},
		{"key file:, caller widens", "/key-file.m3u8", widen, false},
		{"key file:///etc/hostname", "/key-hostname.m3u8", all, false},
		{"key tcp:", "/key-tcp.m3u8", widen, false},
		{"variant file:", "/master.m3u8", widen, false},
		// A known gap: FFmpeg checks a variant playlist's URL against the
		// whitelist only (the HLS demuxer vets segment and key URLs
		// itself), and the whitelist must hold tcp for HTTP's own
		// connection, so tcp://host:port as a variant dials host:port,
		// as http://host:port could anyway. It yields no media.
		{"variant tcp:", "/master-tcp.m3u8", widen, true},
	} {
		t.Run(ca.name, func(t *testing.T) {
			defer testutil.CheckGoroutines(t)()
			before := peer.n.Load()
			m := transcodeAll(t, srv.URL+ca.playlist, ca.options)
			t.Logf("%d frames, %v", m.frames, m.err)
			if n := peer.n.Load() - before; n != 0 && !ca.connects {
				t.Errorf("%d connections to the TCP peer", n)
			}
			if m.frames != 0 {
				t.Errorf("%d frames from a segment that must not be opened", m.frames)
			}
			for _, d := range m.data {
				if bytes.Contains(d, f.marker) || len(hostname) >= 8 && bytes.Contains(d, hostname) {
					t.Fatal("local file content in a packet")
				}
			}
		})
	}
}

// TestLocalPlaylistStaysLocal: a playlist on disk cannot fetch over the
// network, even when the caller's options whitelist HTTP.
func TestLocalPlaylistStaysLocal(t *testing.T) {
	f := newHLSFixture(t)
	srv := newHLSServer(t, f, nil, false)
	defer testutil.CheckGoroutines(t)()
	pl := f.path("remote.m3u8")
	if err := os.WriteFile(pl, []byte(mediaPlaylist(srv.URL+"/media/secret.ts")), 0o644); err != nil {
		t.Fatal(err)
	}
	m := transcodeAll(t, pl, map[string]string{"protocol_whitelist": "file,http,tcp"})
	t.Logf("%d frames, %v", m.frames, m.err)
	if m.frames != 0 || srv.requests.Load() != 0 {
		t.Errorf("%d frames, %d HTTP requests from a local playlist", m.frames, srv.requests.Load())
	}
}

// TestAllowedInputsStillWork: what the whitelists must let through.
func TestAllowedInputsStillWork(t *testing.T) {
	f := newHLSFixture(t)
	pl := map[string]string{
		"/aes.m3u8":    mediaPlaylist("/media/secret-aes.ts", fmt.Sprintf(`#EXT-X-KEY:METHOD=AES-128,URI="/media/key.bin",IV=%s`, f.iv)),
		"/master.m3u8": "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180\nmedia/index.m3u8\n",
		"/tiny.m3u8":   mediaPlaylist("/media/tiny.ts"), // what the data: case in TestHLSNestedProtocols would give
	}
	plain, tls := newHLSServer(t, f, pl, false), newHLSServer(t, f, pl, true)
	for _, ca := range []struct {
		name, input string
		options     map[string]string
		min, max    int
	}{
		{"HLS over HTTP", plain.URL + "/media/index.m3u8", nil, 58, 60},
		{"HLS over HTTPS", tls.URL + "/media/index.m3u8", nil, 58, 60},
		{"tiny.ts over HTTP", plain.URL + "/tiny.m3u8", nil, 1, 1},
		{"AES-128 HLS over HTTP", plain.URL + "/aes.m3u8", nil, 28, 30},
		{"AES-128 HLS over HTTPS", tls.URL + "/aes.m3u8", nil, 28, 30},
		{"master playlist over HTTP", plain.URL + "/master.m3u8", nil, 58, 60},
		{"HLS, caller narrows", plain.URL + "/media/index.m3u8", map[string]string{"protocol_whitelist": "http,tcp"}, 58, 60},
		{"local HLS", f.path("index.m3u8"), nil, 58, 60},
		{"local file: URL", "file:" + f.path("secret.ts"), nil, 28, 30},
		{"lavfi", LavfiPrefix + "testsrc2=size=320x180:rate=30:duration=1", nil, 28, 30},
	} {
		t.Run(ca.name, func(t *testing.T) {
			defer testutil.CheckGoroutines(t)()
			m := transcodeAll(t, ca.input, ca.options)
			if m.err != nil || m.frames < ca.min || m.frames > ca.max {
				t.Errorf("%d frames (want %d to %d), %v", m.frames, ca.min, ca.max, m.err)
			}
		})
	}
	// The AES-128 segments were decrypted through "crypto": without it
	// they are refused.
	m := transcodeAll(t, plain.URL+"/aes.m3u8", map[string]string{"protocol_whitelist": "http,tcp"})
	if m.frames != 0 {
		t.Errorf("%d frames from AES-128 HLS with crypto off the whitelist", m.frames)
	}
}

// TestLongURIInFFmpegLog: a playlist whose segment URI is longer than
// 1 KiB makes FFmpeg log that URI ("Error when loading first segment
// '...'"). go-astiav v0.39.0's C log callback formats every message with
// vsprintf into a 1024-byte stack buffer, which such a line overruns (a
// SIGSEGV with the playlist's bytes in the registers was seen); Prism
// installs its own bounded callback (avlog.c), so the open just fails.
func TestLongURIInFFmpegLog(t *testing.T) {
	f := newHLSFixture(t)
	srv := newHLSServer(t, f, map[string]string{
		"/long.m3u8": mediaPlaylist("/media/" + strings.Repeat("A", 4096) + ".ts"),
	}, false)
	m := transcodeAll(t, srv.URL+"/long.m3u8", nil)
	if m.frames != 0 {
		t.Errorf("%d frames from a missing segment", m.frames)
	}
}
