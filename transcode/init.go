package transcode

import (
	"sync"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/internal/avlog"
)

var initOnce sync.Once

// initFFmpeg registers devices (the lavfi input), caps malloc arenas and
// routes FFmpeg's log through avlog.
func initFFmpeg() {
	initOnce.Do(func() {
		limitMallocArenas()
		astiav.RegisterAllDevices()
		avlog.Init()
	})
}
