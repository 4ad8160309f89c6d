package relay

import "errors"

// Errors callers can test for with errors.Is; every error about one of
// these wraps it with %w and names the stream.
var (
	// ErrStreamNotFound: no publisher answers for a media stream.
	ErrStreamNotFound = errors.New("media stream not found")
	// ErrStreamGone: a subscribed media stream stopped without saying so
	// (its publisher went silent) or its publisher reported an error.
	ErrStreamGone = errors.New("media stream gone")
	// ErrWire: a media message is not in the format wire.go describes.
	ErrWire = errors.New("malformed media message")
	// ErrTracksChanged ends a followed stream whose new publisher has other
	// tracks (another ladder): outputs must start over with the new ones.
	ErrTracksChanged = errors.New("the stream's tracks changed")
)
