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
	ErrLadder    = errors.New("ladder does not fit the input")
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
}

func isNetworkURL(u string) bool {
	for _, p := range []string{"rtmp://", "rtmps://", "rtsp://", "rtsps://", "srt://", "udp://", "tcp://", "http://", "https://"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

// openInput opens url and finds its video and audio streams. Blocking network
// I/O is interrupted when ctx ends.
func openInput(ctx context.Context, url string, options map[string]string) (_ *input, err error) {
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
	case isNetworkURL(url):
		in.live = true
		// Give up on a silent peer instead of hanging the job (µs).
		_ = dict.Set("rw_timeout", "10000000", 0)
		// Start quickly: one second of probing finds the codecs of a live
		// stream. (The packets read while probing are kept: with
		// AVFMT_FLAG_NOBUFFER they would be lost, and with them the first
		// keyframe.)
		_ = dict.Set("analyzeduration", "1000000", 0)
	case strings.Contains(url, "://"):
		// Some other protocol: FFmpeg knows it, or says it does not.
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
		if err := dict.Set(k, v, 0); err != nil {
			return nil, fmt.Errorf("%w: %s: option %s=%s: %w", ErrOpenInput, url, k, v, err)
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
	if st := in.fc.StartTime(); st != astiav.NoPtsValue {
		return float64(st) / float64(astiav.TimeBase)
	}
	return 0
}

func (in *input) close() {
	if in.stopWatch != nil {
		in.stopWatch()
	}
	if in.fc != nil {
		in.fc.CloseInput()
		in.fc.Free()
		in.fc = nil
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
}
