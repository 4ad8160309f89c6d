package ladder_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prism-streaming/prism/transcode/ladder"
)

func TestShippedLadderCost(t *testing.T) {
	cost, err := ladder.Check("default", "")
	if err != nil {
		t.Fatal(err)
	}
	// 1080p, 720p, 480p, 360p at 16:9 and 30 fps.
	want := float64(1920*1080+1280*720+854*480+640*360) * 30
	if cost != want {
		t.Fatalf("default costs %g px/s, want %g", cost, want)
	}
	mobile, err := ladder.Check("mobile", "")
	if err != nil {
		t.Fatal(err)
	}
	if mobile <= 0 || mobile >= cost {
		t.Fatalf("mobile %g px/s, default %g: want 0 < mobile < default", mobile, cost)
	}
}

func TestCostCapsFrameRateAndFollowsExplicitSizes(t *testing.T) {
	cost, err := ladder.Check("", `name: mixed
rungs:
  - {name: a, height: 720, bitrate: 2m, fps: 15}
  - {name: b, width: 640, height: 480, bitrate: 1m}
`)
	if err != nil {
		t.Fatal(err)
	}
	want := float64(1280*720*15 + 640*480*30)
	if cost != want {
		t.Fatalf("cost %g, want %g", cost, want)
	}
}

func TestCostForAKnownSource(t *testing.T) {
	l, err := ladder.Resolve("default", "")
	if err != nil {
		t.Fatal(err)
	}
	// A 720p source skips the 1080p rung.
	cost, err := ladder.Cost(l, 1280, 720, 25)
	if err != nil {
		t.Fatal(err)
	}
	if want := float64(1280*720+854*480+640*360) * 25; cost != want {
		t.Fatalf("cost %g, want %g", cost, want)
	}
}

func TestResolveFromFile(t *testing.T) {
	data, err := os.ReadFile("../../deploy/ladders/mobile.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "custom.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := ladder.Resolve(path, "")
	if err != nil {
		t.Fatal(err)
	}
	if l.Name != "mobile" || l.File != path {
		t.Fatalf("loaded %q from %q", l.Name, l.File)
	}
}

func TestResolveErrors(t *testing.T) {
	if _, err := ladder.Check("nope", ""); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "default, mobile") {
		t.Fatalf("unknown name: %v", err)
	}
	if _, err := ladder.Check("/nonexistent/x.yaml", ""); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	_, err := ladder.Check("mine", "name: mine\nrungs:\n  - {name: a, height: 360}\n")
	if !errors.Is(err, ladder.ErrInvalid) || !strings.Contains(err.Error(), "mine:3: rungs[0].bitrate") {
		t.Fatalf("invalid inline: %v", err)
	}
}
