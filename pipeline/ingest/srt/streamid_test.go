package srt

import (
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/pipeline/ingest"
)

func TestParseStreamID(t *testing.T) {
	for _, ca := range []struct {
		name, id string
		want     StreamID
		err      error
	}{
		{"publish", "publish:cam", StreamID{Mode: "publish", Stream: "cam", Query: url.Values{}}, nil},
		{"publish with key", "publish:cam:secret", StreamID{Mode: "publish", Stream: "cam", Key: "secret", Query: url.Values{}}, nil},
		{"key with colons", "publish:cam:user:pa:ss", StreamID{Mode: "publish", Stream: "cam", Key: "user:pa:ss", Query: url.Values{}}, nil},
		{"upper-case mode", "PUBLISH:cam:k", StreamID{Mode: "publish", Stream: "cam", Key: "k", Query: url.Values{}}, nil},
		{"query token", "publish:cam?token=jwt.a.b&x=1", StreamID{Mode: "publish", Stream: "cam", Key: "jwt.a.b", Query: url.Values{"x": {"1"}}}, nil},
		{"query key", "publish:cam?key=k1&token=t1", StreamID{Mode: "publish", Stream: "cam", Key: "k1", Query: url.Values{}}, nil},
		{"path key wins", "publish:cam:k0?token=t1", StreamID{Mode: "publish", Stream: "cam", Key: "k0", Query: url.Values{}}, nil},
		{"play", "play:cam", StreamID{Mode: "play", Stream: "cam", Query: url.Values{}}, nil},
		{"access control", "#!::r=cam2,m=publish,s=secret", StreamID{Mode: "publish", Stream: "cam2", Key: "secret", Query: url.Values{}}, nil},
		{"access control user token", "#!::u=alice,r=cam2,m=publish,t=tok,h=example.com", StreamID{Mode: "publish", Stream: "cam2", Key: "tok", Query: url.Values{"u": {"alice"}, "h": {"example.com"}}}, nil},
		{"access control s over t", "#!::r=cam,m=publish,s=a,t=b", StreamID{Mode: "publish", Stream: "cam", Key: "a", Query: url.Values{}}, nil},
		{"access control trailing comma", "#!::r=cam,m=publish,", StreamID{Mode: "publish", Stream: "cam", Query: url.Values{}}, nil},
		{"access control default mode", "#!::r=cam", StreamID{Mode: "request", Stream: "cam", Query: url.Values{}}, nil},
		{"empty", "", StreamID{}, ErrNoStreamID},
		{"no colon", "cam", StreamID{}, ErrStreamID},
		{"empty mode", ":cam:k", StreamID{}, ErrStreamID},
		{"bad query", "publish:cam?token=%zz", StreamID{}, ErrStreamID},
		{"ac no equals", "#!::r=cam,publish", StreamID{}, ErrStreamID},
		{"ac duplicate", "#!::r=cam,m=publish,r=other", StreamID{}, ErrStreamID},
		{"ac empty mode", "#!::r=cam,m=", StreamID{}, ErrStreamID},
		{"bad name", "publish:live/cam:k", StreamID{}, ingest.ErrNotFound},
		{"empty name", "publish::k", StreamID{}, ingest.ErrNotFound},
		{"long name", "publish:" + strings.Repeat("a", 65), StreamID{}, ingest.ErrNotFound},
		{"ac no resource", "#!::m=publish,s=k", StreamID{}, ingest.ErrNotFound},
	} {
		t.Run(ca.name, func(t *testing.T) {
			got, err := ParseStreamID(ca.id)
			if !errors.Is(err, ca.err) {
				t.Fatalf("error %v, want %v", err, ca.err)
			}
			if ca.err != nil {
				return
			}
			if !reflect.DeepEqual(got, ca.want) {
				t.Fatalf("got %+v, want %+v", got, ca.want)
			}
		})
	}
}

// TestParseStreamIDKeepsSecrets: no error message repeats the credential.
func TestParseStreamIDKeepsSecrets(t *testing.T) {
	for _, id := range []string{
		"publish:bad/name:SECRET", "SECRET", "publish:cam?token=SECRET%zz", "#!::r=bad/x,s=SECRET",
		"#!::s=SECRET,s=SECRET", "#!::SECRET", "publish:cam:SECRET?%", "SECRET:cam",
	} {
		_, err := ParseStreamID(id)
		if err == nil {
			continue
		}
		if strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%q: the error repeats the key: %v", id, err)
		}
	}
}

// FuzzParseStreamID: no streamid panics the parser; one it accepts has a
// valid stream name and a lower-case mode, keeps the credential out of
// Query, and parses the same the second time.
func FuzzParseStreamID(f *testing.F) {
	for _, s := range []string{
		"publish:cam", "publish:cam:secret", "publish:cam:user:pass", "publish:cam?token=abc&x=1",
		"publish:cam:k?key=k2", "play:cam", "request:cam", "#!::r=cam2,m=publish,s=secret",
		"#!::r=cam2,m=publish,u=alice,t=tok", "#!::r=cam", "#!::r=cam,m=publish,r=dup", "#!::", "#!::=",
		"", ":", "::", "cam", "publish:cam?%zz", "publish:" + strings.Repeat("x", 600),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		sid, err := ParseStreamID(id)
		if err != nil {
			if !errors.Is(err, ErrNoStreamID) && !errors.Is(err, ErrStreamID) && !errors.Is(err, ingest.ErrNotFound) {
				t.Fatalf("%q: unexpected error %v", id, err)
			}
			return
		}
		if !pipeline.ValidName(sid.Stream) {
			t.Fatalf("%q: invalid stream name %q accepted", id, sid.Stream)
		}
		if sid.Mode == "" || sid.Mode != strings.ToLower(sid.Mode) {
			t.Fatalf("%q: mode %q", id, sid.Mode)
		}
		if sid.Query == nil {
			t.Fatalf("%q: nil Query", id)
		}
		for _, k := range []string{"key", "token"} {
			if !strings.HasPrefix(id, acPrefix) && sid.Query.Has(k) {
				t.Fatalf("%q: the credential %s= stayed in Query", id, k)
			}
		}
		for _, k := range []string{"r", "m", "s", "t"} {
			if strings.HasPrefix(id, acPrefix) && sid.Query.Has(k) {
				t.Fatalf("%q: field %s= stayed in Query", id, k)
			}
		}
		again, err := ParseStreamID(id)
		if err != nil || !reflect.DeepEqual(sid, again) {
			t.Fatalf("%q: second parse differs: %+v, %v", id, again, err)
		}
	})
}
