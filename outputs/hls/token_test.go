package hls

import (
	"strings"
	"testing"
)

func TestWithTokenCarriesTheTokenOnEveryURI(t *testing.T) {
	media := `#EXTM3U
#EXT-X-VERSION:10
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6
#EXT-X-PART-INF:PART-TARGET=0.2
#EXT-X-MAP:URI="a1_video1_init.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-12-01T00:00:00Z
#EXT-X-PART:DURATION=0.2,URI="a1_video1_part0.mp4",INDEPENDENT=YES
#EXTINF:1.0,
a1_video1_seg0.mp4
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="a1_video1_part5.mp4"
#EXT-X-RENDITION-REPORT:URI="../270p/video1_stream.m3u8",LAST-MSN=1,LAST-PART=0
`
	got := string(withToken([]byte(media), "a b&c"))
	const q = "?token=a+b%26c"
	for _, want := range []string{
		`URI="a1_video1_init.mp4` + q + `"`,
		`URI="a1_video1_part0.mp4` + q + `",INDEPENDENT=YES`,
		"\na1_video1_seg0.mp4" + q + "\n",
		`URI="a1_video1_part5.mp4` + q + `"`,
		`URI="../270p/video1_stream.m3u8` + q + `",LAST-MSN=1`,
		"#EXT-X-PART-INF:PART-TARGET=0.2\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if n := strings.Count(got, "token="); n != 5 {
		t.Errorf("%d tokens, want 5:\n%s", n, got)
	}
	multivariant := "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",URI=\"e1/aac/audio2_stream.m3u8\"\r\n#EXT-X-STREAM-INF:BANDWIDTH=1\r\ne1/360p/video1_stream.m3u8?x=1\r\n"
	got = string(withToken([]byte(multivariant), "t"))
	if !strings.Contains(got, `URI="e1/aac/audio2_stream.m3u8?token=t"`) || !strings.Contains(got, "e1/360p/video1_stream.m3u8?x=1&token=t\r\n") {
		t.Errorf("multivariant:\n%s", got)
	}
}
