package webrtc

import (
	"errors"
	"fmt"
)

// Errors returned by the server and the publisher. HTTP handlers map them to
// status codes; callers match them with errors.Is.
var (
	// ErrInvalidConfig wraps every configuration problem found by Validate.
	ErrInvalidConfig = errors.New("invalid webrtc configuration")
	// ErrStreamNotFound: no running stream has that name.
	ErrStreamNotFound = errors.New("stream not found")
	// ErrSessionNotFound: no WHEP session has that ID (it ended or never existed).
	ErrSessionNotFound = errors.New("session not found")
	// ErrTooManySessions: the server is at webrtc.max_sessions. The
	// per-client and per-stream caps wrap it.
	ErrTooManySessions = errors.New("too many sessions")
	// ErrTooManySessionsPerIP: the client's address is at webrtc.max_sessions_per_ip.
	ErrTooManySessionsPerIP = fmt.Errorf("%w from this address", ErrTooManySessions)
	// ErrTooManySessionsPerStream: the stream is at webrtc.max_sessions_per_stream.
	ErrTooManySessionsPerStream = fmt.Errorf("%w of this stream", ErrTooManySessions)
	// ErrOfferTimeout: the request body did not arrive within webrtc.offer_timeout.
	ErrOfferTimeout = errors.New("request body not received in time")
	// ErrBodyTooLarge: the request body is larger than a WHEP body may be.
	ErrBodyTooLarge = errors.New("request body too large")
	// ErrTooManyCandidates: the viewer sent more ICE candidates than
	// webrtc.max_candidates allows for one session.
	ErrTooManyCandidates = errors.New("too many ICE candidates")
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
