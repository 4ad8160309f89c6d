package transcode

import (
	"context"
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

var clock90k = astiav.NewRational(1, pipeline.VideoClockRate)

// runVideoDecode is the video decode stage: until in is closed or ctx ends,
// then it flushes and closes out.
func runVideoDecode(ctx context.Context, d *decoder, in <-chan demuxedPacket, out chan<- videoFrame) error {
	defer close(out)
	emit := func(f *astiav.Frame, ingest time.Time) error {
		if err := send(ctx, out, videoFrame{f: f, ingest: ingest}); err != nil {
			f.Free()
			return err
		}
		return nil
	}
	// At the end of input, the decoder's delayed frames; a live input's
	// stalls are filled (stall.go).
	return d.run(ctx, in, emit, func() error { return d.decode(nil, emit) })
}

// videoFilter is the split+scale stage: one graph, one branch per rung.
type videoFilter struct {
	rungs     []ladder.PlannedRung
	cascade   bool // scale each rung from the next larger one
	sourceFPS float64
	threads   int
	// cliFPS caps rungs with FFmpeg's fps filter at their sinks: only the
	// benchmark's CLI baseline (FFmpegArgs), which has no keyframe cursor.
	cliFPS bool
	// scaling says whether the rungs are scaled on a CUDA device.
	scaling scalingPlan
	clock   *keyframeClock
	stamps  *ingestStamps
	stats   *pipeline.StageStats
	log     *slog.Logger

	graph   *filterGraph
	srcW    int
	srcH    int
	srcFmt  astiav.PixelFormat
	initW   int // size of the first source frame: rungs were planned for it
	initH   int
	rebuild int
}

// graphString builds the filter graph for a source of w x h: decoded once,
// then per rung a scale and the pixel format the encoder takes. Every branch
// carries every source frame with its source PTS: a rung's frame-rate cap
// is applied by its encoder stage (keyframeCursor.take), after the IDR
// decision, so capped rungs start their GOPs on the same source frames.
// With cascade, each rung is scaled from the smallest larger rung
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
				// Any larger rung will do, capped or not: no branch drops frames.
				if p.OutWidth >= r.OutWidth && p.OutHeight >= r.OutHeight &&
					(parent[i] < 0 || area(j) < area(parent[i])) {
					parent[i] = j
				}
			}
		}
		consumers[parent[i]]++
		consumers[i]++ // its sink
	}
	taps := make(map[int][]string) // node -> labels to consume, one per consumer
	aspectChanged := v.initW > 0 && w*v.initH != h*v.initW
	// There is no pad_cuda in FFmpeg 7.1: a letterboxed source scales on
	// the CPU until the next rebuild.
	cuda := v.scaling.cuda && !aspectChanged
	var chains []string
	src := "in"
	if cuda {
		src = "cin"
		chains = append(chains, fmt.Sprintf("[in]format=pix_fmts=yuv420p,hwupload_cuda=device=%d[cin]", v.scaling.device))
	}
	label := func(node int) string {
		if node < 0 {
			return src
		}
		return fmt.Sprintf("r%d", node)
	}
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
		taps[-1] = []string{src}
	}
	srcFPS := v.srcFPS()
	// toSink is what turns a scaled frame into its encoder's input.
	toSink := fmt.Sprintf("format=pix_fmts=yuv420p,settb=1/%d", pipeline.VideoClockRate)
	if cuda {
		toSink = "hwdownload," + toSink
	}
	for _, i := range order {
		r := v.rungs[i]
		in := taps[parent[i]][0]
		taps[parent[i]] = taps[parent[i]][1:]
		var b strings.Builder
		fmt.Fprintf(&b, "[%s]", in)
		switch {
		case cuda:
			fmt.Fprintf(&b, "scale_cuda=w=%d:h=%d:interp_algo=bicubic:format=yuv420p", r.OutWidth, r.OutHeight)
		case aspectChanged && parent[i] < 0:
			fmt.Fprintf(&b, "scale=w=%d:h=%d:flags=bicubic:force_original_aspect_ratio=decrease:force_divisible_by=2,pad=w=%d:h=%d:x=(ow-iw)/2:y=(oh-ih)/2,",
				r.OutWidth, r.OutHeight, r.OutWidth, r.OutHeight)
		default:
			fmt.Fprintf(&b, "scale=w=%d:h=%d:flags=bicubic,", r.OutWidth, r.OutHeight)
		}
		sink := fmt.Sprintf("o%d", i)
		capped := v.cliFPS && r.OutFPS > 0 && r.OutFPS < srcFPS-0.01
		if capped {
			sink += "_all"
		}
		switch {
		case consumers[i] == 1 && cuda:
			fmt.Fprintf(&b, ",%s[%s]", toSink, sink)
			chains = append(chains, b.String())
		case consumers[i] == 1:
			fmt.Fprintf(&b, "%s[%s]", toSink, sink)
			chains = append(chains, b.String())
		case cuda:
			// The larger rungs' children scale on the GPU from the
			// GPU frame; only the rung's own sink downloads it.
			fmt.Fprintf(&b, "[%s]", label(i))
			chains = append(chains, b.String())
			dl := fmt.Sprintf("dl%d", i)
			split(i, dl)
			chains = append(chains, fmt.Sprintf("[%s]%s[%s]", dl, toSink, sink))
		default:
			fmt.Fprintf(&b, "%s[%s]", toSink, label(i))
			chains = append(chains, b.String())
			split(i, sink)
		}
		if capped {
			chains = append(chains, fmt.Sprintf("[%s]fps=fps=%s[o%d]", sink, fpsString(r.OutFPS), i))
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
	desc := v.graphString(w, h)
	g, err := newFilterGraph(desc, params, len(v.rungs), false, v.threads)
	if err != nil {
		return err
	}
	v.graph = g
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
	var start time.Time
	emit := func(i int, f *astiav.Frame) error {
		if i == 0 {
			v.stats.Done(v.stamps.lookup(f.Pts()), time.Since(start))
		}
		if err := send(ctx, outs[i], f); err != nil {
			f.Free()
			return err
		}
		return nil
	}
	return consume(ctx, in, func(vf videoFrame, ok bool) error {
		start = time.Now()
		if !ok {
			if v.graph == nil {
				return nil
			}
			return v.graph.push(nil, emit)
		}
		f := vf.f
		if v.graph == nil || f.Width() != v.srcW || f.Height() != v.srcH || f.PixelFormat() != v.srcFmt {
			if v.graph != nil {
				// The source changed resolution: flush what the old graph holds,
				// then carry on with a new graph scaling to the same rung sizes.
				v.log.Warn("source resolution changed, rebuilding filter graph",
					"from", fmt.Sprintf("%dx%d", v.srcW, v.srcH), "to", fmt.Sprintf("%dx%d", f.Width(), f.Height()))
				if err := v.graph.push(nil, emit); err != nil {
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
		return v.graph.push(f, emit)
	})
}

func (v *videoFilter) free() {
	v.graph.free()
	v.graph = nil
}
