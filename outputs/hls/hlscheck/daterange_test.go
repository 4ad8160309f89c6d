package hlscheck

import (
	"strings"
	"testing"
)

// TestDateRanges: EXT-X-DATERANGE is checked for an ID, a START-DATE that
// parses, and an ID that keeps its START-DATE.
func TestDateRanges(t *testing.T) {
	c := New(nil)
	c.checkDateRanges("a", []byte("#EXTM3U\n#EXT-X-DATERANGE:ID=\"x\",CLASS=\"bid\",START-DATE=\"2026-12-03T10:00:03.050Z\",X-PTS=274500\n"))
	c.checkDateRanges("b", []byte("#EXT-X-DATERANGE:ID=\"x\",START-DATE=\"2026-12-03T10:00:03.050Z\"\n"))
	if p := c.Problems(); len(p) != 0 {
		t.Fatalf("valid tags refused: %v", p)
	}
	if d := c.DateRanges()["x"]; d.Class != "bid" || d.Attrs["X-PTS"] != "274500" {
		t.Errorf("parsed %+v", d)
	}
	for _, bad := range []string{
		`START-DATE="2026-12-03T10:00:03.050Z"`,
		`ID="y",START-DATE="yesterday"`,
		`ID="x",START-DATE="2026-12-03T10:00:03.083Z"`,
		`ID="z,START-DATE="2026-12-03T10:00:03.083Z"`,
	} {
		c := New(nil)
		c.checkDateRanges("a", []byte("#EXT-X-DATERANGE:ID=\"x\",START-DATE=\"2026-12-03T10:00:03.050Z\"\n#EXT-X-DATERANGE:"+bad+"\n"))
		if p := c.Problems(); len(p) != 1 || !strings.Contains(p[0], "DATERANGE") {
			t.Errorf("%s: problems %v, want one", bad, p)
		}
	}
}
