package ladder

// A job names its ladder by reference: a shipped ladder, a file, or inline
// YAML. Resolve loads it; Check also prices it for capacity planning (it is
// the jobs.LadderCheck the job store is given, so the store does not import
// the transcoder's packages).

import (
	"fmt"
	"strings"

	"github.com/prism-streaming/prism/deploy/ladders"
)

// Resolve returns the ladder of a job spec: inline YAML when given (ref
// then only names it in errors), else a file when ref looks like a path,
// else the shipped ladder of that name ("default" when ref is empty).
func Resolve(ref, inlineYAML string) (*Ladder, error) {
	switch {
	case inlineYAML != "":
		name := ref
		if name == "" {
			name = "ladder_yaml"
		}
		return Parse(name, []byte(inlineYAML))
	case IsPath(ref):
		return Load(ref)
	}
	if ref == "" {
		ref = "default"
	}
	data, err := ladders.Get(ref)
	if err != nil {
		return nil, err
	}
	return Parse(ref+".yaml", data)
}

// IsPath reports whether a ladder reference names a file rather than a
// shipped ladder.
func IsPath(ref string) bool {
	return strings.ContainsAny(ref, `/\`) || strings.HasSuffix(ref, ".yaml") || strings.HasSuffix(ref, ".yml")
}

// Nominal source used to price a ladder before its source is known: 16:9
// at 30 fps, as large as any rung (every rung counted, none skipped).
const (
	nominalWidth  = 1920
	nominalHeight = 1080
	nominalFPS    = 30
)

// NominalCost is the ladder's encoding load in pixels per second: the sum
// over rungs of width x height x fps, with the rungs' nominal heights,
// 16:9 widths where the width follows the source, and 30 fps (or the
// rung's lower cap).
func NominalCost(l *Ladder) (float64, error) {
	c := *l
	c.Rungs = make([]Rung, len(l.Rungs))
	for i, r := range l.Rungs {
		r.Upscale = true // price every rung, whatever the source turns out to be
		c.Rungs[i] = r
	}
	return Cost(&c, nominalWidth, nominalHeight, nominalFPS)
}

// Cost is the ladder's load in pixels per second for a known source, from
// the rungs that Plan keeps.
func Cost(l *Ladder, srcWidth, srcHeight int, srcFPS float64) (float64, error) {
	rungs, _, err := l.Plan(srcWidth, srcHeight, srcFPS)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, r := range rungs {
		sum += float64(r.OutWidth) * float64(r.OutHeight) * r.OutFPS
	}
	return sum, nil
}

// Check is the jobs.LadderCheck: it resolves the reference and returns
// the nominal cost.
func Check(ref, inlineYAML string) (float64, error) {
	l, err := Resolve(ref, inlineYAML)
	if err != nil {
		return 0, err
	}
	cost, err := NominalCost(l)
	if err != nil {
		return 0, fmt.Errorf("ladder %q: %w", l.Name, err)
	}
	return cost, nil
}

// RequiredEncoder names the hardware encoder the reference's ladder cannot
// run without: the encoder of its first rung that names one with no
// software fallback, or "" (auto and x264 run on any node). A ladder asking
// for two different ones gets the first; its job fails, saying why, where
// the second does not open.
func RequiredEncoder(ref, inlineYAML string) (string, error) {
	l, err := Resolve(ref, inlineYAML)
	if err != nil {
		return "", err
	}
	for _, r := range l.Rungs {
		if r.Encoder != "" && r.Encoder != "auto" && r.Encoder != "x264" && r.Fallback != "software" {
			return r.Encoder, nil
		}
	}
	return "", nil
}

// SourceCost is the jobs.SourceCost: the cost of the reference's ladder for
// a known source (0 fps counts as 30).
func SourceCost(ref, inlineYAML string, width, height int, fps float64) (float64, error) {
	l, err := Resolve(ref, inlineYAML)
	if err != nil {
		return 0, err
	}
	if fps <= 0 {
		fps = nominalFPS
	}
	return Cost(l, width, height, fps)
}
