package ladder

import (
	"fmt"

	"github.com/goccy/go-yaml/ast"

	"github.com/prism-streaming/prism/internal/yamlfile"
)

// decoder turns a goccy/go-yaml AST into a Ladder by walking it against the
// schema. Walking the AST ourselves (instead of yaml.Unmarshal) gives every
// error a field path and a line, lets one pass report every problem instead
// of the first, and keeps the messages about ladders rather than Go types.
type decoder struct {
	file    string
	lines   yamlfile.Lines  // field path -> line of its key (or list item)
	failed  map[string]bool // paths whose value could not be decoded
	errs    ErrorList
	anchors map[string]ast.Node
	budget  int // nodes left to visit; bounds alias/merge expansion
}

func (d *decoder) exhausted() bool { return d.budget <= 0 }

const (
	nodeBudget    = 100_000
	maxMergeDepth = 8
)

// unsetBitrate marks maxrate/bufsize as absent so that their defaults, which
// depend on other fields, can be filled in after decoding. Negative values
// are rejected while decoding, so it cannot collide with user input.
const unsetBitrate Bitrate = -1

var (
	ladderFields = []string{"name", "gop", "keyframe_min_interval", "scaling", "rungs", "audio"}
	rungFields   = []string{"name", "width", "height", "bitrate", "maxrate", "bufsize", "fps",
		"codec", "profile", "preset", "tune", "encoder", "fallback", "bframes", "upscale", "threads"}
	audioFields      = []string{"channels", "aac", "opus"}
	audioCodecFields = []string{"bitrate"}
)

func newDecoder(file string) *decoder {
	return &decoder{
		file:    file,
		lines:   yamlfile.Lines{},
		failed:  map[string]bool{},
		anchors: map[string]ast.Node{},
		budget:  nodeBudget,
	}
}

// fail records a decoding error for path at the line known for it.
func (d *decoder) fail(path, format string, args ...any) {
	d.failed[path] = true
	if d.exhausted() && len(d.errs) > 0 {
		return // the budget error has been reported; the rest is noise
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: d.lines.Line(path), Field: path, Msg: fmt.Sprintf(format, args...)})
}

// ladder decodes the top-level mapping, with defaults for absent keys.
func (d *decoder) ladder(root ast.Node) *Ladder {
	l := &Ladder{GOP: DefaultGOP, Scaling: DefaultScaling, Audio: defaultAudio(), File: d.file, lines: d.lines}
	d.lines[""] = max(yamlfile.LineOf(root), 1)
	root, ok := d.resolve(root, "")
	if !ok {
		return l
	}
	if _, isMap := yamlfile.MappingEntries(root); !isMap {
		d.fail("", "top level must be a mapping with name and rungs, got %s", describe(root))
		return l
	}
	minIntervalSet := false
	d.mapping(root, "", ladderFields, 0, func(key string, v ast.Node, path string) {
		switch key {
		case "name":
			d.str(v, path, &l.Name)
		case "gop":
			d.duration(v, path, &l.GOP)
		case "keyframe_min_interval":
			d.duration(v, path, &l.KeyframeMinInterval)
			minIntervalSet = true
		case "scaling":
			d.str(v, path, &l.Scaling)
		case "rungs":
			l.Rungs = d.rungs(v, path)
		case "audio":
			d.audio(v, path, &l.Audio)
		}
	})
	if !minIntervalSet {
		l.KeyframeMinInterval = l.GOP / 2 // it follows the GOP unless given
	}
	return l
}

func (d *decoder) rungs(n ast.Node, path string) []Rung {
	seq, ok := n.(*ast.SequenceNode)
	if !ok {
		d.fail(path, "must be a list of rungs, got %s", describe(n))
		return nil
	}
	rungs := make([]Rung, 0, len(seq.Values))
	for i, item := range seq.Values {
		if d.exhausted() {
			break
		}
		itemPath := yamlfile.Index(path, i)
		d.lines[itemPath] = max(yamlfile.LineOf(item), d.lines[path])
		// A rung that fails to resolve still takes its slot, so that the
		// indices in later errors match the file.
		if item, ok := d.resolve(item, itemPath); ok {
			rungs = append(rungs, d.rung(item, itemPath))
		} else {
			rungs = append(rungs, defaultRung())
		}
	}
	return rungs
}

func (d *decoder) rung(n ast.Node, path string) Rung {
	r := defaultRung()
	r.Maxrate, r.Bufsize = unsetBitrate, unsetBitrate
	d.mapping(n, path, rungFields, 0, func(key string, v ast.Node, p string) {
		switch key {
		case "name":
			d.str(v, p, &r.Name)
		case "width":
			d.integer(v, p, &r.Width)
		case "height":
			d.integer(v, p, &r.Height)
		case "bitrate":
			d.bitrate(v, p, &r.Bitrate)
		case "maxrate":
			d.bitrate(v, p, &r.Maxrate)
		case "bufsize":
			d.bitrate(v, p, &r.Bufsize)
		case "fps":
			d.number(v, p, &r.FPS)
		case "codec":
			d.str(v, p, &r.Codec)
		case "profile":
			d.str(v, p, &r.Profile)
		case "preset":
			d.str(v, p, &r.Preset)
		case "tune":
			d.str(v, p, &r.Tune)
		case "encoder":
			d.str(v, p, &r.Encoder)
		case "fallback":
			d.str(v, p, &r.Fallback)
		case "bframes":
			d.integer(v, p, &r.BFrames)
		case "upscale":
			d.boolean(v, p, &r.Upscale)
		case "threads":
			d.integer(v, p, &r.Threads)
		}
	})
	if r.Maxrate == unsetBitrate {
		r.Maxrate = r.Bitrate
	}
	if r.Bufsize == unsetBitrate {
		r.Bufsize = r.Maxrate
	}
	return r
}

func (d *decoder) audio(n ast.Node, path string, a *Audio) {
	d.mapping(n, path, audioFields, 0, func(key string, v ast.Node, p string) {
		switch key {
		case "channels":
			d.integer(v, p, &a.Channels)
		case "aac":
			d.audioCodec(v, p, &a.AAC)
		case "opus":
			d.audioCodec(v, p, &a.Opus)
		}
	})
}

func (d *decoder) audioCodec(n ast.Node, path string, c *AudioCodec) {
	d.mapping(n, path, audioCodecFields, 0, func(_ string, v ast.Node, p string) {
		d.bitrate(v, p, &c.Bitrate)
	})
}
