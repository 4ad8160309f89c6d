package hls

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/prism-streaming/prism/pipeline"
)

// The fuzz targets of what an HLS player sends (the request path and the
// LL-HLS delivery directives) and of the token rewriting of the playlists
// it is sent. Run one with
//
//	go test -run '^$' -fuzz '^FuzzHLSPath$' -fuzztime 10s ./outputs/hls

// fuzzMaxInput bounds fuzzed inputs: net/http's default header limit bounds
// a request line, and playlists are far smaller.
const fuzzMaxInput = 1 << 20

// FuzzHLSPath feeds request targets, parsed as net/http's server parses
// them, to parsePath. It must never panic; it answers a route, a 400 or a
// 404 with a message; a route it accepts is the path exactly (stream, then
// index.m3u8 or epoch/dir/file), with a valid stream name, an epoch of 8
// hex digits, and nothing that looks like traversal.
func FuzzHLSPath(f *testing.F) {
	for _, target := range []string{
		"/hls/demo/index.m3u8",
		"/hls/demo/index.m3u8?token=abc",
		"/hls/demo/0123abcd/360p/video1_stream.m3u8",
		"/hls/demo/0123abcd/360p/video1_stream.m3u8?_HLS_msn=3&_HLS_part=1",
		"/hls/demo/0123abcd/_audio/audio2_stream.m3u8?_HLS_msn=3&_HLS_part=1&_HLS_skip=YES",
		"/hls/demo/0123abcd/360p/0123456789ab_video1_init.mp4",
		"/hls/demo/0123abcd/360p/0123456789ab_video1_seg17.mp4",
		"/hls/demo/0123abcd/360p/0123456789ab_video1_part85.mp4",
		"/hls/demo/../../etc/passwd",
		"/hls/demo/0123abcd/360p%2f..%2f/x.m3u8",
		"/hls/demo/0123abcd/%2e%2e/video1_stream.m3u8",
		"/hls/demo\\index.m3u8",
		"/hls/",
		"/hls/demo",
		"/index.m3u8",
	} {
		f.Add(target)
	}
	f.Fuzz(func(t *testing.T, target string) {
		if len(target) > fuzzMaxInput {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // net/http answers 400 before any handler
		}
		r := &http.Request{Method: http.MethodGet, URL: u, RequestURI: target, Header: http.Header{}}
		rt, code, msg := parsePath(r)
		switch code {
		case 0:
			if msg != "" {
				t.Fatalf("parsePath(%q): a route with message %q", target, msg)
			}
		case http.StatusBadRequest, http.StatusNotFound:
			if msg == "" {
				t.Fatalf("parsePath(%q): %d without a message", target, code)
			}
			return
		default:
			t.Fatalf("parsePath(%q): status %d", target, code)
		}
		p := u.Path
		if len(u.EscapedPath()) > maxPathBytes {
			t.Fatalf("accepted %q, longer than %d bytes", target, maxPathBytes)
		}
		if strings.ContainsAny(p, "\\\x00") {
			t.Fatalf("accepted %q: the path holds a backslash or NUL", target)
		}
		if !pipeline.ValidName(rt.stream) {
			t.Fatalf("accepted %q with stream %q", target, rt.stream)
		}
		want := mountPrefix + rt.stream + "/index.m3u8"
		if !rt.index {
			if !epochRE.MatchString(rt.epoch) || rt.dir == "" || rt.file == "" {
				t.Fatalf("accepted %q as %+v", target, rt)
			}
			for _, part := range []string{rt.dir, rt.file} {
				if strings.Contains(part, "/") || part == "." || part == ".." {
					t.Fatalf("accepted %q with path part %q", target, part)
				}
			}
			want = mountPrefix + strings.Join([]string{rt.stream, rt.epoch, rt.dir, rt.file}, "/")
		} else if rt.epoch != "" || rt.dir != "" || rt.file != "" {
			t.Fatalf("index route %q with more: %+v", target, rt)
		}
		if p != want {
			t.Fatalf("parsePath(%q) = %+v, which is the path %q", target, rt, want)
		}
	})
}

// FuzzHLSDirectives feeds query strings to parseDirectives. It must never
// panic; errors name the directive at fault; what it accepts is a media
// sequence number and part in 0..2^31-1, a part only with a sequence
// number, equal to the numbers in the query, and survives a round trip
// (the directives written back as a query parse the same).
func FuzzHLSDirectives(f *testing.F) {
	for _, q := range []string{
		"_HLS_msn=3&_HLS_part=1", "_HLS_msn=3", "_HLS_msn=3&_HLS_part=1&_HLS_skip=YES", "_HLS_msn=0&_HLS_skip=v2",
		"_HLS_msn=3&_HLS_part=1&token=abc", "_HLS_part=1", "_HLS_msn=-1", "_HLS_msn=2147483648", "_HLS_msn=1&_HLS_msn=2",
		"_HLS_skip=NO", "_HLS_msn=%33", "_HLS_msn=3;_HLS_part=1", "",
	} {
		f.Add(q)
	}
	const playlist = "/hls/demo/0123abcd/360p/video1_stream.m3u8"
	parse := func(rawQuery string) (directives, error) {
		return parseDirectives(&http.Request{Method: http.MethodGet, URL: &url.URL{Path: playlist, RawQuery: rawQuery}})
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		if len(rawQuery) > fuzzMaxInput {
			return
		}
		d, err := parse(rawQuery)
		if err != nil {
			if msg := err.Error(); !strings.Contains(msg, "_HLS_") {
				t.Fatalf("error %q names no directive", msg)
			}
			return
		}
		const maxNum = 1<<31 - 1
		if d.msn < 0 || d.msn > maxNum || d.part < 0 || d.part > maxNum {
			t.Fatalf("%q: directives %+v out of range", rawQuery, d)
		}
		q, _ := url.ParseQuery(rawQuery)
		_, hasMSN := q["_HLS_msn"]
		if d.hasMSN != hasMSN || (!d.hasMSN && (d.msn != 0 || d.part != 0)) {
			t.Fatalf("%q: directives %+v", rawQuery, d)
		}
		for key, n := range map[string]int{"_HLS_msn": d.msn, "_HLS_part": d.part} {
			if v, ok := q[key]; ok {
				if got, err := strconv.ParseUint(v[0], 10, 64); err != nil || got != uint64(n) {
					t.Fatalf("%q: %s parsed as %d", rawQuery, key, n)
				}
			}
		}
		back := url.Values{}
		if d.hasMSN {
			back.Set("_HLS_msn", strconv.Itoa(d.msn))
			if d.part != 0 {
				back.Set("_HLS_part", strconv.Itoa(d.part))
			}
		}
		if d.skip {
			back.Set("_HLS_skip", "YES")
		}
		if again, err := parse(back.Encode()); err != nil || again != d {
			t.Fatalf("%q: round trip of %+v through %q: %+v, %v", rawQuery, d, back.Encode(), again, err)
		}
	})
}

// FuzzWithToken feeds playlists and tokens to withToken. It must never
// panic; it keeps the lines and their endings; every URI line gets the
// token (with '?' or '&' as the URI needs), so every non-comment non-empty
// line holds "token="; a tag line changes only by the token added at the
// end of its URI="..." attributes.
func FuzzWithToken(f *testing.F) {
	media := "#EXTM3U\n#EXT-X-VERSION:10\n#EXT-X-TARGETDURATION:1\n" +
		"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6\n#EXT-X-PART-INF:PART-TARGET=0.2\n" +
		"#EXT-X-MAP:URI=\"0123456789ab_video1_init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-12-01T00:00:00Z\n" +
		"#EXT-X-PART:DURATION=0.2,URI=\"0123456789ab_video1_part0.mp4\",INDEPENDENT=YES\n#EXTINF:1.0,\n" +
		"0123456789ab_video1_seg0.mp4\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"0123456789ab_video1_part5.mp4\"\n" +
		"#EXT-X-RENDITION-REPORT:URI=\"../270p/video1_stream.m3u8\",LAST-MSN=1,LAST-PART=0\n"
	multivariant := "#EXTM3U\r\n#EXT-X-VERSION:9\r\n#EXT-X-INDEPENDENT-SEGMENTS\r\n" +
		"#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"main\",DEFAULT=YES,URI=\"0123abcd/_audio/audio2_stream.m3u8\"\r\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=2928000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"audio\"\r\n" +
		"0123abcd/720p/video1_stream.m3u8\r\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=764000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"audio\"\r\n" +
		"0123abcd/360p/video1_stream.m3u8?_HLS_msn=3\r\n"
	for _, token := range []string{"abc", "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln", "a b&c=d?#\"\n", ""} {
		f.Add([]byte(media), token)
		f.Add([]byte(multivariant), token)
	}
	f.Add([]byte("#EXTM3U\n#EXT-X-MAP:URI=\"unterminated\nplain\r\r\n\n  \n#URI=\"\"URI=\"x?y\""), "t")
	f.Fuzz(func(t *testing.T, playlist []byte, token string) {
		if len(playlist) > fuzzMaxInput || len(token) > 4096 {
			return
		}
		out := withToken(playlist, token)
		param := TokenParam + "=" + url.QueryEscape(token)
		in, got := strings.SplitAfter(string(playlist), "\n"), strings.SplitAfter(string(out), "\n")
		if len(in) != len(got) {
			t.Fatalf("%d lines became %d", len(in), len(got))
		}
		// What withToken adds at the end of a URI="..." attribute.
		strip := strings.NewReplacer("?"+param+`"`, `"`, "&"+param+`"`, `"`)
		for i := range in {
			inBody, outBody := strings.TrimRight(in[i], "\r\n"), strings.TrimRight(got[i], "\r\n")
			if in[i][len(inBody):] != got[i][len(outBody):] {
				t.Fatalf("line %d: the line ending changed: %q -> %q", i+1, in[i], got[i])
			}
			switch {
			case inBody == "":
				if outBody != "" {
					t.Fatalf("line %d: an empty line became %q", i+1, outBody)
				}
			case !strings.HasPrefix(inBody, "#"):
				sep := "?"
				if strings.Contains(inBody, "?") {
					sep = "&"
				}
				if outBody != inBody+sep+param || !strings.Contains(outBody, "token=") {
					t.Fatalf("line %d: URI %q became %q, want the token %q added", i+1, inBody, outBody, param)
				}
			case !strings.Contains(inBody, param):
				if back := strip.Replace(outBody); back != inBody {
					t.Fatalf("line %d: tag %q became %q: more changed than its URI attributes", i+1, inBody, outBody)
				}
			}
		}
	})
}
