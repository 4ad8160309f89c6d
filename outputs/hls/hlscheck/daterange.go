package hlscheck

import (
	"bytes"
	"strings"
	"time"
)

// DateRange is an EXT-X-DATERANGE tag as seen in a media playlist.
type DateRange struct {
	ID, Class string
	Start     time.Time
	Attrs     map[string]string // every attribute, quoted values unquoted
}

// checkDateRanges checks the EXT-X-DATERANGE tags of media playlist name
// (RFC 8216bis 4.4.5.1): ID is required, START-DATE parses, and a tag
// never changes the START-DATE of an ID seen before, in any playlist of
// the stream (a player would move the event).
func (c *Checker) checkDateRanges(name string, body []byte) {
	for line := range bytes.Lines(body) {
		s, ok := strings.CutPrefix(strings.TrimRight(string(line), "\r\n"), "#EXT-X-DATERANGE:")
		if !ok {
			continue
		}
		attrs, err := parseAttrs(s)
		if err != nil {
			c.problem("%s: EXT-X-DATERANGE %q: %v", name, s, err)
			continue
		}
		id := attrs["ID"]
		if id == "" {
			c.problem("%s: EXT-X-DATERANGE without ID: %q", name, s)
			continue
		}
		start, err := time.Parse(time.RFC3339Nano, attrs["START-DATE"])
		if err != nil {
			c.problem("%s: EXT-X-DATERANGE %s: START-DATE: %v", name, id, err)
			continue
		}
		c.mu.Lock()
		if c.ranges == nil {
			c.ranges = map[string]DateRange{}
		}
		old, seen := c.ranges[id]
		if !seen {
			c.ranges[id] = DateRange{ID: id, Class: attrs["CLASS"], Start: start, Attrs: attrs}
		}
		c.mu.Unlock()
		if seen && !old.Start.Equal(start) {
			c.problem("%s: EXT-X-DATERANGE %s: START-DATE %v, was %v", name, id, start, old.Start)
		}
	}
}

// DateRanges returns the date ranges seen, by ID (the first sighting).
func (c *Checker) DateRanges() map[string]DateRange {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]DateRange, len(c.ranges))
	for k, v := range c.ranges {
		out[k] = v
	}
	return out
}

// parseAttrs splits an attribute list (RFC 8216bis 4.2): NAME=value pairs
// separated by commas, values quoted strings or bare tokens.
func parseAttrs(s string) (map[string]string, error) {
	out := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, errAttr("attribute without '='")
		}
		name := s[:eq]
		s = s[eq+1:]
		var v string
		if strings.HasPrefix(s, `"`) {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, errAttr("unterminated quoted string")
			}
			v, s = s[1:1+end], s[2+end:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			v, s = s[:end], s[end:]
		}
		if _, dup := out[name]; dup {
			return nil, errAttr("attribute " + name + " twice")
		}
		out[name] = v
		if s != "" {
			if s[0] != ',' {
				return nil, errAttr("garbage after attribute " + name)
			}
			s = s[1:]
		}
	}
	return out, nil
}

type errAttr string

func (e errAttr) Error() string { return string(e) }
