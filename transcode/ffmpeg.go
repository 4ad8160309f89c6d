package transcode

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	"github.com/asticode/go-astiav"
)

var logOnce sync.Once

// initFFmpeg routes FFmpeg's log lines to slog at warning level and above:
// below that, FFmpeg logs per frame from encoder threads.
func initFFmpeg() {
	logOnce.Do(func() {
		limitMallocArenas()
		astiav.RegisterAllDevices()
		astiav.SetLogLevel(astiav.LogLevelWarning)
		astiav.SetLogCallback(func(c astiav.Classer, l astiav.LogLevel, _, msg string) {
			msg = strings.TrimSpace(msg)
			if msg == "" || probing.Load() > 0 {
				return
			}
			src := ""
			if c != nil {
				if cl := c.Class(); cl != nil {
					src = cl.Name()
				}
			}
			lvl := slog.LevelWarn
			if l <= astiav.LogLevelError {
				lvl = slog.LevelError
			}
			slog.Default().Log(context.Background(), lvl, "ffmpeg: "+msg, "component", src)
		})
	})
}
