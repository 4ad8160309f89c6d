package ladder

import "strings"

// suggestField returns the known field closest to an unknown key, or "" when
// none is close enough to be a plausible typo.
func suggestField(key string, known []string) string {
	if len(key) > 64 {
		return ""
	}
	lower := strings.ToLower(key)
	best, bestDist := "", max(1, len(key)/3)+1
	for _, name := range known {
		d := editDistance(lower, name)
		if d < bestDist {
			best, bestDist = name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
