package webrtc

import (
	"testing"
	"time"

	"github.com/pion/rtcp"
)

// bottleneckSim drives a bwe with the transport-cc feedback a receiver
// would send behind a FIFO bottleneck: the sender writes each frame's
// packets back to back (video at bps, 30 fps, plus 50 audio packets a
// second), the queue serves them at the link rate and drops what does not
// fit, and every 50 ms the receiver reports what arrived. Simulated time,
// so the test is exact and instant.
type bottleneckSim struct {
	t     *testing.T
	e     *bwe
	now   time.Duration // since e.epoch
	seq   uint16
	rate  int // link bits/s
	queue int // packets the queue holds
	// loss drops every n-th packet at random-looking places (0 = none).
	lossEvery int
	extra     time.Duration // added path delay

	busyUntil time.Duration   // when the link finishes what it holds
	inQueue   []time.Duration // departure times of queued packets
	pending   []simPacket     // sent, not yet reported
	fbCount   uint8
	lossCount int
}

type simPacket struct {
	seq     uint16
	arrival time.Duration // -1: lost
}

func newBottleneckSim(t *testing.T) *bottleneckSim {
	return &bottleneckSim{t: t, e: newBWE(2_500_000, 100_000, 6_000_000), rate: 1_000_000_000, queue: 1000}
}

func (s *bottleneckSim) send(size int) {
	s.e.onSent(s.seq, s.e.epoch.Add(s.now), size)
	// Drain the queue up to now.
	for len(s.inQueue) > 0 && s.inQueue[0] <= s.now {
		s.inQueue = s.inQueue[1:]
	}
	p := simPacket{seq: s.seq, arrival: -1}
	s.seq++
	s.lossCount++
	switch {
	case len(s.inQueue) >= s.queue:
	case s.lossEvery > 0 && s.lossCount%s.lossEvery == 0:
	default:
		start := max(s.now, s.busyUntil)
		s.busyUntil = start + time.Duration(int64(size+28)*8*int64(time.Second)/int64(s.rate))
		s.inQueue = append(s.inQueue, s.busyUntil)
		p.arrival = s.busyUntil + 2*time.Millisecond + s.extra // propagation
	}
	s.pending = append(s.pending, p)
}

// run advances d, sending video at bps, and returns the snapshots taken
// every 100 ms (the ABR tick).
func (s *bottleneckSim) run(d time.Duration, bps int) []bweSnapshot {
	var snaps []bweSnapshot
	end := s.now + d
	const step = time.Millisecond
	for ; s.now < end; s.now += step {
		ms := s.now.Milliseconds()
		if ms%33 == 0 { // a frame: its packets back to back
			frame := bps / 8 / 30
			if ms%1000 < 33 {
				frame *= 4 // a keyframe a second
			}
			for frame > 0 {
				n := min(frame, 1200)
				s.send(n + 40)
				frame -= n
			}
		}
		if ms%20 == 0 {
			s.send(200) // audio
		}
		if ms%50 == 0 {
			s.feedback()
		}
		if ms%100 == 0 {
			snaps = append(snaps, s.e.snapshot())
		}
	}
	return snaps
}

// feedback reports every pending packet that arrived by now, and those lost
// before the newest arrival, as libwebrtc's receiver does.
func (s *bottleneckSim) feedback() {
	last := -1
	for i, p := range s.pending {
		if p.arrival >= 0 && p.arrival <= s.now {
			last = i
		}
	}
	if last < 0 {
		return
	}
	report := s.pending[:last+1]
	var first time.Duration = -1
	for _, p := range report {
		if p.arrival >= 0 {
			first = p.arrival
			break
		}
	}
	ref := first / (64 * time.Millisecond)
	fb := &rtcp.TransportLayerCC{BaseSequenceNumber: report[0].seq, PacketStatusCount: uint16(len(report)), //nolint:gosec // small
		ReferenceTime: uint32(ref), FbPktCount: s.fbCount} //nolint:gosec // small
	s.fbCount++
	prev := ref * 64 * time.Millisecond
	for _, p := range report {
		sym := uint16(rtcp.TypeTCCPacketNotReceived)
		if p.arrival >= 0 {
			delta := (p.arrival - prev) / (250 * time.Microsecond) * (250 * time.Microsecond)
			prev += delta
			sym = rtcp.TypeTCCPacketReceivedLargeDelta
			fb.RecvDeltas = append(fb.RecvDeltas, &rtcp.RecvDelta{Type: sym, Delta: delta.Microseconds()})
		}
		fb.PacketChunks = append(fb.PacketChunks, &rtcp.RunLengthChunk{PacketStatusSymbol: sym, RunLength: 1})
	}
	s.pending = s.pending[last+1:]
	s.e.onFeedback(fb, s.e.epoch.Add(s.now))
}

func firstIndex(snaps []bweSnapshot, ok func(bweSnapshot) bool) int {
	for i, sn := range snaps {
		if ok(sn) {
			return i
		}
	}
	return -1
}

func TestBWEDetectsADeepQueueWithinHalfASecond(t *testing.T) {
	s := newBottleneckSim(t)
	if snaps := s.run(5*time.Second, 2_800_000); snaps[len(snaps)-1].overuse {
		t.Fatalf("overuse on an open link: %+v", snaps[len(snaps)-1])
	}
	s.rate, s.queue = 700_000, 1000
	snaps := s.run(500*time.Millisecond, 2_800_000)
	i := firstIndex(snaps, func(sn bweSnapshot) bool { return sn.overuse && sn.estimate < 700_000 })
	if i < 0 {
		t.Fatalf("estimate not below the 700 kbit/s link within 500 ms: %+v", snaps)
	}
	t.Logf("overuse after %d ms: %+v", i*100, snaps[i])

	// The sender moves to a rung that fits: the queue drains, and the
	// estimate does not keep falling while it does.
	snaps = s.run(15*time.Second, 400_000)
	last := snaps[len(snaps)-1]
	if last.overuse || last.estimate < 500_000 {
		t.Errorf("after the queue drained: %+v", last)
	}
	if last.capacity < 600_000 || last.capacity > 800_000 {
		t.Errorf("capacity %d, want about 700 kbit/s", last.capacity)
	}
	// The limit goes: the capacity shows it within two seconds.
	s.rate = 1_000_000_000
	snaps = s.run(3*time.Second, 450_000)
	if i := firstIndex(snaps, func(sn bweSnapshot) bool { return sn.capacity > 10_000_000 }); i < 0 || i > 20 {
		t.Errorf("capacity after the limit went: %d ticks (%+v)", i, snaps[len(snaps)-1])
	}
}

func TestBWEShallowQueue(t *testing.T) {
	s := newBottleneckSim(t)
	s.run(3*time.Second, 2_800_000)
	s.rate, s.queue = 700_000, 50
	snaps := s.run(2*time.Second, 2_800_000)
	i := firstIndex(snaps, func(sn bweSnapshot) bool { return sn.estimate < 700_000 })
	if i < 0 || i > 5 {
		t.Fatalf("estimate below the link after %d ticks, want within 500 ms: %+v", i, snaps[:8])
	}
}

func TestBWERandomLossIsNotCongestion(t *testing.T) {
	s := newBottleneckSim(t)
	s.lossEvery = 33 // 3 %
	snaps := s.run(10*time.Second, 2_800_000)
	for _, sn := range snaps[20:] {
		if sn.overuse || sn.loss > 0.1 {
			t.Fatalf("3 %% loss read as congestion: %+v", sn)
		}
	}
	if l := snaps[len(snaps)-1].loss; l < 0.02 || l > 0.05 {
		t.Errorf("loss %.3f, want about 0.03", l)
	}
}

func TestBWERoundTripTime(t *testing.T) {
	e := newBWE(1_000_000, 100_000, 5_000_000)
	now := time.Now()
	sent := now.Add(-150 * time.Millisecond)
	// The viewer held our sender report for 20 ms before answering.
	rr := &rtcp.ReceiverReport{Reports: []rtcp.ReceptionReport{{LastSenderReport: ntpCompact(sent), Delay: 20 * 65536 / 1000}}}
	if err := e.WriteRTCP([]rtcp.Packet{rr}, nil); err != nil {
		t.Fatal(err)
	}
	if rtt := e.snapshot().rtt; rtt < 125*time.Millisecond || rtt > 135*time.Millisecond {
		t.Errorf("rtt %s, want 130ms", rtt)
	}
}

func TestBWELongerPathIsNotCongestion(t *testing.T) {
	s := newBottleneckSim(t)
	s.run(3*time.Second, 2_800_000)
	s.extra = 75 * time.Millisecond // a delay line on the way, no rate limit
	snaps := s.run(3*time.Second, 2_800_000)
	for _, sn := range snaps {
		if sn.overuse || sn.estimate < 2_800_000 {
			t.Fatalf("75 ms more path delay read as congestion: %+v", sn)
		}
	}
	if qd := snaps[len(snaps)-1].queueDelay; qd > 10*time.Millisecond {
		t.Errorf("queueing delay %s after the path change settled, want ~0", qd)
	}
	// A real bottleneck after that is still seen.
	s.rate = 700_000
	snaps = s.run(time.Second, 2_800_000)
	if i := firstIndex(snaps, func(sn bweSnapshot) bool { return sn.overuse }); i < 0 || i > 5 {
		t.Errorf("bottleneck after a path change seen after %d ticks", i)
	}
}

func TestBWELateArrivalIsNotLoss(t *testing.T) {
	e := newBWE(1_000_000, 100_000, 5_000_000)
	now := e.epoch
	for i := range 40 {
		e.onSent(uint16(i), now.Add(time.Duration(i)*time.Millisecond), 1200) //nolint:gosec // small
	}
	fb := func(base uint16, syms []uint16, start time.Duration) *rtcp.TransportLayerCC {
		p := &rtcp.TransportLayerCC{BaseSequenceNumber: base, PacketStatusCount: uint16(len(syms)), //nolint:gosec // small
			ReferenceTime: uint32(start / (64 * time.Millisecond))} //nolint:gosec // small
		for _, s := range syms {
			p.PacketChunks = append(p.PacketChunks, &rtcp.RunLengthChunk{PacketStatusSymbol: s, RunLength: 1})
			if s != rtcp.TypeTCCPacketNotReceived {
				p.RecvDeltas = append(p.RecvDeltas, &rtcp.RecvDelta{Type: s, Delta: 1000})
			}
		}
		return p
	}
	// Packets 0..29 arrive except 10..19, reported missing; then 10..19
	// and 30..39 arrive (reordered, late).
	var first []uint16
	for i := range 30 {
		sym := uint16(rtcp.TypeTCCPacketReceivedLargeDelta)
		if i >= 10 && i < 20 {
			sym = rtcp.TypeTCCPacketNotReceived
		}
		first = append(first, sym)
	}
	e.onFeedback(fb(0, first, 0), now.Add(50*time.Millisecond))
	if l := e.snapshot().loss; l < 0.3 {
		t.Fatalf("loss %.2f after 10 of 30 reported missing", l)
	}
	var late []uint16
	for range 10 {
		late = append(late, rtcp.TypeTCCPacketReceivedLargeDelta)
	}
	e.onFeedback(fb(10, late, 64*time.Millisecond), now.Add(100*time.Millisecond))
	if l := e.snapshot().loss; l != 0 {
		t.Fatalf("loss %.2f after the missing packets arrived late, want 0", l)
	}
}

// FuzzBWEFeedback: the viewer sends whatever RTCP it likes; the estimator
// takes any feedback without panicking and keeps its estimate in bounds.
func FuzzBWEFeedback(f *testing.F) {
	fb := &rtcp.TransportLayerCC{BaseSequenceNumber: 0, PacketStatusCount: 40, ReferenceTime: 1}
	for range 40 {
		fb.PacketChunks = append(fb.PacketChunks, &rtcp.RunLengthChunk{PacketStatusSymbol: rtcp.TypeTCCPacketReceivedSmallDelta, RunLength: 1})
		fb.RecvDeltas = append(fb.RecvDeltas, &rtcp.RecvDelta{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 250})
	}
	seed, err := fb.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte{0x8f, 0xcd, 0x00, 0x05, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0x20, 0x01, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		pkts, err := rtcp.Unmarshal(b)
		if err != nil {
			return
		}
		e := newBWE(1_000_000, 100_000, 5_000_000)
		for i := range 64 {
			e.onSent(uint16(i), e.epoch.Add(time.Duration(i)*time.Millisecond), 1200) //nolint:gosec // small
		}
		for range 3 {
			if err := e.WriteRTCP(pkts, nil); err != nil {
				t.Fatal(err)
			}
		}
		if st := e.snapshot(); st.estimate < 100_000 || st.estimate > 5_000_000 || st.loss < 0 || st.loss > 1 {
			t.Fatalf("estimate out of bounds: %+v", st)
		}
	})
}
