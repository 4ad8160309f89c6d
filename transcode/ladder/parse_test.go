package ladder

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
)

// yamlLines joins lines with newlines, so that a test's line numbers are the
// 1-based positions in its argument list.
func yamlLines(lines ...string) []byte {
	return []byte(strings.Join(lines, "\n") + "\n")
}

func TestParseValid(t *testing.T) {
	data := yamlLines(
		"name: studio-a",     // 1
		"gop: 2",             // 2
		"rungs:",             // 3
		"  - name: 1080p",    // 4
		"    width: 1920",    // 5
		"    height: 1080",   // 6
		"    bitrate: 6M",    // 7
		"    maxrate: 6.5M",  // 8
		"    bufsize: 13M",   // 9
		"    fps: 30",        // 10
		"    profile: main",  // 11
		"    preset: p4",     // 12
		"    tune: film",     // 13
		"    encoder: nvenc", // 14
		"    bframes: 2",     // 15
		"    upscale: true",  // 16
		"    threads: 8",     // 17
		"  - {name: 360p, width: 640, height: -2, bitrate: 800000, fps: 29.97, fallback: software}", // 18
		"audio:",                       // 19
		"  channels: 1",                // 20
		"  aac: {bitrate: 64k}",        // 21
		"  opus:",                      // 22
		"    bitrate: 48000",           // 23
		"keyframe_min_interval: 300ms", // 24
		"scaling: cuda",                // 25
	)
	l, err := Parse("studio.yaml", data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Ladder{
		Name:                "studio-a",
		GOP:                 Duration(2 * time.Second),
		KeyframeMinInterval: Duration(300 * time.Millisecond),
		Rungs: []Rung{
			{Name: "1080p", Width: 1920, Height: 1080, Bitrate: 6_000_000, Maxrate: 6_500_000, Bufsize: 13_000_000,
				FPS: 30, Codec: "h264", Profile: "main", Preset: "p4", Tune: "film", Encoder: "nvenc", Fallback: "none",
				BFrames: 2, Upscale: true, Threads: 8},
			{Name: "360p", Width: 640, Height: -2, Bitrate: 800_000, Maxrate: 800_000, Bufsize: 800_000,
				FPS: 29.97, Codec: "h264", Profile: "high", Preset: "veryfast", Tune: "zerolatency", Encoder: "auto", Fallback: "software"},
		},
		Scaling: "cuda",
		Audio:   Audio{Channels: 1, AAC: AudioCodec{64_000}, Opus: AudioCodec{48_000}},
		File:    "studio.yaml",
	}
	assertLadder(t, l, want)
}

func TestParseDefaults(t *testing.T) {
	data := yamlLines(
		"name: minimal",
		"rungs:",
		"  - name: 720p",
		"    height: 720",
		"    bitrate: 2800k",
		"  - name: 480p",
		"    height: 480",
		"    bitrate: 1400k",
		"    maxrate: 2M", // bufsize follows maxrate, not bitrate
		"audio:",          // present but empty: all defaults
	)
	l, err := Parse("", data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	rung := func(name string, height int, bitrate, maxrate Bitrate) Rung {
		return Rung{Name: name, Width: -2, Height: height, Bitrate: bitrate, Maxrate: maxrate, Bufsize: maxrate,
			Codec: "h264", Profile: "high", Preset: "veryfast", Tune: "zerolatency", Encoder: "auto", Fallback: "none"}
	}
	assertLadder(t, l, Ladder{
		Name:                "minimal",
		GOP:                 Duration(time.Second),
		KeyframeMinInterval: Duration(500 * time.Millisecond), // half the GOP
		Rungs:               []Rung{rung("720p", 720, 2_800_000, 2_800_000), rung("480p", 480, 1_400_000, 2_000_000)},
		Scaling:             "auto",
		Audio:               Audio{Channels: 2, AAC: AudioCodec{128_000}, Opus: AudioCodec{96_000}},
	})
}

func TestParseNullKeepsDefault(t *testing.T) {
	l, err := Parse("n.yaml", yamlLines(
		"name: n",
		"gop:",
		"rungs:",
		"  - {name: a, height: 720, bitrate: 1M, preset: ~}",
	))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if l.GOP != DefaultGOP || l.Rungs[0].Preset != DefaultPreset {
		t.Errorf("gop, preset = %v, %q; want the defaults", l.GOP, l.Rungs[0].Preset)
	}
}

func TestParseFileEncodings(t *testing.T) {
	body := "name: x\nrungs:\n  - name: a\n    height: 720\n    bitrate: 1M\n"
	for name, data := range map[string]string{
		"CRLF line ends":   strings.ReplaceAll(body, "\n", "\r\n"),
		"byte order mark":  "\ufeff" + body,
		"YAML directive":   "%YAML 1.2\n---\n" + body,
		"document markers": "---\n" + body + "...\n",
	} {
		if _, err := Parse("e.yaml", []byte(data)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestParseGOPForms(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"1s": time.Second, "500ms": 500 * time.Millisecond, "2": 2 * time.Second,
		"0.25": 250 * time.Millisecond, `"2"`: 2 * time.Second, "10s": 10 * time.Second,
	} {
		l, err := Parse("g.yaml", yamlLines("name: g", "gop: "+in, "rungs: [{name: a, height: 720, bitrate: 1M}]"))
		if err != nil {
			t.Errorf("gop %s: %v", in, err)
			continue
		}
		if time.Duration(l.GOP) != want {
			t.Errorf("gop %s = %v; want %v", in, l.GOP, want)
		}
	}
}

func TestParseAnchorsAndMerge(t *testing.T) {
	l, err := Parse("m.yaml", yamlLines(
		"name: merged",
		"rungs:",
		"  - &base",
		"    name: 720p",
		"    height: 720",
		"    bitrate: 2800k",
		"    preset: faster",
		"  - <<: *base",
		"    name: 480p",
		"    height: 480",
		"    bitrate: 1400k",
	))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	r := l.Rungs[1]
	if r.Name != "480p" || r.Height != 480 || r.Bitrate != 1_400_000 || r.Maxrate != 1_400_000 || r.Preset != "faster" {
		t.Errorf("merged rung = %+v; want the 480p overrides on top of base's preset", r)
	}
}

// TestParseErrors checks complete error texts: file, line, field path and
// message, and that every problem is reported.
func TestParseErrors(t *testing.T) {
	validRung := "  - {name: ok, height: 720, bitrate: 1M}"
	tests := []struct {
		name string
		data []byte
		want []string
	}{{
		name: "spec example: zero bitrate in the third rung",
		data: yamlLines(
			"name: x",              // 1
			"rungs:",               // 2
			"  - name: a",          // 3
			"    height: 720",      // 4
			"    bitrate: 1M",      // 5
			"  - name: b",          // 6
			"    height: 480",      // 7
			"    bitrate: 500k",    // 8
			"  - name: c",          // 9
			"    height: 360",      // 10
			"    width: -2",        // 11
			"    profile: main",    // 12
			"    preset: veryfast", // 13
			"    bitrate: 0",       // 14
		),
		want: []string{"ladder.yaml:14: rungs[2].bitrate: must be greater than 0"},
	}, {
		name: "typo'd key, with the missing required key at the rung's line",
		data: yamlLines(
			"name: x",         // 1
			"rungs:",          // 2
			"  - name: a",     // 3
			"    height: 720", // 4
			"    bitrat: 1M",  // 5
		),
		want: []string{
			"ladder.yaml:3: rungs[0].bitrate: is required",
			`ladder.yaml:5: rungs[0].bitrat: unknown field (did you mean "bitrate"?)`,
		},
	}, {
		name: "unknown key without a near match",
		data: yamlLines("name: x", "colour: red", "rungs:", validRung),
		want: []string{"ladder.yaml:2: colour: unknown field"},
	}, {
		name: "unknown key in audio",
		data: yamlLines("name: x", "rungs:", validRung, "audio:", "  chanels: 2"),
		want: []string{`ladder.yaml:5: audio.chanels: unknown field (did you mean "channels"?)`},
	}, {
		name: "negative bitrate",
		data: yamlLines("name: x", "rungs:", "  - name: a", "    height: 720", "    bitrate: -2500k"),
		want: []string{`ladder.yaml:5: rungs[0].bitrate: invalid bitrate "-2500k": must not be negative`},
	}, {
		name: "negative integer bitrate",
		data: yamlLines("name: x", "rungs:", "  - name: a", "    height: 720", "    bitrate: -5"),
		want: []string{`ladder.yaml:5: rungs[0].bitrate: invalid bitrate -5: must not be negative`},
	}, {
		name: "garbage bitrate",
		data: yamlLines("name: x", "rungs:", "  - name: a", "    height: 720", "    bitrate: fast"),
		want: []string{`ladder.yaml:5: rungs[0].bitrate: invalid bitrate "fast" (want e.g. 2500k, 2.5M or 800000)`},
	}, {
		name: "float bitrates",
		data: yamlLines("name: x", "rungs:", "  - name: a", "    height: 720", "    bitrate: 1.5", "    maxrate: .inf", "    bufsize: 2500000.0"),
		want: []string{
			"ladder.yaml:5: rungs[0].bitrate: invalid bitrate 1.5: not a whole number of bits per second",
			"ladder.yaml:6: rungs[0].maxrate: must be a bitrate such as 2500k, got non-finite number .inf",
		},
	}, {
		name: "block string is a string, but not a valid name",
		data: yamlLines("name: |", "  x", "rungs:", validRung),
		want: []string{`ladder.yaml:1: name: invalid name "x\n": use 1-64 lowercase letters, digits, '_' or '-', starting with a letter or digit`},
	}, {
		name: "integer overflow",
		data: yamlLines("name: x", "rungs:", "  - {name: a, height: 9223372036854775808, bitrate: 1M}"),
		want: []string{"ladder.yaml:3: rungs[0].height: integer 9223372036854775808 is out of range"},
	}, {
		name: "alias expansion is bounded",
		data: yamlLines(
			"name: x",
			"rungs:",
			"  - &a {name: a, height: 720, bitrate: 1M}",
			"  - &b {<<: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]}",
			"  - &c {<<: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]}",
			"  - &d {<<: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]}",
			"  - &e {<<: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]}",
			"  - &f {<<: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]}",
			"  - &g {<<: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]}",
		),
		want: []string{"ladder.yaml:8: rungs[5]: document too large or too deeply aliased"},
	}, {
		name: "both sizes -2, reported on height",
		data: yamlLines("name: x", "rungs:", "  - name: a", "    width: -2", "    height: -2", "    bitrate: 1M"),
		want: []string{"ladder.yaml:5: rungs[0].height: width and height cannot both be -2"},
	}, {
		name: "both sizes defaulted, reported at the rung",
		data: yamlLines("name: x", "rungs:", "  - name: a", "    bitrate: 1M"),
		want: []string{"ladder.yaml:3: rungs[0].height: width and height cannot both be -2"},
	}, {
		name: "duplicate rung names",
		data: yamlLines("name: x", "rungs:", validRung, "  - name: ok", "    height: 480", "    bitrate: 1M"),
		want: []string{`ladder.yaml:4: rungs[1].name: duplicate rung name "ok" (already used by rungs[0])`},
	}, {
		name: "bad type: list for bitrate",
		data: yamlLines("name: x", "rungs:", "  - name: a", "    height: 720", "    bitrate: [1]"),
		want: []string{"ladder.yaml:5: rungs[0].bitrate: must be a bitrate such as 2500k, got a list"},
	}, {
		name: "bad types elsewhere",
		data: yamlLines(
			"name: [x]",         // 1
			"gop: {a: 1}",       // 2
			"rungs:",            // 3
			"  - name: a",       // 4
			"    height: 720p",  // 5
			"    bitrate: 1M",   // 6
			"    fps: fast",     // 7
			"    upscale: yes",  // 8
			"    bframes: 1.5",  // 9
			"  - just a string", // 10
			"audio: 5",          // 11
		),
		want: []string{
			"ladder.yaml:1: name: must be a string, got a list",
			"ladder.yaml:2: gop: must be a duration such as 1s or 500ms, got a mapping",
			`ladder.yaml:5: rungs[0].height: must be an integer, got string "720p"`,
			`ladder.yaml:7: rungs[0].fps: must be a number, got string "fast"`,
			`ladder.yaml:8: rungs[0].upscale: must be true or false, got string "yes"`,
			"ladder.yaml:9: rungs[0].bframes: must be an integer, got number 1.5",
			`ladder.yaml:10: rungs[1]: must be a mapping, got string "just a string"`,
			"ladder.yaml:11: audio: must be a mapping, got integer 5",
		},
	}, {
		name: "duplicate keys",
		data: yamlLines("name: x", "rungs:", "  - name: a", "    height: 720", "    bitrate: 1M", "    bitrate: 2M", "name: y"),
		want: []string{
			"ladder.yaml:6: rungs[0].bitrate: duplicate key (first set on line 5)",
			"ladder.yaml:7: name: duplicate key (first set on line 1)",
		},
	}, {
		name: "keyframe budget beyond the gop",
		data: yamlLines("name: x", "gop: 1s", "keyframe_min_interval: 1500ms", "rungs: [{name: a, height: 720, bitrate: 1M}]"),
		want: []string{"ladder.yaml:3: keyframe_min_interval: must be between 0s and the gop (1s), got 1.5s"},
	}, {
		name: "negative keyframe budget",
		data: yamlLines("name: x", "keyframe_min_interval: -1s", "rungs: [{name: a, height: 720, bitrate: 1M}]"),
		want: []string{"ladder.yaml:2: keyframe_min_interval: must be between 0s and the gop (1s), got -1s"},
	}, {
		name: "every semantic rule at once",
		data: yamlLines(
			"name: Bad_Name",        // 1
			"gop: 50ms",             // 2
			"rungs:",                // 3
			"  - name: '-a'",        // 4
			"    width: 641",        // 5
			"    height: 0",         // 6
			"    bitrate: 2M",       // 7
			"    maxrate: 1M",       // 8
			"    fps: 241",          // 9
			"    codec: h265",       // 10
			"    profile: extended", // 11
			"    preset: turbo",     // 12
			"    tune: fast",        // 13
			"    encoder: amf",      // 14
			"    bframes: 5",        // 15
			"    threads: 65",       // 16
			"  - name: b",           // 17
			"    width: 16384",      // 18
			"    bitrate: 1M",       // 19
			"    bufsize: 0",        // 20
			"    profile: baseline", // 21
			"    bframes: 2",        // 22
			"    encoder: x264",     // 23
			"    preset: p4",        // 24
			"audio:",                // 25
			"  channels: 6",         // 26
			"  aac: {bitrate: 8k}",  // 27
			"  opus: {bitrate: 1M}", // 28
		),
		want: []string{
			`ladder.yaml:1: name: invalid name "Bad_Name": use 1-64 lowercase letters, digits, '_' or '-', starting with a letter or digit`,
			"ladder.yaml:2: gop: must be between 100ms and 10s, got 50ms",
			`ladder.yaml:4: rungs[0].name: invalid name "-a": use 1-32 lowercase letters, digits, '_' or '-', starting with a letter or digit`,
			"ladder.yaml:5: rungs[0].width: must be -2 (keep the source aspect) or a positive even number, got 641",
			"ladder.yaml:6: rungs[0].height: must be -2 (keep the source aspect) or a positive even number, got 0",
			"ladder.yaml:8: rungs[0].maxrate: must be at least the bitrate (2M), got 1M",
			"ladder.yaml:9: rungs[0].fps: must be 0 (source rate) or between 1 and 240, got 241",
			`ladder.yaml:10: rungs[0].codec: unsupported codec "h265" (supported: h264)`,
			`ladder.yaml:11: rungs[0].profile: unsupported profile "extended" (supported: baseline, main, high)`,
			`ladder.yaml:12: rungs[0].preset: unknown preset "turbo" (x264: ultrafast superfast veryfast faster fast medium slow slower veryslow placebo; NVENC: p1 p2 p3 p4 p5 p6 p7)`,
			`ladder.yaml:13: rungs[0].tune: unsupported tune "fast" (supported: zerolatency, film, animation, grain, stillimage, fastdecode, psnr, ssim, none)`,
			`ladder.yaml:14: rungs[0].encoder: unsupported encoder "amf" (supported: auto, x264, nvenc, qsv, vaapi)`,
			"ladder.yaml:15: rungs[0].bframes: must be between 0 and 4, got 5",
			"ladder.yaml:16: rungs[0].threads: must be between 0 (automatic) and 64, got 65",
			"ladder.yaml:18: rungs[1].width: must be at most 8192, got 16384",
			"ladder.yaml:20: rungs[1].bufsize: must be greater than 0",
			"ladder.yaml:22: rungs[1].bframes: the baseline profile has no B-frames; use 0 or profile main/high",
			"ladder.yaml:24: rungs[1].preset: p4 is an NVENC preset; encoder x264 needs one of ultrafast superfast veryfast faster fast medium slow slower veryslow placebo",
			"ladder.yaml:26: audio.channels: must be 1 or 2, got 6",
			"ladder.yaml:27: audio.aac.bitrate: must be between 16k and 512k, got 8k",
			"ladder.yaml:28: audio.opus.bitrate: must be between 16k and 512k, got 1M",
		},
	}, {
		name: "missing name and rungs, at the top mapping's line",
		data: yamlLines("# a comment", "gop: 1s"),
		want: []string{
			"ladder.yaml:2: name: is required",
			"ladder.yaml:2: rungs: at least one rung is required",
		},
	}, {
		name: "too many rungs",
		data: manyRungs(17),
		want: []string{"ladder.yaml:2: rungs: at most 16 rungs are allowed, got 17"},
	}, {
		name: "rungs not a list",
		data: yamlLines("name: x", "rungs: 3"),
		want: []string{"ladder.yaml:2: rungs: must be a list of rungs, got integer 3"},
	}, {
		name: "empty file",
		data: []byte(""),
		want: []string{"ladder.yaml:1: empty ladder: expected a mapping with name and rungs"},
	}, {
		name: "only comments",
		data: yamlLines("# nothing here", "---"),
		want: []string{"ladder.yaml:1: empty ladder: expected a mapping with name and rungs"},
	}, {
		name: "top level is a list",
		data: yamlLines("- name: x"),
		want: []string{"ladder.yaml:1: top level must be a mapping with name and rungs, got a list"},
	}, {
		name: "top level is a string",
		data: yamlLines("hello"),
		want: []string{`ladder.yaml:1: top level must be a mapping with name and rungs, got string "hello"`},
	}, {
		name: "two documents",
		data: yamlLines("name: x", "---", "name: y"),
		want: []string{"ladder.yaml:3: found more than one YAML document; a ladder file holds exactly one"},
	}, {
		name: "syntax error",
		data: yamlLines("name: x", "rungs: [", "  {name: a}"),
		want: []string{"ladder.yaml:2: invalid YAML: sequence end token ']' not found"},
	}, {
		name: "unknown alias",
		data: yamlLines("name: x", "rungs:", "  - *nope"),
		want: []string{"ladder.yaml:3: rungs[0]: unknown alias *nope (anchors must be defined before use)"},
	}, {
		name: "self-merging anchor",
		data: yamlLines("name: x", "rungs:", "  - &r {<<: *r}"),
		want: []string{"ladder.yaml:3: rungs[0]: merge keys (<<) nested too deeply"},
	}, {
		name: "custom tag",
		data: yamlLines("name: !secret x", "rungs:", validRung),
		want: []string{"ladder.yaml:1: name: unsupported tag !secret"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Parse("ladder.yaml", tt.data)
			if err == nil {
				t.Fatalf("Parse succeeded (%+v); want errors:\n%s", l, strings.Join(tt.want, "\n"))
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false for %T", err)
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) != len(tt.want) {
				t.Errorf("error is %T with %d entries; want ErrorList with %d", err, len(list), len(tt.want))
			}
		})
	}
}

func TestErrorFields(t *testing.T) {
	_, err := Parse("a.yaml", yamlLines("name: x", "rungs:", "  - {name: a, height: 720, bitrate: 0}"))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("errors.As(*Error) failed for %v", err)
	}
	want := Error{File: "a.yaml", Line: 3, Field: "rungs[0].bitrate", Msg: "must be greater than 0"}
	if *e != want {
		t.Errorf("error = %+v; want %+v", *e, want)
	}
	if !errors.Is(e, ErrInvalid) {
		t.Error("errors.Is(*Error, ErrInvalid) = false")
	}
}

func TestErrorWithoutFileName(t *testing.T) {
	_, err := Parse("", yamlLines("name: x"))
	if want := "<input>:1: rungs: at least one rung is required"; err == nil || err.Error() != want {
		t.Errorf("error = %v; want %q", err, want)
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	l := &Ladder{Name: "code", Rungs: []Rung{{Name: "a", Height: 720, Bitrate: 1_000_000}, {Name: "b", Height: 480}}}
	if err := l.Validate(); err == nil {
		t.Fatal("Validate succeeded before ApplyDefaults; want errors for the zero values")
	}
	l.ApplyDefaults()
	err := l.Validate()
	if want := "rungs[1].bitrate: must be greater than 0"; err == nil || err.Error() != want {
		t.Fatalf("Validate = %v; want %q", err, want)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Error("errors.Is(err, ErrInvalid) = false")
	}
	l.Rungs[1].Bitrate = 500_000
	l.Rungs[1].Maxrate, l.Rungs[1].Bufsize = 0, 0
	l.ApplyDefaults()
	if err := l.Validate(); err != nil {
		t.Fatalf("Validate after fixing: %v", err)
	}
	if r := l.Rungs[1]; r.Width != KeepAspect || r.Maxrate != 500_000 || r.Bufsize != 500_000 || r.Preset != DefaultPreset {
		t.Errorf("ApplyDefaults gave %+v", r)
	}
}

func TestValidateLoadedLadderKeepsLines(t *testing.T) {
	l, err := Parse("l.yaml", yamlLines("name: x", "rungs:", "  - name: a", "    height: 720", "    bitrate: 1M"))
	if err != nil {
		t.Fatal(err)
	}
	l.Rungs[0].Bitrate = 0
	if err, want := l.Validate(), "l.yaml:5: rungs[0].bitrate: must be greater than 0"; err == nil || err.Error() != want {
		t.Errorf("Validate = %v; want %q", err, want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ladder.yaml")
	if err := os.WriteFile(path, yamlLines("name: x", "rungs:", "  - {name: a, height: 720, bitrate: 1M, bogus: 1}"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if want := path + ":3: rungs[0].bogus: unknown field"; err == nil || err.Error() != want {
		t.Errorf("Load error = %v; want %q", err, want)
	}
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrInvalid) {
		t.Errorf("Load(missing) = %v; want a not-exist error that is not ErrInvalid", err)
	}
}

func assertLadder(t *testing.T, got *Ladder, want Ladder) {
	t.Helper()
	g := *got
	g.lines = nil
	if !reflect.DeepEqual(g, want) {
		t.Errorf("ladder =\n%+v\nwant\n%+v", g, want)
	}
}

func manyRungs(n int) []byte {
	data := yamlLines("name: x", "rungs:")
	for i := range n {
		data = fmt.Appendf(data, "  - {name: r%d, height: 720, bitrate: 1M}\n", i)
	}
	return data
}

// TestMarshalRoundTrip checks that the yaml tags and the text marshalers
// write a ladder that Parse reads back unchanged.
func TestMarshalRoundTrip(t *testing.T) {
	l, err := Load(filepath.Join(shippedDir, "default.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := yaml.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("marshalled.yaml", data)
	if err != nil {
		t.Fatalf("Parse(Marshal(default)):\n%v\n%s", err, data)
	}
	want := *l
	want.File = "marshalled.yaml"
	want.lines = nil
	assertLadder(t, back, want)
}
