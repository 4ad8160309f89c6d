package webrtc

import (
	"testing"

	"github.com/pion/rtp"
)

// recorder is an rtpWriter keeping copies of what was written.
type recorder struct{ pkts []rtp.Packet }

func (r *recorder) WriteRTP(p *rtp.Packet) error {
	r.pkts = append(r.pkts, *p)
	return nil
}

// testUnit is a video unit of n packets for rung r at frame number frame
// (30 fps, 90 kHz), with the rung's own sequence numbers.
func testUnit(r, frame, n int, key bool, seq *uint16) *unit {
	payloads := make([][]byte, n)
	for i := range payloads {
		payloads[i] = []byte{byte(r), byte(frame), byte(i)}
	}
	pts := int64(frame) * 3000
	return &unit{video: true, rung: r, keyframe: key, pts: pts,
		packets: buildPackets(payloads, 1000+uint32(pts), seq, true)}
}

// checkContinuous fails unless sequence numbers are consecutive and
// timestamps never go back; for video (markers) each frame must end before
// the next starts.
func checkContinuous(t *testing.T, pkts []rtp.Packet, video bool) {
	t.Helper()
	for i := 1; i < len(pkts); i++ {
		if pkts[i].SequenceNumber != pkts[i-1].SequenceNumber+1 {
			t.Fatalf("packet %d: seq %d after %d", i, pkts[i].SequenceNumber, pkts[i-1].SequenceNumber)
		}
		if int32(pkts[i].Timestamp-pkts[i-1].Timestamp) < 0 {
			t.Fatalf("packet %d: timestamp went back", i)
		}
		if video && pkts[i].Timestamp != pkts[i-1].Timestamp && !pkts[i-1].Marker && len(pkts[i-1].Payload) > 0 {
			t.Fatalf("packet %d starts a frame before the previous one ended", i)
		}
	}
}

// rungsOf lists the rung of each frame sent (the first payload byte).
func rungsOf(pkts []rtp.Packet) []int {
	var out []int
	for _, p := range pkts {
		if p.Marker {
			out = append(out, int(p.Payload[0]))
		}
	}
	return out
}

func TestForwarderSwitchesAtTargetIDRWithContinuousNumbering(t *testing.T) {
	var video, audio recorder
	f := newForwarder(&video, &audio, 0)
	var switches [][2]int
	f.onSwitch = func(from, to int) { switches = append(switches, [2]int{from, to}) }
	seq := [2]uint16{100, 60000} // each rung numbers its own packets
	send := func(r, frame, n int, key bool) {
		t.Helper()
		if err := f.onVideo(queued{u: testUnit(r, frame, n, key, &seq[r])}); err != nil {
			t.Fatal(err)
		}
	}
	send(1, 0, 2, true) // not wanted yet: ignored
	send(0, 0, 3, true) // first IDR of the wanted rung: start
	send(1, 1, 2, false)
	send(0, 1, 2, false)
	f.setWant(1)
	send(1, 2, 2, false) // target but no IDR: wait
	send(0, 2, 2, false)
	send(1, 3, 2, true) // target IDR before the current rung's: switch
	send(0, 3, 4, true) // same frame on the old rung: dropped
	send(0, 4, 2, false)
	send(1, 4, 2, false)
	if got, want := rungsOf(video.pkts), []int{0, 0, 0, 1, 1}; !equalInts(got, want) {
		t.Fatalf("frames sent from rungs %v, want %v", got, want)
	}
	if len(switches) != 2 || switches[0] != [2]int{-1, 0} || switches[1] != [2]int{0, 1} {
		t.Fatalf("switch callbacks %v", switches)
	}
	checkContinuous(t, video.pkts, true)
}

func TestForwarderHoldsCurrentIDRWhileSwitching(t *testing.T) {
	var video, audio recorder
	f := newForwarder(&video, &audio, 0)
	seq := [2]uint16{}
	send := func(r, frame int, key bool) {
		t.Helper()
		if err := f.onVideo(queued{u: testUnit(r, frame, 2, key, &seq[r])}); err != nil {
			t.Fatal(err)
		}
	}
	send(0, 0, true)
	f.setWant(1)
	send(0, 1, true) // the current rung's IDR comes first: held
	send(1, 1, true) // the target's IDR for the same frame: switch, held one dropped
	send(1, 2, false)
	if got, want := rungsOf(video.pkts), []int{0, 1, 1}; !equalInts(got, want) {
		t.Fatalf("frames from rungs %v, want %v (no frame twice on one timestamp)", got, want)
	}
	checkContinuous(t, video.pkts, true)

	// The target rung lags by a frame (a larger rung's encoder is slower):
	// the current rung's frames after its IDR are held too, and dropped at
	// the switch.
	video.pkts = nil
	f.setWant(0)
	send(1, 3, true)  // held
	send(1, 4, false) // held
	send(0, 3, true)  // the target's IDR of the same frame: switch
	send(0, 4, false)
	if got, want := rungsOf(video.pkts), []int{0, 0}; !equalInts(got, want) {
		t.Fatalf("frames from rungs %v, want %v", got, want)
	}
	checkContinuous(t, video.pkts, true)

	// Misaligned: the target's IDR does not come within maxHeld frames;
	// the held frames go out late and the switch waits for the next IDR.
	video.pkts = nil
	f.setWant(1)
	for i := range maxHeld + 1 {
		send(0, 10+i, i == 0)
	}
	if got := len(rungsOf(video.pkts)); got != maxHeld+1 {
		t.Fatalf("%d frames out after %d held ones, want all of them", got, maxHeld+1)
	}
	send(1, 12, true) // too late for this IDR: frames after it went out
	send(0, 17, false)
	send(1, 18, true) // next IDR: switch
	if got := rungsOf(video.pkts); got[len(got)-1] != 1 || len(got) != maxHeld+3 {
		t.Fatalf("frames from rungs %v, want the switch at the next IDR", got)
	}
	checkContinuous(t, video.pkts, true)
}

func TestForwarderSkipsToKeyframeAfterGapAndPadsInSequence(t *testing.T) {
	var video, audio recorder
	f := newForwarder(&video, &audio, 0)
	var seq uint16
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.onVideo(queued{u: testUnit(0, 0, 2, true, &seq)}))
	must(f.pad(3))
	must(f.onVideo(queued{u: testUnit(0, 2, 2, false, &seq), gap: true})) // frame 1 was dropped
	must(f.onVideo(queued{u: testUnit(0, 3, 2, false, &seq)}))
	must(f.onVideo(queued{u: testUnit(0, 4, 2, true, &seq)}))
	if got, want := len(video.pkts), 2+3+2; got != want {
		t.Fatalf("%d packets, want %d (frames after the gap wait for the IDR)", got, want)
	}
	for _, p := range video.pkts[2:5] {
		if !p.Padding || p.Header.PaddingSize != paddingSize || len(p.Payload) != 0 || p.Timestamp != video.pkts[1].Timestamp {
			t.Fatalf("padding packet %+v: want payload-less, on the last frame's timestamp", p.Header)
		}
	}
	checkContinuous(t, video.pkts, true)

	var aseq uint16 = 65534
	for i := range 4 {
		u := &unit{packets: buildPackets([][]byte{{byte(i)}}, uint32(960*i), &aseq, false)}
		must(f.onAudio(u))
	}
	checkContinuous(t, audio.pkts, false)
	if f.frames != 2 || f.padding != 3 {
		t.Errorf("counters: %d frames, %d padding", f.frames, f.padding)
	}
}

func TestUnitQueueDropsWholeUnitsAndMarksGaps(t *testing.T) {
	q := newUnitQueue(2)
	var seq uint16
	v := func(key bool) *unit { return testUnit(0, 0, 1, key, &seq) }
	a := &unit{}
	if q.push(v(true)) || q.push(a) {
		t.Fatal("no drop expected while there is room")
	}
	if !q.push(v(false)) {
		t.Fatal("the first video drop must start a gap (and ask for a keyframe)")
	}
	if q.push(v(false)) || q.push(a) {
		t.Fatal("later drops of the same gap must not ask again")
	}
	q.pop()
	q.pop()
	q.push(v(false))
	e, _ := q.pop()
	if !e.gap {
		t.Fatal("the first video unit after drops must carry the gap mark")
	}
	if q.droppedUnits() != 3 {
		t.Fatalf("dropped %d, want 3", q.droppedUnits())
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestForwarderPausesTheCongestedRungUntilTheSwitch(t *testing.T) {
	var video, audio recorder
	f := newForwarder(&video, &audio, 0)
	seq := [2]uint16{100, 60000}
	send := func(r, frame, n int, key bool) {
		t.Helper()
		if err := f.onVideo(queued{u: testUnit(r, frame, n, key, &seq[r])}); err != nil {
			t.Fatal(err)
		}
	}
	send(0, 0, 3, true)
	send(0, 1, 2, false)
	f.setWantPaused(1) // a move down for congestion
	send(0, 2, 2, false)
	send(1, 2, 1, false)
	send(0, 3, 2, false)
	send(1, 4, 2, true) // the target's IDR: the switch
	send(0, 4, 3, true)
	send(1, 5, 1, false)
	if got, want := rungsOf(video.pkts), []int{0, 0, 1, 1}; !equalInts(got, want) {
		t.Fatalf("frames sent from rungs %v, want %v: nothing of the old rung after the move", got, want)
	}
	checkContinuous(t, video.pkts, true)
	// A pause is for the switch it came with: a plain want clears it.
	f.setWantPaused(0)
	f.setWant(1)
	send(1, 6, 1, false)
	if n := len(rungsOf(video.pkts)); n != 5 {
		t.Fatalf("%d frames, want the current rung to flow again", n)
	}
}
