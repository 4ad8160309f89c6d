package queue

import "errors"

// Errors callers can test for with errors.Is. Every error the package
// returns about one of these conditions wraps the sentinel with %w and says
// which job, field or server it is about.
var (
	// ErrInvalidSpec: a JobSpec field is malformed (the message names it).
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
	// ErrEmbedded: the embedded nats-server could not start or has no
	// JetStream.
	ErrEmbedded = errors.New("embedded nats-server")
	// ErrConnect: a connection option is unusable (missing file, bad
	// combination).
	ErrConnect = errors.New("nats connect")
	// ErrNodeConfig: a Node field is missing or out of range.
	ErrNodeConfig = errors.New("invalid node configuration")
	// ErrStreamNotFound: no publisher answers for a media stream.
	ErrStreamNotFound = errors.New("media stream not found")
	// ErrStreamGone: a subscribed media stream stopped without saying so
	// (its publisher went silent) or its publisher reported an error.
	ErrStreamGone = errors.New("media stream gone")
	// ErrWire: a media message is not in the format wire.go describes.
	ErrWire = errors.New("malformed media message")
)
