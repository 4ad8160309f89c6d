package ladder

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// locatedError is the shape every line of a Parse error must have.
var locatedError = regexp.MustCompile(`^[^:]+:\d+: `)

// FuzzParse checks that Parse never panics, that its errors are always
// located ("file:line: ..."), and that what it accepts is valid. Seeds are in
// testdata/fuzz/FuzzParse plus the shipped ladders.
func FuzzParse(f *testing.F) {
	shipped, _ := filepath.Glob(filepath.Join(shippedDir, "*.yaml"))
	for _, file := range shipped {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse("fuzz.yaml", data)
		if err != nil {
			if l != nil {
				t.Fatalf("Parse returned both a ladder and an error: %v", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not match ErrInvalid: %v", err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !locatedError.MatchString(line) {
					t.Fatalf("error line %q lacks file:line", line)
				}
			}
			return
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("Parse accepted a ladder that Validate rejects: %v", err)
		}
		if _, _, err := l.Plan(1920, 1080, 30); err != nil && !errors.Is(err, ErrNoRungs) {
			t.Fatalf("Plan on a parsed ladder: %v", err)
		}
	})
}
