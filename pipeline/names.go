package pipeline

import (
	"fmt"
	"regexp"
)

// nameRE is the one name rule: stream names, track (rung) names and node
// ids all end up in URLs, file names and NATS subject tokens as they are.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidName reports whether name can be used in URLs, file names and NATS
// subjects as it is: letters, digits, '-' and '_', at most 64, starting
// with a letter or digit.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// ValidStreamName is ValidName for a stream, as an error wrapping
// ErrStreamName.
func ValidStreamName(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w %q: use letters, digits, '-' and '_' (at most 64, starting with a letter or digit)", ErrStreamName, name)
	}
	return nil
}
