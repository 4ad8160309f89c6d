package jobs

import "context"

// A runner that has not reported running yet can say what it waits for
// (opening the input, the first frames of which rungs): the owner puts the
// latest word in the job's reason when the start timeout ends the attempt.

type progressReporterKey struct{}

// WithProgressReporter returns a context that carries report, for
// ReportProgress.
func WithProgressReporter(ctx context.Context, report func(what string)) context.Context {
	return context.WithValue(ctx, progressReporterKey{}, report)
}

// ReportProgress tells the job's owner what a starting job waits for. A
// runner calls it with the context it was given; without a reporter in it
// nothing happens.
func ReportProgress(ctx context.Context, what string) {
	if f, ok := ctx.Value(progressReporterKey{}).(func(string)); ok && what != "" {
		f(what)
	}
}
