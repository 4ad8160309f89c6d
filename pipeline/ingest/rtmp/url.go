package rtmp

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

// App is the only RTMP application publishers may use.
const App = "live"

// ParseURL splits a publish URL, rtmp://host[:port]/live/<stream>?key=<k>
// (or ?token=<t>), into the stream name, the credential and the remaining
// query. gortmplib joins tcUrl and the stream key into this URL, so OBS's
// Server rtmp://host/live and Stream Key <stream>?key=<k> arrive the same
// way. Errors wrap ingest.ErrNotFound (a bad app or stream name) or
// ingest.ErrUnauthorized (an ambiguous credential); they never quote it.
func ParseURL(u *url.URL) (stream, key string, query url.Values, err error) {
	if u == nil {
		return "", "", nil, fmt.Errorf("%w: no URL", ingest.ErrNotFound)
	}
	// Empty segments are dropped: "rtmp://host/live/" as the server URL
	// gives "/live//cam".
	var segs []string
	for s := range strings.SplitSeq(u.Path, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	if len(segs) == 0 || segs[0] != App {
		return "", "", nil, fmt.Errorf("%w: the application must be %q", ingest.ErrNotFound, App)
	}
	if len(segs) != 2 {
		return "", "", nil, fmt.Errorf("%w: the URL must be rtmp://host/%s/<stream>", ingest.ErrNotFound, App)
	}
	stream = segs[1]
	if !pipeline.ValidName(stream) {
		return "", "", nil, fmt.Errorf("%w: invalid stream name (letters, digits, '-' and '_', at most 64)", ingest.ErrNotFound)
	}
	query, qerr := url.ParseQuery(u.RawQuery)
	if qerr != nil {
		// The message of url.ParseQuery quotes the bad escape, which may be
		// part of the key.
		return "", "", nil, fmt.Errorf("%w: malformed query", ingest.ErrNotFound)
	}
	creds := append(query["token"], query["key"]...)
	switch len(creds) {
	case 0:
	case 1:
		key = creds[0]
	default:
		return "", "", nil, fmt.Errorf("%w: more than one key or token in the URL", ingest.ErrUnauthorized)
	}
	query.Del("token")
	query.Del("key")
	return stream, key, query, nil
}
