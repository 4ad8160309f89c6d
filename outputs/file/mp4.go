// Package file is the offline output: tracks of a source written to
// fragmented MP4 files, one fragment per keyframe, for ffprobe and VOD
// packagers.
package file

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/internal/avlog"
	"github.com/prism-streaming/prism/pipeline"
)

// MP4Writer writes some tracks of a source into one fragmented MP4 file (one
// fragment per keyframe): a file ffprobe can check and a VOD packager can
// take. It reads losslessly, so it is meant for offline transcodes.
type MP4Writer struct {
	Path   string
	Tracks []pipeline.Track

	fc      *astiav.FormatContext
	streams map[int]*astiav.Stream // track ID -> stream
	clock   map[int]astiav.Rational
	pending []*pipeline.Packet // packets before the header could be written
	pkt     *astiav.Packet
	opened  bool
}

// Run writes every packet from r until it is closed, then finishes the file.
func (w *MP4Writer) Run(ctx context.Context, r *pipeline.Reader) (err error) {
	avlog.Init()
	w.pkt = astiav.AllocPacket()
	defer func() {
		if cerr := w.close(); err == nil {
			err = cerr
		}
	}()
	for {
		p, rerr := r.Read(ctx)
		if errors.Is(rerr, pipeline.ErrClosed) {
			return nil
		}
		if rerr != nil {
			return rerr
		}
		if err := w.write(p); err != nil {
			return err
		}
	}
}

func (w *MP4Writer) write(p *pipeline.Packet) error {
	if !w.opened {
		// H.264 tracks carry SPS/PPS in-band; the header needs them, so wait
		// for the first keyframe of every video track.
		w.pending = append(w.pending, p)
		extradata := map[int][]byte{}
		for _, tr := range w.Tracks {
			if tr.Kind != pipeline.KindVideo {
				continue
			}
			for _, q := range w.pending {
				if q.Track == tr.ID && q.Keyframe {
					if x, err := pipeline.AnnexBExtradata(q.Data); err == nil {
						extradata[tr.ID] = x
						break
					}
				}
			}
			if extradata[tr.ID] == nil {
				if len(w.pending) > 4096 {
					return fmt.Errorf("%s: no keyframe with SPS/PPS on track %s", w.Path, tr.Name)
				}
				return nil
			}
		}
		if err := w.open(extradata); err != nil {
			return err
		}
		pending := w.pending
		w.pending = nil
		for _, q := range pending {
			if err := w.writePacket(q); err != nil {
				return err
			}
		}
		return nil
	}
	return w.writePacket(p)
}

func (w *MP4Writer) open(extradata map[int][]byte) error {
	fc, err := astiav.AllocOutputFormatContext(nil, "mp4", w.Path)
	if err != nil {
		return fmt.Errorf("%s: %w", w.Path, err)
	}
	w.fc = fc
	w.streams = map[int]*astiav.Stream{}
	w.clock = map[int]astiav.Rational{}
	for _, tr := range w.Tracks {
		s := fc.NewStream(nil)
		cp := s.CodecParameters()
		switch tr.Kind {
		case pipeline.KindVideo:
			cp.SetMediaType(astiav.MediaTypeVideo)
			cp.SetCodecID(astiav.CodecIDH264)
			cp.SetWidth(tr.Width)
			cp.SetHeight(tr.Height)
			if err := cp.SetExtraData(extradata[tr.ID]); err != nil {
				return err
			}
			s.SetAvgFrameRate(rationalFPS(tr.FPS))
		case pipeline.KindAudio:
			cp.SetMediaType(astiav.MediaTypeAudio)
			switch tr.Codec {
			case pipeline.CodecAAC:
				cp.SetCodecID(astiav.CodecIDAac)
				cp.SetFrameSize(1024)
			case pipeline.CodecOpus:
				cp.SetCodecID(astiav.CodecIDOpus)
				cp.SetFrameSize(960)
			}
			cp.SetSampleRate(tr.SampleRate)
			if tr.Channels == 1 {
				cp.SetChannelLayout(astiav.ChannelLayoutMono)
			} else {
				cp.SetChannelLayout(astiav.ChannelLayoutStereo)
			}
			if len(tr.Extradata) > 0 {
				if err := cp.SetExtraData(tr.Extradata); err != nil {
					return err
				}
			}
		}
		s.SetTimeBase(astiav.NewRational(1, tr.ClockRate))
		w.streams[tr.ID] = s
		w.clock[tr.ID] = astiav.NewRational(1, tr.ClockRate)
	}
	if !fc.OutputFormat().Flags().Has(astiav.IOFormatFlagNofile) {
		pb, err := astiav.OpenIOContext(w.Path, astiav.NewIOContextFlags(astiav.IOContextFlagWrite), nil, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", w.Path, err)
		}
		fc.SetPb(pb)
	}
	opts := astiav.NewDictionary()
	defer opts.Free()
	// Fragmented: every keyframe starts a fragment, so the file is usable
	// while written and the fragments line up across rungs.
	_ = opts.Set("movflags", "+frag_keyframe+empty_moov+default_base_moof+delay_moov", astiav.NewDictionaryFlags())
	if err := fc.WriteHeader(opts); err != nil {
		return fmt.Errorf("%s: writing header: %w", w.Path, err)
	}
	w.opened = true
	return nil
}

func (w *MP4Writer) writePacket(p *pipeline.Packet) error {
	s, ok := w.streams[p.Track]
	if !ok {
		return nil
	}
	if err := w.pkt.FromData(p.Data); err != nil {
		return err
	}
	w.pkt.SetPts(p.PTS)
	w.pkt.SetDts(p.DTS)
	w.pkt.SetDuration(p.Duration)
	if p.Keyframe {
		w.pkt.SetFlags(w.pkt.Flags().Add(astiav.PacketFlagKey))
	}
	w.pkt.SetStreamIndex(s.Index())
	w.pkt.RescaleTs(w.clock[p.Track], s.TimeBase())
	err := w.fc.WriteInterleavedFrame(w.pkt)
	w.pkt.Unref()
	if err != nil {
		return fmt.Errorf("%s: writing packet: %w", w.Path, err)
	}
	return nil
}

func (w *MP4Writer) close() error {
	var err error
	if w.fc != nil {
		if w.opened {
			if terr := w.fc.WriteTrailer(); terr != nil {
				err = fmt.Errorf("%s: writing trailer: %w", w.Path, terr)
			}
		}
		if pb := w.fc.Pb(); pb != nil {
			_ = pb.Close()
		}
		w.fc.Free()
		w.fc = nil
	} else if len(w.pending) > 0 && err == nil {
		err = fmt.Errorf("%s: input ended before a keyframe of every video track", w.Path)
	}
	if w.pkt != nil {
		w.pkt.Free()
		w.pkt = nil
	}
	return err
}

// rationalFPS is the frame rate as a rational FFmpeg can store: integer
// rates exactly, NTSC-style rates over 1001.
func rationalFPS(f float64) astiav.Rational {
	if r := math.Round(f); math.Abs(f-r) < 1e-3 {
		return astiav.NewRational(int(r), 1)
	}
	return astiav.NewRational(int(math.Round(f*1001)), 1001)
}
