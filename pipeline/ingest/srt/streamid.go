package srt

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

// Streamid refusals. Their messages never echo the streamid: it carries
// the publisher's key.
var (
	// ErrNoStreamID: the caller sent no streamid (or a v4 handshake, which
	// cannot carry one).
	ErrNoStreamID = errors.New("srt: no streamid")
	// ErrStreamID: the streamid has neither accepted form.
	ErrStreamID = errors.New("srt: malformed streamid")
)

// ModePublish is the only mode Prism takes: players use HLS or WebRTC.
const ModePublish = "publish"

// acPrefix starts the SRT access-control form of a streamid.
const acPrefix = "#!::"

// StreamID is a caller's streamid, parsed.
type StreamID struct {
	// Mode is lower-case: "publish", or what a player asks for ("request",
	// "play", ...), which the server refuses.
	Mode   string
	Stream string
	// Key is the credential: the key, s= or t=, or the query's key= or
	// token=. Never log it.
	Key string
	// Query holds the other fields (the query, or the access-control keys
	// other than r, m, s and t), without the credential.
	Query url.Values
}

// ParseStreamID parses the two forms a publisher may send:
//
//	<mode>:<stream>[:<key>][?k=v&...]
//	#!::r=<stream>,m=<mode>[,u=<user>][,s=<key>][,t=<token>][,<k>=<v>...]
//
// In the first form the key is everything after the second ':' up to the
// first '?', so it may contain ':' (mediamtx's user:pass lands there whole)
// but not '?'. Without a key there, the query's key= and then token= give
// it; both are removed from Query either way. In the access-control form s
// wins over t, m defaults to "request" (as the SRT spec says), values are
// taken as they are (no commas, no escaping) and a key given twice is
// refused. The stream must pass pipeline.ValidName, else the error wraps
// ingest.ErrNotFound.
func ParseStreamID(id string) (StreamID, error) {
	if id == "" {
		return StreamID{}, ErrNoStreamID
	}
	var (
		sid StreamID
		err error
	)
	if body, ok := strings.CutPrefix(id, acPrefix); ok {
		sid, err = parseAccessControl(body)
	} else {
		sid, err = parseColonForm(id)
	}
	if err != nil {
		return StreamID{}, err
	}
	if sid.Mode == "" {
		return StreamID{}, fmt.Errorf("%w: empty mode", ErrStreamID)
	}
	if !pipeline.ValidName(sid.Stream) {
		return StreamID{}, fmt.Errorf("%w: the stream name must be letters, digits, '-' and '_' (at most 64)", ingest.ErrNotFound)
	}
	return sid, nil
}

func parseColonForm(id string) (StreamID, error) {
	path, rawQuery, hasQuery := strings.Cut(id, "?")
	mode, rest, ok := strings.Cut(path, ":")
	if !ok {
		return StreamID{}, fmt.Errorf("%w: want publish:<stream>[:<key>]", ErrStreamID)
	}
	stream, key, _ := strings.Cut(rest, ":")
	q := url.Values{}
	if hasQuery {
		var err error
		if q, err = url.ParseQuery(rawQuery); err != nil {
			// err quotes the bad part, which may be the token.
			return StreamID{}, fmt.Errorf("%w: bad query", ErrStreamID)
		}
	}
	for _, name := range []string{"key", "token"} {
		if key == "" {
			key = q.Get(name)
		}
		q.Del(name)
	}
	return StreamID{Mode: strings.ToLower(mode), Stream: stream, Key: key, Query: q}, nil
}

func parseAccessControl(body string) (StreamID, error) {
	sid := StreamID{Mode: "request", Query: url.Values{}}
	var s, t string
	seen := map[string]bool{}
	for field := range strings.SplitSeq(body, ",") {
		if field == "" {
			continue
		}
		k, v, ok := strings.Cut(field, "=")
		if !ok || k == "" {
			return StreamID{}, fmt.Errorf("%w: access-control fields are key=value", ErrStreamID)
		}
		if seen[k] {
			return StreamID{}, fmt.Errorf("%w: a field is given twice", ErrStreamID)
		}
		seen[k] = true
		switch k {
		case "r":
			sid.Stream = v
		case "m":
			sid.Mode = strings.ToLower(v)
		case "s":
			s = v
		case "t":
			t = v
		default:
			sid.Query.Set(k, v)
		}
	}
	sid.Key = s
	if sid.Key == "" {
		sid.Key = t
	}
	return sid, nil
}
