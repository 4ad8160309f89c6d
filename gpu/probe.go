// Package gpu finds out which hardware video acceleration this machine really
// has. A codec compiled into FFmpeg proves nothing: the driver is loaded
// when a device or encoder is opened, so every check here is a trial open.
package gpu

import (
	"fmt"
	"sync"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/internal/avlog"
)

// Device is the result of opening one kind of hardware device.
type Device struct {
	Type      string `json:"type"`   // cuda, vaapi, qsv
	Device    string `json:"device"` // as passed to FFmpeg ("" = default)
	Available bool   `json:"available"`
	Error     string `json:"error,omitempty"`
}

// Encoder is the result of trying one FFmpeg hardware encoder.
type Encoder struct {
	Name      string `json:"name"` // h264_nvenc, ...
	Compiled  bool   `json:"compiled"`
	Available bool   `json:"available"`
	Error     string `json:"error,omitempty"`
}

// Report lists devices and encoders.
type Report struct {
	Devices  []Device  `json:"devices"`
	Encoders []Encoder `json:"encoders"`
}

var (
	once   sync.Once
	cached Report
)

// Probe opens each device type and hardware encoder once per process and
// returns what worked, with FFmpeg's reason for what did not.
func Probe() Report {
	astiav.RegisterAllDevices()
	once.Do(func() { cached = probe() })
	return cached
}

func probe() Report {
	var r Report
	for _, d := range []struct{ typ, dev string }{{"cuda", "0"}, {"vaapi", "/dev/dri/renderD128"}, {"qsv", ""}} {
		res := Device{Type: d.typ, Device: d.dev}
		t := astiav.FindHardwareDeviceTypeByName(d.typ)
		if t == astiav.HardwareDeviceTypeNone {
			res.Error = "not compiled into this FFmpeg"
		} else {
			var ctx *astiav.HardwareDeviceContext
			var err error
			lines := avlog.Capture(true, func() { ctx, err = astiav.CreateHardwareDeviceContext(t, d.dev, nil, 0) })
			if err != nil {
				res.Error = withReason(err, lines)
			} else {
				res.Available = true
				ctx.Free()
			}
		}
		r.Devices = append(r.Devices, res)
	}
	for _, name := range []string{"h264_nvenc", "hevc_nvenc", "av1_nvenc", "h264_qsv", "h264_vaapi"} {
		res := Encoder{Name: name}
		codec := astiav.FindEncoderByName(name)
		res.Compiled = codec != nil
		switch {
		case codec == nil:
			res.Error = "not compiled into this FFmpeg"
		case name == "h264_qsv" || name == "h264_vaapi":
			// These take only hardware frames: usable when their device is.
			dev := "qsv"
			if name == "h264_vaapi" {
				dev = "vaapi"
			}
			for _, d := range r.Devices {
				if d.Type == dev {
					res.Available = d.Available
					if !d.Available {
						res.Error = "no " + dev + " device: " + d.Error
					}
				}
			}
		default:
			var err error
			lines := avlog.Capture(true, func() { err = trialOpen(codec) })
			if err != nil {
				res.Error = withReason(err, lines)
			} else {
				res.Available = true
			}
		}
		r.Encoders = append(r.Encoders, res)
	}
	return r
}

func withReason(err error, lines []string) string {
	if r := avlog.Reason(lines); r != "" {
		return r + " (" + err.Error() + ")"
	}
	return err.Error()
}

// trialOpen opens an encoder that accepts system-memory frames at a size
// every NVIDIA generation supports.
func trialOpen(codec *astiav.Codec) error {
	cc := astiav.AllocCodecContext(codec)
	defer cc.Free()
	cc.SetWidth(640)
	cc.SetHeight(360)
	cc.SetPixelFormat(astiav.PixelFormatYuv420P)
	cc.SetTimeBase(astiav.NewRational(1, 30))
	cc.SetFramerate(astiav.NewRational(30, 1))
	if err := cc.Open(codec, nil); err != nil {
		return fmt.Errorf("opening %s: %w", codec.Name(), err)
	}
	return nil
}

// EncoderAvailable reports whether the named FFmpeg encoder opens here.
func EncoderAvailable(name string) error {
	for _, e := range Probe().Encoders {
		if e.Name == name {
			if e.Available {
				return nil
			}
			return fmt.Errorf("%s: %s", name, e.Error)
		}
	}
	return fmt.Errorf("%s: not a hardware encoder Prism probes", name)
}
