package yamlfile

import (
	"strconv"
	"strings"
)

// Field paths name a value the way errors print it: "streams[2].ladder".

// Lines maps field paths to the 1-based line of their key (or list item);
// "" is the top-level value. A nil Lines stands for values built in code.
type Lines map[string]int

// Line returns the line of field, or of the nearest enclosing field that l
// has, so that a missing key is reported at its mapping; 0 if none.
func (l Lines) Line(field string) int {
	for p := field; ; p = Parent(p) {
		if line, ok := l[p]; ok {
			return line
		}
		if p == "" {
			return 0
		}
	}
}

// Key returns the path of key in the mapping at parent.
func Key(parent, key string) string {
	if !isPlainKey(key) {
		// Keep odd keys (dots, brackets, newlines) from breaking the path
		// or the one-line error format.
		return parent + "[" + strconv.Quote(clip(key)) + "]"
	}
	return Join(parent, key)
}

// Index returns the path of item i of the list at parent.
func Index(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// Join appends the path rel, relative to parent, to parent:
// Join("hls", "cors_origins[1]") is "hls.cors_origins[1]".
func Join(parent, rel string) string {
	switch {
	case parent == "":
		return rel
	case rel == "":
		return parent
	case rel[0] == '[':
		return parent + rel
	}
	return parent + "." + rel
}

// Parent strips the last element: "rungs[2].bitrate" -> "rungs[2]" ->
// "rungs" -> "".
func Parent(path string) string {
	cut := max(strings.LastIndexByte(path, '.'), strings.LastIndexByte(path, '['))
	if cut < 0 {
		return ""
	}
	// A quoted key may itself contain '.' or '['; step over it whole.
	if strings.HasSuffix(path, "\"]") {
		if open := strings.LastIndex(path, "[\""); open >= 0 {
			cut = open
		}
	}
	return path[:cut]
}

func isPlainKey(key string) bool {
	if key == "" || len(key) > 64 {
		return false
	}
	for _, c := range key {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// clip shortens user input echoed in paths.
func clip(s string) string {
	const maxLen = 40
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "..."
}
