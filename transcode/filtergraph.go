package transcode

import (
	"errors"
	"fmt"

	"github.com/asticode/go-astiav"
)

// filterGraph is a configured libavfilter graph with one source ("in") and
// sinks named o0, o1, ... as the graph description labels them.
type filterGraph struct {
	graph *astiav.FilterGraph
	src   *astiav.BuffersrcFilterContext
	sinks []*astiav.BuffersinkFilterContext
}

// newFilterGraph builds desc between a source with params and n sinks.
// audio selects abuffer/abuffersink over buffer/buffersink.
func newFilterGraph(desc string, params *astiav.BuffersrcFilterContextParameters, n int, audio bool, threads int) (_ *filterGraph, err error) {
	srcName, sinkName := "buffer", "buffersink"
	if audio {
		srcName, sinkName = "abuffer", "abuffersink"
	}
	fg := &filterGraph{graph: astiav.AllocFilterGraph()}
	if fg.graph == nil {
		return nil, errors.New("allocating filter graph failed")
	}
	defer func() {
		if err != nil {
			fg.free()
		}
	}()
	if threads > 0 {
		fg.graph.SetThreadCount(threads)
	}
	if fg.src, err = fg.graph.NewBuffersrcFilterContext(astiav.FindFilterByName(srcName), "in"); err != nil {
		return nil, fmt.Errorf("creating %s: %w", srcName, err)
	}
	if err := fg.src.SetParameters(params); err != nil {
		return nil, fmt.Errorf("setting %s parameters: %w", srcName, err)
	}
	if err := fg.src.Initialize(nil); err != nil {
		return nil, fmt.Errorf("initializing %s: %w", srcName, err)
	}
	outputs := astiav.AllocFilterInOut()
	outputs.SetName("in")
	outputs.SetFilterContext(fg.src.FilterContext())
	outputs.SetPadIdx(0)
	var inputs, prev *astiav.FilterInOut
	for i := 0; i < n; i++ {
		sink, err := fg.graph.NewBuffersinkFilterContext(astiav.FindFilterByName(sinkName), fmt.Sprintf("o%d", i))
		if err != nil {
			outputs.Free()
			if inputs != nil {
				inputs.Free()
			}
			return nil, fmt.Errorf("creating %s: %w", sinkName, err)
		}
		fg.sinks = append(fg.sinks, sink)
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
	err = fg.graph.Parse(desc, inputs, outputs)
	// Parse consumes the lists it links; free what is left of the heads only.
	inputs.Free()
	outputs.Free()
	if err != nil {
		return nil, fmt.Errorf("parsing filter graph %q: %w", desc, err)
	}
	if err := fg.graph.Configure(); err != nil {
		return nil, fmt.Errorf("configuring filter graph %q: %w", desc, err)
	}
	return fg, nil
}

// push adds a frame (nil: end of stream) and hands every frame now ready at
// any sink to emit, which then owns it.
func (fg *filterGraph) push(f *astiav.Frame, emit func(sink int, f *astiav.Frame) error) error {
	var err error
	if f == nil {
		err = fg.src.AddFrame(nil, astiav.NewBuffersrcFlags())
	} else {
		err = fg.src.AddFrame(f, astiav.NewBuffersrcFlags())
		f.Free()
	}
	if err != nil && !errors.Is(err, astiav.ErrEof) {
		return fmt.Errorf("feeding filter graph: %w", err)
	}
	for i, sink := range fg.sinks {
		for {
			out := astiav.AllocFrame()
			if err := sink.GetFrame(out, astiav.NewBuffersinkFlags()); err != nil {
				out.Free()
				if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
					break
				}
				return fmt.Errorf("reading filter graph: %w", err)
			}
			if err := emit(i, out); err != nil {
				return err
			}
		}
	}
	return nil
}

func (fg *filterGraph) free() {
	if fg != nil && fg.graph != nil {
		fg.graph.Free()
		fg.graph = nil
	}
}
