package hls

import (
	"bytes"
	"net/url"
	"strings"
)

// TokenParam is the query parameter that carries a playback token. The HLS
// output does not judge it (the server's authorization does, in front of
// it): it carries it onto every URI it writes, so a player given a signed
// multivariant playlist URL fetches every playlist, part, segment, init
// section and rendition report below it with the same token.
const TokenParam = "token"

// withToken appends token as TokenParam to every URI in playlist: the URI
// lines and every URI="..." attribute (EXT-X-MEDIA, EXT-X-MAP, EXT-X-PART,
// EXT-X-PRELOAD-HINT, EXT-X-RENDITION-REPORT).
func withToken(playlist []byte, token string) []byte {
	param := TokenParam + "=" + url.QueryEscape(token)
	carry := func(uri string) string {
		if strings.Contains(uri, "?") {
			return uri + "&" + param
		}
		return uri + "?" + param
	}
	var out bytes.Buffer
	out.Grow(len(playlist) + 64*bytes.Count(playlist, []byte("\n")))
	for _, line := range strings.SplitAfter(string(playlist), "\n") {
		body := strings.TrimRight(line, "\r\n")
		end := line[len(body):]
		switch {
		case body == "":
		case !strings.HasPrefix(body, "#"):
			body = carry(body)
		default:
			var b strings.Builder
			rest := body
			for {
				i := strings.Index(rest, `URI="`)
				if i < 0 {
					break
				}
				j := strings.IndexByte(rest[i+5:], '"')
				if j < 0 {
					break
				}
				b.WriteString(rest[:i+5])
				b.WriteString(carry(rest[i+5 : i+5+j]))
				rest = rest[i+5+j:]
			}
			b.WriteString(rest)
			body = b.String()
		}
		out.WriteString(body)
		out.WriteString(end)
	}
	return out.Bytes()
}

// tokenOf is the request's playback token, if any.
func tokenOf(q url.Values) string { return q.Get(TokenParam) }
