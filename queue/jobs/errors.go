package jobs

import "errors"

// Errors callers can test for with errors.Is. Every error the package
// returns about one of these conditions wraps the sentinel with %w and says
// which job, field or node it is about.
var (
	// ErrInvalidSpec: a Spec field is malformed (the message names it).
	ErrInvalidSpec = errors.New("invalid job spec")
	// ErrJobExists: a different spec was submitted under the id of a job
	// that is still pending, starting, running or stopping.
	ErrJobExists = errors.New("job already exists with a different spec")
	// ErrJobActive: the job has not ended (Delete needs it stopped or
	// failed).
	ErrJobActive = errors.New("job has not ended")
	// ErrJobNotFound: no job has this id.
	ErrJobNotFound = errors.New("job not found")
	// ErrConflict: a revision-checked (CAS) update lost against a concurrent
	// writer; re-read the job and decide again.
	ErrConflict = errors.New("job changed concurrently")
	// ErrNodeConfig: a Node field is missing or out of range.
	ErrNodeConfig = errors.New("invalid node configuration")
	// ErrCorruptJob: a job's record in the store does not decode (written
	// by something other than this package, or damaged). List skips such
	// records and Corrupt names them; Delete purges one.
	ErrCorruptJob = errors.New("corrupt job record")
	// ErrTooManyJobs: the store holds StoreConfig.MaxJobs jobs already;
	// delete ended ones before submitting new ones.
	ErrTooManyJobs = errors.New("too many jobs")
)
