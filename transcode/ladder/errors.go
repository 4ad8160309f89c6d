package ladder

import (
	"errors"

	"github.com/prism-streaming/prism/internal/yamlfile"
)

// ErrInvalid matches (errors.Is) every error Parse, Load and Validate report
// about the content of a ladder.
var ErrInvalid = errors.New("invalid ladder")

// ErrNoRungs is wrapped by Plan when every rung is larger than the source.
var ErrNoRungs = errors.New("no rungs to encode")

// invalidLadder makes the shared yamlfile errors match ErrInvalid.
type invalidLadder struct{}

func (invalidLadder) Sentinel() error { return ErrInvalid }

type (
	// Error is one problem in a ladder, located by file, line and field
	// path: "ladder.yaml:14: rungs[2].bitrate: must be greater than 0".
	Error = yamlfile.Error[invalidLadder]
	// ErrorList is every problem found in a ladder, in line order; Parse,
	// Load and Validate return one.
	ErrorList = yamlfile.Errors[invalidLadder]
)

// clip shortens user input echoed in messages.
func clip(s string) string {
	const maxLen = 40
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "..."
}
