package ladder

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/prism-streaming/prism/deploy/ladders"
)

// shippedDir is deploy/ladders relative to this package.
var shippedDir = filepath.Join("..", "..", "deploy", "ladders")

func TestShippedLaddersLoad(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(shippedDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ladders in %s (%v)", shippedDir, err)
	}
	for _, file := range files {
		l, err := Load(file)
		if err != nil {
			t.Errorf("Load(%s):\n%v", file, err)
			continue
		}
		if want := filepath.Base(file); l.Name+".yaml" != want {
			t.Errorf("%s: name %q does not match the file name", file, l.Name)
		}
		if _, _, err := l.Plan(1920, 1080, 30); err != nil {
			t.Errorf("%s: Plan(1920x1080): %v", file, err)
		}
	}
}

func TestEmbeddedLaddersParse(t *testing.T) {
	names := ladders.Names()
	for _, want := range []string{"default", "mobile"} {
		if !slices.Contains(names, want) {
			t.Errorf("ladders.Names() = %v; missing %q", names, want)
		}
	}
	for _, name := range names {
		data, err := ladders.Get(name)
		if err != nil {
			t.Fatalf("ladders.Get(%q): %v", name, err)
		}
		if _, err := Parse(name+".yaml", data); err != nil {
			t.Errorf("Parse(%s.yaml):\n%v", name, err)
		}
	}
	if _, err := ladders.Get("no-such-ladder"); err == nil {
		t.Error(`ladders.Get("no-such-ladder") succeeded`)
	}
}

func TestShippedLadderContents(t *testing.T) {
	type rung struct {
		name                      string
		height                    int
		bitrate, maxrate, bufsize Bitrate
	}
	tests := map[string][]rung{
		"default": {
			{"1080p", 1080, 5_000_000, 5_350_000, 5_350_000},
			{"720p", 720, 2_800_000, 2_800_000, 2_800_000},
			{"480p", 480, 1_400_000, 1_400_000, 1_400_000},
			{"360p", 360, 450_000, 450_000, 450_000},
		},
		"mobile": {
			{"720p", 720, 2_500_000, 2_500_000, 2_500_000},
			{"480p", 480, 1_200_000, 1_200_000, 1_200_000},
			{"360p", 360, 700_000, 700_000, 700_000},
		},
	}
	// The default ladder's Opus is 64k so that 360p with audio fits a
	// 700 kbit/s link.
	opus := map[string]Bitrate{"default": 64_000, "mobile": 96_000}
	for name, want := range tests {
		l, err := Load(filepath.Join(shippedDir, name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if l.GOP != DefaultGOP || l.Audio.AAC.Bitrate != 128_000 || l.Audio.Opus.Bitrate != opus[name] {
			t.Errorf("%s: gop %v, aac %v, opus %v; want 1s, 128k, %v", name, l.GOP, l.Audio.AAC.Bitrate, l.Audio.Opus.Bitrate, opus[name])
		}
		var got []rung
		for _, r := range l.Rungs {
			got = append(got, rung{r.Name, r.Height, r.Bitrate, r.Maxrate, r.Bufsize})
			if r.Width != KeepAspect || r.Codec != "h264" || r.Preset != "veryfast" || r.Tune != "zerolatency" || r.Profile != "high" {
				t.Errorf("%s/%s: %+v; want width -2, h264 veryfast zerolatency high", name, r.Name, r)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s rungs = %+v; want %+v", name, got, want)
		}
	}
}
