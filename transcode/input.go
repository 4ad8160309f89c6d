package transcode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/internal/avlog"
)

// Sentinel errors of the transcoder; match them with errors.Is.
var (
	ErrOpenInput = errors.New("cannot open input")
	ErrNoVideo   = errors.New("input has no decodable video stream")
	ErrDecode    = errors.New("input could not be decoded")
	ErrEncoder   = errors.New("encoder unavailable")
	// ErrHardwareUnsupported: the hardware is there or not, but this
	// pipeline has no route for its frames.
	ErrHardwareUnsupported = errors.New("hardware path not supported")
	ErrLadder              = errors.New("ladder does not fit the input")
)

// LavfiPrefix marks an input URL as a libavfilter source graph, e.g.
// "lavfi:testsrc2=size=1280x720:rate=30[out0];sine=frequency=440[out1]".
const LavfiPrefix = "lavfi:"

// input is an opened source: its format context and chosen streams.
type input struct {
	url         string
	fc          *astiav.FormatContext
	interrupter *astiav.IOInterrupter
	stopWatch   func() bool
	video       *astiav.Stream
	audio       *astiav.Stream // nil when the input has none
	live        bool           // network or device source: never paced
	push        *pushInput     // a pushed source (pushinput.go), else nil
	unopened    bool           // fc only holds streams: never opened, not demuxed
	clock       *inputClock    // shared by the decoders' timelines (sharedClock)
}

// sharedClock is the input's one clock: every stream's timeline maps
// through it, so a jump on one stream moves all of them.
func (in *input) sharedClock() *inputClock {
	if in.clock == nil {
		in.clock = newInputClock(in.originSeconds())
	}
	return in.clock
}

// readPacket reads the next packet, when its data entered Prism, and
// whether it is the first video keyframe after the source changed (a
// pushed stream's publisher came back).
func (in *input) readPacket(pkt *astiav.Packet) (time.Time, bool, error) {
	if in.push != nil && in.unopened {
		return in.push.readPacket(pkt)
	}
	err := in.fc.ReadFrame(pkt)
	discont := false
	if p := in.push; err == nil && p != nil && p.containerDisc && in.video != nil &&
		pkt.StreamIndex() == in.video.Index() && pkt.Flags().Has(astiav.PacketFlagKey) {
		discont, p.containerDisc = true, false
	}
	return time.Now(), discont, err
}

// pickStreams chooses the first decodable video and audio streams.
func (in *input) pickStreams() {
	for _, s := range in.fc.Streams() {
		cp := s.CodecParameters()
		switch cp.MediaType() {
		case astiav.MediaTypeVideo:
			if in.video == nil && cp.Width() > 0 && cp.Height() > 0 && astiav.FindDecoder(cp.CodecID()) != nil {
				in.video = s
			}
		case astiav.MediaTypeAudio:
			if in.audio == nil && cp.SampleRate() > 0 && astiav.FindDecoder(cp.CodecID()) != nil {
				in.audio = s
			}
		}
	}
}

// inputScheme is how Prism opens one kind of input URL.
type inputScheme struct {
	// protocols is FFmpeg's protocol_whitelist for the open and for every
	// open nested in it (HLS variant playlists, segments and keys; RTSP's
	// RTP transports; the TCP and TLS under HTTP and RTMP). Empty only for
	// lavfi, a device that opens no protocol.
	protocols string
	// network: pulled from a peer, a live source with timeouts, never
	// listening.
	network bool
}

// inputSchemes is every kind of input Prism reads, by URL scheme, and all
// that each may reach. Any other scheme (tcp, udp, rtp, concat, subfile,
// data, pipe, crypto, hls+http, ftp, ...) is refused before FFmpeg sees it.
// "crypto" is there for AES-128 HLS: the demuxer opens such a segment as
// crypto+http(s)://.
var inputSchemes = map[string]inputScheme{
	"http":  {protocols: "http,https,tcp,tls,crypto", network: true},
	"https": {protocols: "http,https,tcp,tls,crypto", network: true},
	"rtmp":  {protocols: "rtmp,rtmps,tcp,tls", network: true},
	"rtmps": {protocols: "rtmp,rtmps,tcp,tls", network: true},
	"rtsp":  {protocols: "rtsp,rtsps,rtp,srtp,udp,tcp,tls", network: true},
	"rtsps": {protocols: "rtsp,rtsps,rtp,srtp,udp,tcp,tls", network: true},
	"srt":   {protocols: "srt,udp", network: true},
	"file":  {protocols: "file"}, // a path, or a file: URL
	"lavfi": {},                  // LavfiPrefix: a device, not a protocol
}

// errListen is why an input that would wait for a peer is refused.
const errListen = "inputs are pulled: listen is not allowed"

// urlScheme returns the scheme FFmpeg picks a URL's protocol by (the
// letters, digits and "+-." before the first ":"), or "file" for a path.
func urlScheme(u string) string {
	if strings.HasPrefix(u, "subfile,") { // FFmpeg's subfile,,start,N,end,M,,:url
		return "subfile"
	}
	const schemeChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-." // FFmpeg's URL_SCHEME_CHARS
	n := strings.IndexFunc(u, func(r rune) bool { return !strings.ContainsRune(schemeChars, r) })
	if n < 0 || u[n] != ':' {
		return "file"
	}
	return u[:n]
}

// inputPolicy checks url and the caller's options against inputSchemes and
// returns the scheme's entry and the protocol_whitelist to open it with:
// the scheme's own, narrowed by a protocol_whitelist among options, never
// widened. The error is the reason for refusing the input.
func inputPolicy(url string, options map[string]string) (inputScheme, string, error) {
	scheme := urlScheme(url)
	sc, ok := inputSchemes[scheme]
	if !ok {
		if scheme == "" {
			return sc, "", errors.New("no scheme before the colon")
		}
		return sc, "", fmt.Errorf("scheme %s is not an input Prism reads", scheme)
	}
	if sc.network {
		if _, query, ok := strings.Cut(url, "?"); ok {
			for _, kv := range strings.Split(query, "&") {
				k, v, _ := strings.Cut(kv, "=")
				if listens(scheme, k, v, true) {
					return sc, "", fmt.Errorf("%s (%s in the URL)", errListen, kv)
				}
			}
		}
	}
	whitelist := sc.protocols
	for k, v := range options {
		switch lk := strings.ToLower(k); {
		case listens(scheme, lk, v, false):
			hint := ""
			if lk == "timeout" {
				hint = "; for RTMP, timeout is how long to wait for a publisher: use rw_timeout"
			}
			return sc, "", fmt.Errorf("%s (option %s=%s%s)", errListen, k, v, hint)
		case lk == "protocol_whitelist": // any spelling: AVDictionary keys ignore case
			if sc.protocols == "" {
				return sc, "", fmt.Errorf("option %s: a %s input opens no protocol", k, scheme)
			}
			whitelist = narrow(whitelist, v)
			if whitelist == "" {
				return sc, "", fmt.Errorf("option %s=%s leaves none of %s, all a %s input may use", k, v, sc.protocols, scheme)
			}
		}
	}
	return sc, whitelist, nil
}

// listens reports whether the URL query key or option k=v makes a protocol
// wait for a peer instead of dialling it: tcp, tls, http and rtmp's listen,
// rtmp_listen, listen_timeout (RTSP: implies listening), SRT's listener and
// rendezvous modes, rtsp_flags=listen, and RTMP's timeout (implies
// listening).
func listens(scheme, k, v string, inURL bool) bool {
	k, v = strings.ToLower(k), strings.ToLower(strings.TrimSpace(v))
	switch k {
	case "listen", "rtmp_listen", "listen_timeout":
		return true
	case "mode": // SRT: caller (0), listener (1), rendezvous (2)
		if inURL {
			return v == "listener" || v == "rendezvous"
		}
		return v != "caller" && v != "0"
	case "rtsp_flags": // flags: by name, or a number with 0x2 set
		return !inURL && (strings.Contains(v, "listen") || strings.ContainsAny(v, "0123456789"))
	case "timeout":
		return !inURL && (scheme == "rtmp" || scheme == "rtmps")
	}
	return false
}

// narrow returns the protocols of allowed that are also in the
// comma-separated list asked, in allowed's order.
func narrow(allowed, asked string) string {
	want := map[string]bool{}
	for _, p := range strings.Split(asked, ",") {
		want[strings.TrimSpace(p)] = true
	}
	var out []string
	for _, p := range strings.Split(allowed, ",") {
		if want[p] {
			out = append(out, p)
		}
	}
	return strings.Join(out, ",")
}

// openInput opens url and finds its video and audio streams. Blocking network
// I/O is interrupted when ctx ends. Only the schemes of inputSchemes are
// opened, each with its protocol_whitelist, and nothing that listens.
func openInput(ctx context.Context, url string, options map[string]string) (_ *input, err error) {
	sc, whitelist, perr := inputPolicy(url, options)
	if perr != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrOpenInput, url, perr)
	}
	initFFmpeg()
	in := &input{url: url, fc: astiav.AllocFormatContext(), interrupter: astiav.NewIOInterrupter()}
	if in.fc == nil {
		return nil, fmt.Errorf("%w: %s: allocating format context failed", ErrOpenInput, url)
	}
	defer func() {
		if err != nil {
			in.close()
		}
	}()
	in.fc.SetIOInterrupter(in.interrupter)
	in.stopWatch = context.AfterFunc(ctx, in.interrupter.Interrupt)

	target, format := url, (*astiav.InputFormat)(nil)
	dict := astiav.NewDictionary()
	defer dict.Free()
	switch {
	case strings.HasPrefix(url, LavfiPrefix):
		target = strings.TrimPrefix(url, LavfiPrefix)
		format = astiav.FindInputFormat("lavfi")
		if format == nil {
			return nil, fmt.Errorf("%w: %s: this FFmpeg has no lavfi input device", ErrOpenInput, url)
		}
	case sc.network:
		in.live = true
		// Give up on a silent peer instead of hanging the job (µs).
		_ = dict.Set("rw_timeout", "10000000", 0)
		// Start quickly: one second of probing finds the codecs of a live
		// stream. (The packets read while probing are kept: with
		// AVFMT_FLAG_NOBUFFER they would be lost, and with them the first
		// keyframe.)
		_ = dict.Set("analyzeduration", "1000000", 0)
	default:
		path := strings.TrimPrefix(url, "file:")
		st, serr := os.Stat(path)
		switch {
		case serr != nil:
			return nil, fmt.Errorf("%w: %s: %w", ErrOpenInput, url, unwrapPathError(serr))
		case st.IsDir():
			return nil, fmt.Errorf("%w: %s: is a directory", ErrOpenInput, url)
		case st.Size() == 0:
			return nil, fmt.Errorf("%w: %s: file is empty", ErrOpenInput, url)
		}
	}
	for k, v := range options {
		if strings.EqualFold(k, "protocol_whitelist") {
			continue // narrowed into whitelist by inputPolicy
		}
		if err := dict.Set(k, v, 0); err != nil {
			return nil, fmt.Errorf("%w: %s: option %s=%s: %w", ErrOpenInput, url, k, v, err)
		}
	}
	// Last, so that no option can replace it: an AVDictionary matches keys
	// regardless of case, FFmpeg's option lookup does not.
	if whitelist != "" {
		if err := dict.Set("protocol_whitelist", whitelist, 0); err != nil {
			return nil, fmt.Errorf("%w: %s: protocol_whitelist: %w", ErrOpenInput, url, err)
		}
	}
	var openErr error
	lines := avlog.Capture(false, func() { openErr = in.fc.OpenInput(target, format, dict) })
	if openErr != nil {
		in.fc.Free()
		in.fc = nil // OpenInput frees the context on failure
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s: %w%s", ErrOpenInput, url, openErr, detail(lines))
	}
	lines = avlog.Capture(false, func() { openErr = in.fc.FindStreamInfo(nil) })
	if openErr != nil {
		return nil, fmt.Errorf("%w: %s: reading stream information: %w%s", ErrOpenInput, url, openErr, detail(lines))
	}
	in.pickStreams()
	if in.video == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoVideo, url)
	}
	return in, nil
}

// detail formats FFmpeg's own explanation of a failure, when it gave one.
func detail(lines []string) string {
	if r := avlog.Reason(lines); r != "" {
		return " (" + r + ")"
	}
	return ""
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// frameRate returns the source video frame rate, or 30 when unknown.
func (in *input) frameRate() astiav.Rational {
	for _, r := range []astiav.Rational{in.video.AvgFrameRate(), in.video.RFrameRate(), in.fc.GuessFrameRate(in.video, nil)} {
		if r.Num() > 0 && r.Den() > 0 && r.Float64() <= 240 {
			return r
		}
	}
	return astiav.NewRational(30, 1)
}

// originSeconds is subtracted from every timestamp so outputs start near zero
// while audio and video keep their relative offset.
func (in *input) originSeconds() float64 {
	if in.unopened {
		return 0 // a pushed source is rebased by pushInput
	}
	if st := in.fc.StartTime(); st != astiav.NoPtsValue {
		return float64(st) / float64(astiav.TimeBase)
	}
	return 0
}

func (in *input) close() {
	if in.stopWatch != nil {
		in.stopWatch()
	}
	if in.push != nil {
		in.push.close()
	}
	if in.fc != nil {
		if !in.unopened {
			in.fc.CloseInput()
		}
		in.fc.Free()
		in.fc = nil
	}
	if in.push != nil {
		in.push.freeIO() // after CloseInput: the demuxer used it
	}
	if in.interrupter != nil {
		in.interrupter.Free()
		in.interrupter = nil
	}
}

// demuxedPacket is a compressed packet on its way to a decoder; the decoder
// stage owns and frees it.
type demuxedPacket struct {
	pkt    *astiav.Packet
	ingest time.Time
	// discont: the first video keyframe after the source changed; the
	// decoder marks its frame on the keyframe clock.
	discont bool
}
