package webrtc

import (
	"fmt"
	"strings"
	"sync"

	"github.com/prism-streaming/prism/pipeline"
)

// H.264 profile_idc values and the constraint flags x264 writes with them.
const (
	profileBaseline = 0x42
	profileMain     = 0x4d
	profileHigh     = 0x64

	constrainedBaseline = 0xe0 // the 42e0xx browsers always offer
)

// profileLevel is the three bytes of an H.264 profile-level-id: profile_idc,
// the constraint flags and level_idc (RFC 6184 §8.1).
type profileLevel [3]byte

func (p profileLevel) String() string { return fmt.Sprintf("%02x%02x%02x", p[0], p[1], p[2]) }

// h264Params tracks the profile and level of every rung, read from the SPS
// in front of each IDR; until a rung's first IDR it is guessed from the
// track. Written by the stream goroutine, read by offer handlers.
type h264Params struct {
	mu    sync.Mutex
	rungs []profileLevel
	seen  []bool
}

func newH264Params(videos []pipeline.Track) *h264Params {
	h := &h264Params{rungs: make([]profileLevel, len(videos)), seen: make([]bool, len(videos))}
	for i, tr := range videos {
		h.rungs[i] = guessProfileLevel(tr)
	}
	return h
}

// guessProfileLevel is the profile-level-id x264 would write for the track.
func guessProfileLevel(tr pipeline.Track) profileLevel {
	var p profileLevel
	switch strings.ToLower(tr.Profile) {
	case "baseline":
		p[0], p[1] = profileBaseline, 0xc0
	case "main":
		p[0], p[1] = profileMain, 0x40
	default:
		p[0], p[1] = profileHigh, 0x00
	}
	switch {
	case tr.Height <= 360:
		p[2] = 0x1e // 3.0
	case tr.Height <= 720:
		p[2] = 0x1f // 3.1
	case tr.Height <= 1080:
		p[2] = 0x28 // 4.0
	default:
		p[2] = 0x33 // 5.1
	}
	return p
}

// observe reads the SPS of a rung's keyframe.
func (h *h264Params) observe(rung int, au []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen[rung] {
		return
	}
	if sps, _ := pipeline.ParameterSets(au); len(sps) >= 4 { // header, profile_idc, flags, level_idc
		h.rungs[rung] = profileLevel{sps[1], sps[2], sps[3]}
		h.seen[rung] = true
	}
}

// stream returns what the video m-line announces for the whole ladder: the
// most capable profile of any rung and the highest level, since one
// negotiated codec carries every rung a viewer may be switched to.
func (h *h264Params) stream() profileLevel {
	h.mu.Lock()
	defer h.mu.Unlock()
	var best profileLevel
	for _, p := range h.rungs {
		if profileRank(p[0]) > profileRank(best[0]) {
			best[0], best[1] = p[0], p[1]
		}
		best[2] = max(best[2], p[2])
	}
	return best
}

func profileRank(idc byte) int {
	switch idc {
	case profileBaseline:
		return 1
	case profileMain:
		return 2
	case profileHigh:
		return 3
	case 0:
		return 0
	}
	return 4 // High 10, 4:2:2, ...: never produced by the ladder's encoders
}

// chooseProfileLevel picks the profile-level-id to answer with, among the
// H.264 formats a viewer offered (pion matches formats on the profile and
// constraint bytes exactly, so the answer must reuse an offered pair):
// the offered format with the stream's profile, preferring equal constraint
// flags, then flags that include the stream's; otherwise Constrained Baseline, which every browser offers and
// whose decoders play Main and High without B-frames in practice (what
// MediaMTX announces for every stream); otherwise the first offered. The
// level is the stream's: level-asymmetry-allowed lets it exceed the viewer's.
func chooseProfileLevel(stream profileLevel, offered []profileLevel) (profileLevel, bool) {
	if len(offered) == 0 {
		return profileLevel{}, false
	}
	pick := func(ok func(profileLevel) bool) (profileLevel, bool) {
		for _, o := range offered {
			if ok(o) {
				return profileLevel{o[0], o[1], stream[2]}, true
			}
		}
		return profileLevel{}, false
	}
	if p, ok := pick(func(o profileLevel) bool { return o[0] == stream[0] && o[1] == stream[1] }); ok {
		return p, true
	}
	// Constraint flags that include the stream's make a truer label (x264's
	// Constrained Baseline 42c0 is the 42e0 browsers offer, not their 4200).
	if p, ok := pick(func(o profileLevel) bool { return o[0] == stream[0] && o[1]&stream[1] == stream[1] }); ok {
		return p, true
	}
	if p, ok := pick(func(o profileLevel) bool { return o[0] == stream[0] }); ok {
		return p, true
	}
	if p, ok := pick(func(o profileLevel) bool { return o[0] == profileBaseline && o[1] == constrainedBaseline }); ok {
		return p, true
	}
	return profileLevel{offered[0][0], offered[0][1], stream[2]}, true
}

// h264Fmtp is the fmtp line of the video codec.
func h264Fmtp(p profileLevel) string {
	return "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + p.String()
}
