package webrtc

import "errors"

// Errors returned by the server and the publisher. HTTP handlers map them to
// status codes; callers match them with errors.Is.
var (
	// ErrInvalidConfig wraps every configuration problem found by Validate.
	ErrInvalidConfig = errors.New("invalid webrtc configuration")
	// ErrStreamNotFound: no running stream has that name.
	ErrStreamNotFound = errors.New("stream not found")
	// ErrSessionNotFound: no WHEP session has that ID (it ended or never existed).
	ErrSessionNotFound = errors.New("session not found")
	// ErrTooManySessions: the server is at webrtc.max_sessions.
	ErrTooManySessions = errors.New("too many sessions")
	// ErrBadOffer: the SDP offer could not be parsed or applied.
	ErrBadOffer = errors.New("bad SDP offer")
	// ErrUnsupportedOffer: the offer is well formed but cannot be served
	// (no H.264 with packetization-mode=1, no Opus, or nothing to receive).
	ErrUnsupportedOffer = errors.New("unsupported SDP offer")
	// ErrUnknownRung: a pin named a rung the stream does not have.
	ErrUnknownRung = errors.New("unknown rung")
	// ErrICERestart: a PATCH asked for an ICE restart, which sessions do not support.
	ErrICERestart = errors.New("ICE restart not supported")
	// ErrServerClosed: the server is shutting down.
	ErrServerClosed = errors.New("webrtc server closed")
	// ErrWHIP: the WHIP endpoint refused or failed the publish.
	ErrWHIP = errors.New("WHIP publish failed")
)
