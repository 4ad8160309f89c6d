package jobs

import "context"

// A running job's record says, per rung, which encoder and scaler took it
// and why ("encoder auto: libx264 opens here; nvenc unavailable: ..."), so
// that a ladder with encoder: auto is readable on CPU and GPU nodes alike.

// RungEncoding is how one rung of a running job is encoded.
type RungEncoding struct {
	Rung    string `json:"rung"`
	Encoder string `json:"encoder"` // FFmpeg encoder: libx264, h264_nvenc
	Device  string `json:"device"`  // where it encodes: cpu, cuda:0
	Scaler  string `json:"scaler"`  // where it is scaled: cpu, cuda:0
	Why     string `json:"why"`
}

type encodingReporterKey struct{}

// WithEncodingReporter returns a context that carries report, for
// ReportEncoding.
func WithEncodingReporter(ctx context.Context, report func([]RungEncoding)) context.Context {
	return context.WithValue(ctx, encodingReporterKey{}, report)
}

// ReportEncoding tells the job's owner how the job's rungs are encoded; the
// owner writes it into the record. Without a reporter nothing happens.
func ReportEncoding(ctx context.Context, rungs []RungEncoding) {
	if f, ok := ctx.Value(encodingReporterKey{}).(func([]RungEncoding)); ok && len(rungs) > 0 {
		f(rungs)
	}
}
