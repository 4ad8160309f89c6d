package transcode

// #cgo pkg-config: libavutil
// void prism_install_log_callback(void);
import "C"

import (
	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/internal/avlog"
)

// FFmpeg's log goes through avlog.C's bounded callback from the start:
// avlog.Init then leaves it in place instead of go-astiav's, whose fixed
// buffer an input can overflow.
func init() {
	avlog.UseExternalCallback()
	C.prism_install_log_callback()
}

//export prismLogLine
func prismLogLine(level C.int, component, line *C.char) {
	avlog.Line(astiav.LogLevel(level), C.GoString(component), C.GoString(line))
}
