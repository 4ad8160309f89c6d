package bus

import "errors"

// Errors callers can test for with errors.Is; every error about one of
// these wraps it with %w and names the server or option.
var (
	// ErrEmbedded: the embedded nats-server could not start or has no
	// JetStream.
	ErrEmbedded = errors.New("embedded nats-server")
	// ErrConnect: a connection option is unusable (missing file, bad
	// combination).
	ErrConnect = errors.New("nats connect")
)
