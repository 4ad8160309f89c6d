package transcode

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/pipeline"
)

// encodeStage runs one encoder: frames in, packets out to the fan-out. One
// goroutine per encoder, since a codec context is not safe for concurrent use.
type encodeStage struct {
	cc        *astiav.CodecContext
	track     *pipeline.Track
	cursor    *keyframeCursor // video only
	stamps    *ingestStamps
	fanout    *pipeline.Fanout
	meter     *pipeline.RateMeter
	stats     *pipeline.StageStats
	frameDur  int64          // packet duration when the encoder gives none
	newest    *atomic.Int64  // newest PTS encoded, in track clock units
	onFirst   func()         // called after the first packet
	pkt       *astiav.Packet // reused
	sent      bool
	lastKey   int64          // PTS of the last keyframe published (video)
	keyframes *atomic.Uint64 // IDRs published (video)
}

func (e *encodeStage) run(ctx context.Context, in <-chan *astiav.Frame) error {
	e.pkt = astiav.AllocPacket()
	defer e.pkt.Free()
	for {
		var f *astiav.Frame
		var ok bool
		select {
		case f, ok = <-in:
		case <-ctx.Done():
			return nil
		}
		start := time.Now()
		if !ok {
			if err := e.cc.SendFrame(nil); err != nil && !errors.Is(err, astiav.ErrEof) {
				return fmt.Errorf("%s: flushing encoder: %w", e.track.Name, err)
			}
			return e.receive(start)
		}
		if e.cursor != nil {
			// Every rung sees every source frame and decides from the PTS
			// alone, so all rungs put their IDRs on the same source frames;
			// a capped rung then drops the frames its cap leaves out.
			keep, key := e.cursor.take(f.Pts())
			if !keep {
				f.Free()
				continue
			}
			if key {
				f.SetPictureType(astiav.PictureTypeI)
			} else {
				f.SetPictureType(astiav.PictureTypeNone)
			}
		}
		err := e.cc.SendFrame(f)
		f.Free()
		if err != nil {
			return fmt.Errorf("%s: encoding: %w", e.track.Name, err)
		}
		if err := e.receive(start); err != nil {
			return err
		}
	}
}

func (e *encodeStage) receive(start time.Time) error {
	for {
		if err := e.cc.ReceivePacket(e.pkt); err != nil {
			if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
				return nil
			}
			return fmt.Errorf("%s: encoding: %w", e.track.Name, err)
		}
		p := &pipeline.Packet{
			Track:    e.track.ID,
			Data:     e.pkt.Data(),
			PTS:      e.pkt.Pts(),
			DTS:      e.pkt.Dts(),
			Duration: e.pkt.Duration(),
			Keyframe: e.pkt.Flags().Has(astiav.PacketFlagKey),
		}
		e.pkt.Unref()
		if p.Duration <= 0 || e.cursor != nil && e.cursor.capNum != 0 {
			// A capped rung's frames carry the source frame's duration;
			// the cap's interval is nearer what it shows for.
			p.Duration = e.frameDur
		}
		if p.Keyframe && e.cursor != nil {
			if e.sent && e.cursor.clock.discontinuityIn(e.lastKey, p.PTS) {
				p.Discontinuity = true // the first IDR after the source changed
			}
			e.lastKey = p.PTS
			e.keyframes.Add(1)
		}
		p.Ingest = e.stamps.lookup(p.PTS)
		e.stats.Done(p.Ingest, time.Since(start))
		e.meter.Add(len(p.Data), time.Now())
		if p.PTS > e.newest.Load() {
			e.newest.Store(p.PTS)
		}
		e.fanout.Publish(p, e.track.Kind)
		if !e.sent {
			e.sent = true
			if e.onFirst != nil {
				e.onFirst()
			}
		}
	}
}
