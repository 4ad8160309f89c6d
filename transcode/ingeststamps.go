package transcode

import (
	"sort"
	"sync"
	"time"
)

// ingestStamps remembers when each source frame entered the pipeline, keyed
// by its 90 kHz PTS, so an encoded packet can carry the wall-clock time of the
// frame it came from. Bounded: old entries are overwritten.
type ingestStamps struct {
	mu   sync.Mutex
	pts  []int64
	wall []time.Time
	next int
	full bool
}

func newIngestStamps(size int) *ingestStamps {
	return &ingestStamps{pts: make([]int64, size), wall: make([]time.Time, size)}
}

func (s *ingestStamps) add(pts int64, wall time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pts[s.next] = pts
	s.wall[s.next] = wall
	s.next++
	if s.next == len(s.pts) {
		s.next, s.full = 0, true
	}
}

// lookup returns the stamp of the newest frame with PTS <= pts (frames that a
// filter duplicated or retimed map to the source frame before them).
func (s *ingestStamps) lookup(pts int64) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.next
	if s.full {
		n = len(s.pts)
	}
	if n == 0 {
		return time.Time{}
	}
	// Entries are in insertion order in a ring; PTS increase with insertion.
	at := func(i int) int {
		if s.full {
			return (s.next + i) % len(s.pts)
		}
		return i
	}
	i := sort.Search(n, func(i int) bool { return s.pts[at(i)] > pts })
	if i == 0 {
		return s.wall[at(0)]
	}
	return s.wall[at(i-1)]
}
