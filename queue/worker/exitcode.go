package worker

import (
	"errors"

	"github.com/prism-streaming/prism/transcode"
)

// Exit codes of `prism worker`: the contract between a worker process and
// the Supervisor that started it.
const (
	ExitInputEnded       = 0 // the input ended: a live source stopped
	ExitFailed           = 1 // anything else: counts as a failed attempt
	ExitInputUnavailable = 3 // the input could not be opened or decoded
)

// ExitError carries a worker's exit code out of Child, to the process's
// main.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// exitCode is the code a job's error ends its worker with.
func exitCode(err error) int {
	if err == nil {
		return ExitInputEnded
	}
	for _, e := range []error{transcode.ErrOpenInput, transcode.ErrNoVideo, transcode.ErrDecode} {
		if errors.Is(err, e) {
			return ExitInputUnavailable
		}
	}
	return ExitFailed
}

// inputGone reports whether a code says the input went away rather than
// the worker failing: a live stream (Spec.Restart) tries it again.
func inputGone(code int) bool { return code == ExitInputEnded || code == ExitInputUnavailable }
