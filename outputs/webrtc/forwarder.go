package webrtc

import (
	"time"

	"github.com/pion/rtp"
)

// rtpWriter is what a forwarder writes to: a pion TrackLocalStaticRTP.
type rtpWriter interface {
	WriteRTP(p *rtp.Packet) error
}

// paddingSize is the padding carried by one probe packet: the RTP padding
// length is one octet, so 255 is the most a packet without payload can hold.
const paddingSize = 255

// forwarder sends one viewer's video and audio. It gives each viewer its own
// sequence numbers, consecutive over rung switches, drops and probe padding,
// and switches rungs only at an IDR of the target rung. The RTP timestamps
// come from the shared packets unchanged: all rungs share one base.
// It is owned by the viewer's goroutine.
type forwarder struct {
	video, audio rtpWriter
	onSwitch     func(from, to int) // called when a switch takes effect
	// onFrameSent gets the PTS and ingest time (zero when unknown) of each
	// video frame once its last packet is handed to the viewer's track.
	onFrameSent func(pts int64, ingest time.Time)

	cur, want int  // rung being sent (-1: none yet) and rung asked for
	waitKey   bool // lost frames of cur: skip to its next keyframe
	// pauseCur: stop sending cur until the switch to want; set for a move
	// down for congestion, where each further frame of cur only deepens the
	// bottleneck queue the viewer must wait through.
	pauseCur bool
	// held: the current rung's frames from its IDR on, kept while a
	// switch waits for the target's IDR of the same source frame.
	held      []*unit
	vseq      uint16
	aseq      uint16
	sentVideo bool
	lastPTS   int64  // PTS of the last video frame sent
	lastTS    uint32 // its RTP timestamp, reused by padding packets

	out rtp.Packet // header copy rewritten per packet; reused

	packets, bytes, frames, padding uint64
}

func newForwarder(video, audio rtpWriter, initial int) *forwarder {
	return &forwarder{
		video: video, audio: audio,
		cur: -1, want: initial,
		vseq: uint16(randUint32()), aseq: uint16(randUint32()),
	}
}

// setWant asks for rung r from the next IDR of r on.
func (f *forwarder) setWant(r int) { f.want, f.pauseCur = r, false }

// setWantPaused is setWant that also stops sending the current rung until
// the switch (a move down for congestion).
func (f *forwarder) setWantPaused(r int) {
	f.setWant(r)
	f.pauseCur = r != f.cur && f.cur >= 0
}

// interest is the set of rungs whose units this viewer needs: the one it
// sends and the one it waits to switch to.
func (f *forwarder) interest() uint64 {
	m := uint64(1) << uint(f.want)
	if f.cur >= 0 {
		m |= 1 << uint(f.cur)
	}
	return m
}

// onVideo forwards one video unit if it belongs to the rung being sent, and
// performs a pending switch at the target rung's IDR.
//
// Rungs are encoded in parallel, so the units of one source frame arrive in
// any order. When a switch is pending and the current rung's IDR arrives
// first, the forwarder holds it: the target rung's IDR for the same frame is
// due within milliseconds, and sending both would put two frames on one RTP
// timestamp. A larger rung can lag a smaller one by several frames (its
// encoder is slower, and a busy machine makes it worse), so the frames that
// follow the held IDR are held too, up to maxHeld: once the target's IDR
// arrives they are dropped and the target rung goes on from the same
// frame. If it does not come in time (its IDR was not aligned), the held
// frames go out late and the switch waits for the next IDR.
func (f *forwarder) onVideo(q queued) error {
	u := q.u
	if q.gap {
		f.waitKey = true
	}
	if u.rung == f.want && f.want != f.cur && u.keyframe && (!f.sentVideo || u.pts > f.lastPTS) {
		from := f.cur
		f.cur, f.held, f.waitKey, f.pauseCur = f.want, f.held[:0], false, false
		if f.onSwitch != nil {
			f.onSwitch(from, f.cur)
		}
		return f.sendVideo(u)
	}
	if u.rung != f.cur || f.pauseCur {
		return nil
	}
	switching := f.want != f.cur
	if switching && (u.keyframe || len(f.held) > 0) && len(f.held) < maxHeld {
		f.held = append(f.held, u)
		return nil
	}
	if err := f.flushHeld(); err != nil {
		return err
	}
	return f.sendVideo(u)
}

// maxHeld bounds the frames held for a switch: about 200 ms at 30 fps.
const maxHeld = 6

// flushHeld sends the held frames: the switch did not happen at them.
func (f *forwarder) flushHeld() error {
	for i, h := range f.held {
		f.held[i] = nil
		if err := f.sendVideo(h); err != nil {
			f.held = f.held[:0]
			return err
		}
	}
	f.held = f.held[:0]
	return nil
}

func (f *forwarder) sendVideo(u *unit) error {
	if f.waitKey {
		if !u.keyframe {
			return nil
		}
		f.waitKey = false
	}
	if f.sentVideo && u.pts <= f.lastPTS {
		return nil // never two frames on one timestamp, nor backwards
	}
	for _, p := range u.packets {
		f.out = *p
		f.out.SequenceNumber = f.vseq
		f.vseq++
		if err := f.video.WriteRTP(&f.out); err != nil {
			return err
		}
		f.packets++
		f.bytes += uint64(len(p.Payload))
	}
	f.frames++
	if f.onFrameSent != nil {
		f.onFrameSent(u.pts, u.ingest)
	}
	f.sentVideo, f.lastPTS = true, u.pts
	f.lastTS = u.packets[0].Timestamp
	return nil
}

// onAudio forwards one Opus packet.
func (f *forwarder) onAudio(u *unit) error {
	for _, p := range u.packets {
		f.out = *p
		f.out.SequenceNumber = f.aseq
		f.aseq++
		if err := f.audio.WriteRTP(&f.out); err != nil {
			return err
		}
		f.packets++
		f.bytes += uint64(len(p.Payload))
	}
	return nil
}

// pad sends n padding-only packets on the video SSRC. Receivers discard them
// after counting them in their transport-cc feedback, which is what lets the
// bandwidth estimator test a higher rate without changing the picture.
func (f *forwarder) pad(n int) error {
	if !f.sentVideo {
		return nil // nothing to anchor the timestamp on yet
	}
	for range n {
		f.out = rtp.Packet{Header: rtp.Header{
			Version:        2,
			Padding:        true,
			PaddingSize:    paddingSize,
			SequenceNumber: f.vseq,
			Timestamp:      f.lastTS,
		}}
		f.vseq++
		if err := f.video.WriteRTP(&f.out); err != nil {
			return err
		}
		f.padding++
	}
	return nil
}
