package pipeline

import (
	"testing"
	"time"
)

func TestFrameLog(t *testing.T) {
	var l FrameLog
	if _, ok := l.PTSAt(time.Now()); ok {
		t.Fatal("an empty log answered")
	}
	t0 := time.Unix(1000, 0)
	frame := 33333333 * time.Nanosecond
	for i := range 600 { // wraps the ring
		l.Add(int64(i)*3000, t0.Add(time.Duration(i)*frame))
	}
	for _, c := range []struct {
		at   time.Time
		want int64
		ok   bool
	}{
		{t0.Add(599 * frame), 599 * 3000, true},
		{t0.Add(599*frame + 500*time.Millisecond), 599 * 3000, true}, // after the newest: the newest
		{t0.Add(599*frame + 2*time.Second), 0, false},
		{t0.Add(500*frame + frame/2), 500 * 3000, true},              // between two frames: the earlier
		{t0.Add(500*frame - 500*time.Microsecond), 500 * 3000, true}, // rounding slack
		{t0.Add(10 * frame), 0, false},                               // no longer logged
	} {
		got, ok := l.PTSAt(c.at)
		if got != c.want || ok != c.ok {
			t.Errorf("PTSAt(t0+%s) = %d %v, want %d %v", c.at.Sub(t0), got, ok, c.want, c.ok)
		}
	}
}
