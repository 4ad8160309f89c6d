package transcode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// videoFrame is a decoded or filtered frame handed between stages; the
// receiving stage owns and frees it.
type videoFrame struct {
	f      *astiav.Frame
	ingest time.Time
}

// videoDecoder is the decode stage: compressed packets in, frames in 90 kHz
// PTS out, strictly increasing.
type videoDecoder struct {
	cc       *astiav.CodecContext
	tb       astiav.Rational
	timeline *timeline
	pending  map[int64]time.Time // packet PTS -> ingest time, until its frame is out
	limit    int64               // drop frames at or after this PTS (0: none)
	stats    *pipeline.StageStats
	log      *slog.Logger
	errs     int
	decoded  uint64
}

func newVideoDecoder(in *input, threads int, stats *pipeline.StageStats, log *slog.Logger) (*videoDecoder, error) {
	cp := in.video.CodecParameters()
	codec := astiav.FindDecoder(cp.CodecID())
	if codec == nil {
		return nil, fmt.Errorf("%w: no decoder for %s", ErrNoVideo, cp.CodecID())
	}
	cc := astiav.AllocCodecContext(codec)
	if err := cp.ToCodecContext(cc); err != nil {
		cc.Free()
		return nil, fmt.Errorf("%w: %v", ErrNoVideo, err)
	}
	cc.SetTimeBase(in.video.TimeBase())
	cc.SetThreadCount(threads)
	if err := cc.Open(codec, nil); err != nil {
		cc.Free()
		return nil, fmt.Errorf("%w: opening %s decoder: %v", ErrNoVideo, codec.Name(), err)
	}
	fr := in.frameRate()
	frameDur := int64(float64(pipeline.VideoClockRate) / fr.Float64())
	return &videoDecoder{
		cc:       cc,
		tb:       in.video.TimeBase(),
		timeline: newTimeline(pipeline.VideoClockRate, in.originSeconds(), frameDur),
		pending:  make(map[int64]time.Time),
		stats:    stats,
		log:      log,
	}, nil
}

var clock90k = astiav.NewRational(1, pipeline.VideoClockRate)

// run decodes until in is closed or ctx ends, then flushes and closes out.
func (d *videoDecoder) run(ctx context.Context, in <-chan demuxedPacket, out chan<- videoFrame) error {
	defer close(out)
	for {
		var dp demuxedPacket
		var ok bool
		select {
		case dp, ok = <-in:
		case <-ctx.Done():
			return nil
		}
		start := time.Now()
		if !ok {
			// End of input: flush the decoder's delayed frames.
			_ = d.cc.SendPacket(nil)
			return d.receive(ctx, out, start)
		}
		if pts := dp.pkt.Pts(); pts != astiav.NoPtsValue {
			if len(d.pending) > 512 { // frames that never came out; don't grow
				clear(d.pending)
			}
			d.pending[pts] = dp.ingest
		}
		err := d.cc.SendPacket(dp.pkt)
		dp.pkt.Free()
		if err != nil && !errors.Is(err, astiav.ErrEagain) {
			d.decodeError(err)
			continue
		}
		if err := d.receive(ctx, out, start); err != nil {
			return err
		}
	}
}

func (d *videoDecoder) decodeError(err error) {
	d.errs++
	d.stats.Drop()
	if d.errs <= 3 || d.errs%100 == 0 {
		d.log.Warn("video decode error", "error", err, "count", d.errs)
	}
}

func (d *videoDecoder) receive(ctx context.Context, out chan<- videoFrame, start time.Time) error {
	for {
		f := astiav.AllocFrame()
		if err := d.cc.ReceiveFrame(f); err != nil {
			f.Free()
			if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
				return nil
			}
			d.decodeError(err)
			return nil
		}
		raw := f.Pts()
		if raw == astiav.NoPtsValue {
			raw = f.PktDts()
		}
		if raw == astiav.NoPtsValue {
			f.Free()
			d.stats.Drop()
			continue
		}
		ingest, found := d.pending[raw]
		if found {
			delete(d.pending, raw)
		} else {
			ingest = time.Now()
		}
		pts, ok := d.timeline.next(astiav.RescaleQ(raw, d.tb, clock90k))
		if !ok || (d.limit > 0 && pts >= d.limit) {
			f.Free()
			d.stats.Drop()
			continue
		}
		f.SetPts(pts)
		d.decoded++
		d.stats.Done(ingest, time.Since(start))
		select {
		case out <- videoFrame{f: f, ingest: ingest}:
		case <-ctx.Done():
			f.Free()
			return nil
		}
	}
}

func (d *videoDecoder) close() {
	if d.cc != nil {
		d.cc.Free()
		d.cc = nil
	}
}

// videoFilter is the split+scale stage: one graph, one branch per rung.
type videoFilter struct {
	rungs     []ladder.PlannedRung
	cascade   bool // scale each rung from the next larger one
	sourceFPS float64
	threads   int
	clock     *keyframeClock
	stamps    *ingestStamps
	stats     *pipeline.StageStats
	log       *slog.Logger

	graph   *astiav.FilterGraph
	src     *astiav.BuffersrcFilterContext
	sinks   []*astiav.BuffersinkFilterContext
	srcW    int
	srcH    int
	srcFmt  astiav.PixelFormat
	initW   int // size of the first source frame: rungs were planned for it
	initH   int
	rebuild int
}

// graphString builds the filter graph for a source of w x h: decoded once,
// then per rung an optional fps cap, a scale and the pixel format the encoder
// takes. With cascade, each rung is scaled from the smallest larger rung
// (1080p -> 720p -> 480p ...) instead of from the source: the same bicubic
// scaler on fewer input pixels, which is most of the CPU a ladder spends
// outside the encoders. A source whose aspect differs from the one the
// ladder was planned for (a mid-stream resolution change) is letterboxed,
// not stretched.
func (v *videoFilter) graphString(w, h int) string {
	n := len(v.rungs)
	area := func(i int) int { return v.rungs[i].OutWidth * v.rungs[i].OutHeight }
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return area(order[a]) > area(order[b]) })

	// parent[i] is the node rung i is scaled from: -1 for the source.
	parent := make([]int, n)
	consumers := make(map[int]int) // node -> number of consumers; rung nodes also feed their sink
	for k, i := range order {
		r := v.rungs[i]
		parent[i] = -1
		if v.cascade {
			for _, j := range order[:k] {
				p := v.rungs[j]
				if p.OutWidth >= r.OutWidth && p.OutHeight >= r.OutHeight && p.OutFPS >= r.OutFPS-0.01 &&
					(parent[i] < 0 || area(j) < area(parent[i])) {
					parent[i] = j
				}
			}
		}
		consumers[parent[i]]++
		consumers[i]++ // its sink
	}
	taps := make(map[int][]string) // node -> labels to consume, one per consumer
	label := func(node int) string {
		if node < 0 {
			return "in"
		}
		return fmt.Sprintf("r%d", node)
	}
	var chains []string
	split := func(node int, first string) {
		c := consumers[node]
		if c == 1 {
			return
		}
		outs := make([]string, 0, c)
		if first != "" {
			outs = append(outs, first)
		}
		for len(outs) < c {
			outs = append(outs, fmt.Sprintf("%s_%d", label(node), len(outs)))
		}
		s := fmt.Sprintf("[%s]split=%d", label(node), c)
		for _, o := range outs {
			s += "[" + o + "]"
		}
		chains = append(chains, s)
		if first != "" {
			outs = outs[1:]
		}
		taps[node] = outs
	}
	split(-1, "")
	if consumers[-1] == 1 {
		taps[-1] = []string{"in"}
	}
	aspectChanged := v.initW > 0 && w*v.initH != h*v.initW
	srcFPS := v.srcFPS()
	for _, i := range order {
		r := v.rungs[i]
		in := taps[parent[i]][0]
		taps[parent[i]] = taps[parent[i]][1:]
		var b strings.Builder
		fmt.Fprintf(&b, "[%s]", in)
		from := srcFPS
		if parent[i] >= 0 {
			from = v.rungs[parent[i]].OutFPS
		}
		if r.OutFPS > 0 && r.OutFPS < from-0.01 {
			fmt.Fprintf(&b, "fps=fps=%s,", fpsString(r.OutFPS))
		}
		if aspectChanged && parent[i] < 0 {
			fmt.Fprintf(&b, "scale=w=%d:h=%d:flags=bicubic:force_original_aspect_ratio=decrease:force_divisible_by=2,pad=w=%d:h=%d:x=(ow-iw)/2:y=(oh-ih)/2,",
				r.OutWidth, r.OutHeight, r.OutWidth, r.OutHeight)
		} else {
			fmt.Fprintf(&b, "scale=w=%d:h=%d:flags=bicubic,", r.OutWidth, r.OutHeight)
		}
		fmt.Fprintf(&b, "format=pix_fmts=yuv420p,settb=1/%d", pipeline.VideoClockRate)
		if consumers[i] == 1 {
			fmt.Fprintf(&b, "[o%d]", i)
			chains = append(chains, b.String())
		} else {
			fmt.Fprintf(&b, "[%s]", label(i))
			chains = append(chains, b.String())
			split(i, fmt.Sprintf("o%d", i))
		}
	}
	return strings.Join(chains, ";")
}

// srcFPS is the source frame rate (or, when unknown, the highest rung's).
func (v *videoFilter) srcFPS() float64 {
	if v.sourceFPS > 0 {
		return v.sourceFPS
	}
	m := 0.0
	for _, r := range v.rungs {
		if r.OutFPS > m {
			m = r.OutFPS
		}
	}
	return m
}

// fpsString formats a frame rate exactly for FFmpeg: "30", "30000/1001".
func fpsString(f float64) string {
	if r := math.Round(f); math.Abs(f-r) < 1e-3 {
		return fmt.Sprintf("%d", int(r))
	}
	if r := math.Round(f * 1.001); math.Abs(f*1.001-r) < 1e-3 {
		return fmt.Sprintf("%d/1001", int(r)*1000)
	}
	return fmt.Sprintf("%.3f", f)
}

func (v *videoFilter) build(f *astiav.Frame) error {
	v.free()
	w, h, pf := f.Width(), f.Height(), f.PixelFormat()
	if v.initW == 0 {
		v.initW, v.initH = w, h
	}
	g := astiav.AllocFilterGraph()
	if g == nil {
		return errors.New("allocating filter graph failed")
	}
	v.graph = g
	g.SetThreadCount(v.threads)
	src, err := g.NewBuffersrcFilterContext(astiav.FindFilterByName("buffer"), "in")
	if err != nil {
		return fmt.Errorf("creating buffer source: %w", err)
	}
	v.src = src
	params := astiav.AllocBuffersrcFilterContextParameters()
	defer params.Free()
	params.SetWidth(w)
	params.SetHeight(h)
	params.SetPixelFormat(pf)
	params.SetTimeBase(clock90k)
	sar := f.SampleAspectRatio()
	if sar.Num() <= 0 {
		sar = astiav.NewRational(1, 1)
	}
	params.SetSampleAspectRatio(sar)
	params.SetColorRange(f.ColorRange())
	params.SetColorSpace(f.ColorSpace())
	if err := src.SetParameters(params); err != nil {
		return fmt.Errorf("setting buffer source parameters: %w", err)
	}
	if err := src.Initialize(nil); err != nil {
		return fmt.Errorf("initializing buffer source: %w", err)
	}
	outputs := astiav.AllocFilterInOut()
	outputs.SetName("in")
	outputs.SetFilterContext(src.FilterContext())
	outputs.SetPadIdx(0)
	var inputs, prev *astiav.FilterInOut
	v.sinks = v.sinks[:0]
	for i := range v.rungs {
		sink, err := g.NewBuffersinkFilterContext(astiav.FindFilterByName("buffersink"), fmt.Sprintf("o%d", i))
		if err != nil {
			outputs.Free()
			if inputs != nil {
				inputs.Free()
			}
			return fmt.Errorf("creating buffer sink: %w", err)
		}
		v.sinks = append(v.sinks, sink)
		io := astiav.AllocFilterInOut()
		io.SetName(fmt.Sprintf("o%d", i))
		io.SetFilterContext(sink.FilterContext())
		io.SetPadIdx(0)
		if prev == nil {
			inputs = io
		} else {
			prev.SetNext(io)
		}
		prev = io
	}
	desc := v.graphString(w, h)
	err = g.Parse(desc, inputs, outputs)
	// Parse consumes the lists it links; free what is left of the heads only.
	inputs.Free()
	outputs.Free()
	if err != nil {
		return fmt.Errorf("parsing filter graph %q: %w", desc, err)
	}
	if err := g.Configure(); err != nil {
		return fmt.Errorf("configuring filter graph %q: %w", desc, err)
	}
	v.srcW, v.srcH, v.srcFmt = w, h, pf
	v.log.Debug("video filter graph", "graph", desc)
	return nil
}

// run filters until in is closed or ctx ends, then flushes and closes every
// output.
func (v *videoFilter) run(ctx context.Context, in <-chan videoFrame, outs []chan *astiav.Frame) error {
	defer func() {
		for _, o := range outs {
			close(o)
		}
	}()
	for {
		var vf videoFrame
		var ok bool
		select {
		case vf, ok = <-in:
		case <-ctx.Done():
			return nil
		}
		start := time.Now()
		if !ok {
			if v.graph == nil {
				return nil
			}
			if err := v.src.AddFrame(nil, astiav.NewBuffersrcFlags()); err != nil && !errors.Is(err, astiav.ErrEof) {
				return fmt.Errorf("flushing filter graph: %w", err)
			}
			return v.drain(ctx, outs, start)
		}
		f := vf.f
		if v.graph == nil || f.Width() != v.srcW || f.Height() != v.srcH || f.PixelFormat() != v.srcFmt {
			if v.graph != nil {
				// The source changed resolution: flush what the old graph holds,
				// then carry on with a new graph scaling to the same rung sizes.
				v.log.Warn("source resolution changed, rebuilding filter graph",
					"from", fmt.Sprintf("%dx%d", v.srcW, v.srcH), "to", fmt.Sprintf("%dx%d", f.Width(), f.Height()))
				_ = v.src.AddFrame(nil, astiav.NewBuffersrcFlags())
				if err := v.drain(ctx, outs, start); err != nil {
					f.Free()
					return err
				}
				v.rebuild++
			}
			if err := v.build(f); err != nil {
				f.Free()
				return err
			}
		}
		v.clock.observe(f.Pts())
		v.stamps.add(f.Pts(), vf.ingest)
		err := v.src.AddFrame(f, astiav.NewBuffersrcFlags())
		f.Free()
		if err != nil {
			return fmt.Errorf("feeding filter graph: %w", err)
		}
		if err := v.drain(ctx, outs, start); err != nil {
			return err
		}
	}
}

// drain pulls every ready frame from every sink and hands it to its rung.
func (v *videoFilter) drain(ctx context.Context, outs []chan *astiav.Frame, start time.Time) error {
	for i, sink := range v.sinks {
		for {
			f := astiav.AllocFrame()
			err := sink.GetFrame(f, astiav.NewBuffersinkFlags())
			if err != nil {
				f.Free()
				if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
					break
				}
				return fmt.Errorf("reading filter graph: %w", err)
			}
			if i == 0 {
				v.stats.Done(v.stamps.lookup(f.Pts()), time.Since(start))
			}
			select {
			case outs[i] <- f:
			case <-ctx.Done():
				f.Free()
				return nil
			}
		}
	}
	return nil
}

func (v *videoFilter) free() {
	if v.graph != nil {
		v.graph.Free()
		v.graph = nil
		v.src = nil
		v.sinks = v.sinks[:0]
	}
}
