package ladder

import (
	"strconv"
	"strings"
)

// Field paths name a value the way errors print it: "rungs[2].bitrate".

func childPath(parent, key string) string {
	if !isPlainKey(key) {
		// Keep odd keys (dots, brackets, newlines) from breaking the path
		// or the one-line error format.
		return parent + "[" + strconv.Quote(clip(key)) + "]"
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func indexPath(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
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

// parentPath strips the last element: "rungs[2].bitrate" -> "rungs[2]" ->
// "rungs" -> "".
func parentPath(path string) string {
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
