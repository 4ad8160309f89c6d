// Package avlog routes FFmpeg's log to slog and lets a caller capture the
// lines FFmpeg logs while it runs one call, to give errors their real reason
// ("moov atom not found", "Cannot load libcuda.so.1") instead of a bare code.
package avlog

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/asticode/go-astiav"
)

var (
	once     sync.Once
	mu       sync.Mutex
	captures = map[*capture]struct{}{}
	// external: a C log callback that calls Line is installed (transcode
	// installs a bounded one), so Init must not replace it.
	external atomic.Bool
)

type capture struct {
	lines []string
	quiet bool
}

// UseExternalCallback tells Init that FFmpeg's log callback is already a
// C function calling Line, and must stay.
func UseExternalCallback() { external.Store(true) }

// Init installs the callback once (go-astiav's, unless an external one is
// in place). FFmpeg logs below warning level per frame, from encoder
// threads, so those lines are not routed at all.
func Init() {
	once.Do(func() {
		astiav.SetLogLevel(astiav.LogLevelWarning)
		if external.Load() {
			return
		}
		astiav.SetLogCallback(func(c astiav.Classer, l astiav.LogLevel, _, msg string) {
			src := ""
			if c != nil {
				if cl := c.Class(); cl != nil {
					src = cl.Name()
				}
			}
			Line(l, src, msg)
		})
	})
}

// Line routes one FFmpeg log line: to every running capture, and to slog
// unless a quiet capture wants it kept out. It runs on FFmpeg's threads.
func Line(l astiav.LogLevel, component, msg string) {
	msg = strings.TrimSpace(msg)
	if msg == "" {
		return
	}
	mu.Lock()
	quiet := false
	for c := range captures {
		c.lines = append(c.lines, msg)
		quiet = quiet || c.quiet
	}
	mu.Unlock()
	if quiet {
		return
	}
	lvl := slog.LevelWarn
	if l <= astiav.LogLevelError {
		lvl = slog.LevelError
	}
	slog.Default().Log(context.Background(), lvl, "ffmpeg: "+msg, "component", component)
}

// Capture runs fn and returns the lines FFmpeg logged meanwhile (from any
// goroutine: keep fn short). With quiet, those lines are not logged, for
// probes whose failures are expected.
func Capture(quiet bool, fn func()) []string {
	Init()
	c := &capture{quiet: quiet}
	mu.Lock()
	captures[c] = struct{}{}
	mu.Unlock()
	defer func() {
		mu.Lock()
		delete(captures, c)
		mu.Unlock()
	}()
	fn()
	return c.lines
}

// Reason returns the last captured line, or "" when there is none.
func Reason(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}
