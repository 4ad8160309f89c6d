package jobs

import "context"

// A job is priced at submission from its ladder's nominal cost (a 1080p30
// source: the input's size is not known yet), or, for a pushed stream,
// from the publisher's source (IngestSpec). Once the job runs, its runner
// reports the real cost (the rungs planned for the actual source) and the
// owner's capacity accounting and the job record take it: a 720p source
// on a ladder with a 1080p rung costs less than half the nominal figure.

type costReporterKey struct{}

// WithCostReporter returns a context that carries report, for ReportCost.
func WithCostReporter(ctx context.Context, report func(pixelsPerSecond float64)) context.Context {
	return context.WithValue(ctx, costReporterKey{}, report)
}

// ReportCost tells the job's owner what the running job really costs. A
// runner calls it with the context it was given; without a reporter in it
// nothing happens.
func ReportCost(ctx context.Context, pixelsPerSecond float64) {
	if f, ok := ctx.Value(costReporterKey{}).(func(float64)); ok && pixelsPerSecond > 0 {
		f(pixelsPerSecond)
	}
}

// SourceCost prices a ladder reference for a known source (width, height,
// frame rate); see StoreConfig.SourceCost.
type SourceCost func(ref, inlineYAML string, width, height int, fps float64) (float64, error)

type heldCostKey struct{}

// withHeldCost returns a context whose HeldCost asks held.
func withHeldCost(ctx context.Context, held func() float64) context.Context {
	return context.WithValue(ctx, heldCostKey{}, held)
}

// HeldCost is the capacity (pixels per second) the node holds for the job
// whose runner was given ctx: the job's cost when it was claimed, its real
// cost once the runner reported that (ReportCost). A runner sizes the
// job's CPU share from it, so that the jobs a node admitted by capacity
// share its cores. 0 outside a Node's runner.
func HeldCost(ctx context.Context) float64 {
	if f, ok := ctx.Value(heldCostKey{}).(func() float64); ok {
		return f()
	}
	return 0
}
