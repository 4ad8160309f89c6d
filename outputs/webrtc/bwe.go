package webrtc

import (
	"encoding/binary"
	"sort"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
)

// Prism's send-side bandwidth estimator, one per viewer. It replaces pion's
// GCC, which, measured with Chromium behind a 700 kbit/s tc bottleneck, did
// not react while the bottleneck queue grew for seconds: its delay filter
// never reached its (adaptive) overuse threshold with Chromium's 250 µs
// feedback timestamps, and it counts no bytes for padding-only packets, so
// probes told it nothing.
//
// What it reads, all from transport-wide congestion control feedback:
//   - queueing delay: each packet's one-way delay (arrival on the receiver's
//     clock minus send time on ours) above the least one-way delay seen in
//     the last minute. The offset between the clocks cancels out. The
//     least delay over a short window is taken, so one late packet (a
//     scheduler hiccup on the receiver) is not congestion, while a growing
//     queue, which delays every packet, is seen within one feedback interval
//     or two.
//   - capacity: the sender writes each frame's packets back to back, so they
//     leave the bottleneck spaced by its rate; the spread of their arrival
//     times over their size measures it (packet-train dispersion) without
//     sending anything extra.
//   - the acknowledged rate and the loss fraction.
//
// The estimate falls to 0.85 × what gets through as soon as the delay says
// a queue is building (or loss passes 10 %), and otherwise rises toward the
// measured capacity. The ABR controller reads all of these (bweSnapshot).
type bwe struct {
	mu    sync.Mutex
	epoch time.Time

	sent [bweHistory]sentPacket

	estimate int // bits/s
	minBPS   int
	maxBPS   int

	// one-way delay baseline: the least delay per 10 s bucket over the last
	// baselineBuckets buckets.
	baseline  [baselineBuckets]int64
	bucketIdx int64 // send time / baselineBucket of the newest bucket

	recent  []delaySample // acknowledged packets of the last delayWindow, by arrival
	acked   []ackSample   // acknowledged packets of the last rateWindow, by arrival
	lossLog []lossSample  // received/lost counts per feedback, last lossWindow
	trains  []capSample   // capacity samples, last capacityWindow
	scratch []int         // capacityLocked's sort buffer
	train   trainState

	overuse     bool
	longerSince time.Time // the delay rose without a rate bottleneck since
	// onOveruse is told (without blocking) when a queue starts building,
	// so the ABR need not wait for its next tick.
	onOveruse    chan struct{}
	lastCut      time.Time
	cutDelay     time.Duration // queueing delay at the last cut
	overuses     uint64
	lastGrow     time.Time
	feedbacks    uint64
	rtt          time.Duration
	lastArrival  int64 // newest arrival (receiver clock, µs), for the windows
	haveArrival  bool
	refUnwrapped int64 // last TWCC reference time, unwrapped, 64 ms units
	haveRef      bool
}

const (
	bweHistory      = 1 << 13 // sent packets remembered for feedback (about 8 s at 1000 packets/s)
	baselineBuckets = 6
	baselineBucket  = 10 * time.Second

	delayWindow    = 100 * time.Millisecond // the least delay over this long is "the" queueing delay
	rateWindow     = 500 * time.Millisecond
	lossWindow     = time.Second
	capacityWindow = 2 * time.Second
	// cutWindow: the trains a cut believes (those that crossed the queue
	// that is building).
	cutWindow = 300 * time.Millisecond

	// overuseDelay is the queueing delay that counts as congestion: above
	// any jitter of a working link and of a busy receiver, far below what a
	// congested deep buffer reaches within a second.
	overuseDelay = 40 * time.Millisecond
	// growthDelay, growthRise, growthSpan: see growingLocked.
	growthDelay = 20 * time.Millisecond
	growthRise  = 15 * time.Millisecond
	growthSpan  = 30 * time.Millisecond
	// recutInterval: while the delay keeps rising after a cut, cut again
	// this often (what got through before the cut was still overestimated).
	recutInterval = 400 * time.Millisecond
	lossCut       = 0.1 // loss fraction that cuts the estimate on its own
	// pathChangeFactor, pathChangeHold: trains arriving at this many times
	// the acknowledged rate, for this long, while the delay is up, mean
	// the path is longer, not congested.
	pathChangeFactor = 4
	pathChangeHold   = 500 * time.Millisecond
	// trainGap: packets written less than this apart belong to one train.
	trainGap = time.Millisecond
	// maxCapacity caps a capacity sample: a train that arrived within the
	// feedback's time resolution says only "fast".
	maxCapacity = 100_000_000
)

type sentPacket struct {
	at    int64 // send time, ns since epoch
	size  int32 // bytes above UDP
	seq   uint16
	valid bool
	done  bool // reported received by feedback already
	lost  bool // reported not received (it may still arrive late)
}

type delaySample struct {
	arrival int64 // receiver clock, µs
	delay   int64 // queueing delay, ns
}

type ackSample struct {
	arrival int64 // µs
	size    int32
}

type lossSample struct {
	arrival        int64 // µs, newest arrival of the feedback
	received, lost int
}

type capSample struct {
	arrival int64
	bps     int
}

// trainState follows the packets of one train as their feedback comes in,
// in sequence order.
type trainState struct {
	active               bool
	lastSent             int64
	firstArrival, lastAr int64
	bytes                int // after the first packet
	packets              int
}

// bweSnapshot is what the ABR controller reads on each tick.
type bweSnapshot struct {
	estimate   int // bits/s
	capacity   int // bits/s, median packet-train dispersion over the last 2 s; 0 = unknown
	acked      int // bits/s acknowledged over the last 500 ms
	loss       float64
	queueDelay time.Duration
	overuse    bool   // the queueing delay says a queue is building now
	growing    bool   // ... and fast (growingLocked)
	overuses   uint64 // cuts of the estimate so far
	rtt        time.Duration
	feedback   bool // transport-cc feedback has arrived
}

func newBWE(initial, minBPS, maxBPS int) *bwe {
	e := &bwe{epoch: time.Now(), estimate: initial, minBPS: minBPS, maxBPS: maxBPS, onOveruse: make(chan struct{}, 1)}
	for i := range e.baseline {
		e.baseline[i] = 1<<63 - 1
	}
	return e
}

// AddStream implements cc.BandwidthEstimator: it records each packet's
// transport-wide sequence number, size and send time. The transport-cc
// header interceptor runs before it, so the number is already stamped.
func (e *bwe) AddStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	id := extensionID(info, sdp.TransportCCURI)
	if id == 0 {
		return w
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if ext := h.GetExtension(id); len(ext) >= 2 {
			size := h.MarshalSize() + len(payload)
			if h.Padding {
				size += int(h.PaddingSize)
			}
			e.onSent(binary.BigEndian.Uint16(ext), time.Now(), size)
		}
		return w.Write(h, payload, a)
	})
}

func (e *bwe) onSent(seq uint16, at time.Time, size int) {
	e.mu.Lock()
	e.sent[int(seq)%bweHistory] = sentPacket{at: int64(at.Sub(e.epoch)), size: int32(size), seq: seq, valid: true} //nolint:gosec // packet sizes fit
	e.mu.Unlock()
}

// WriteRTCP implements cc.BandwidthEstimator: transport-cc feedback and
// receiver reports (for the round-trip time).
func (e *bwe) WriteRTCP(pkts []rtcp.Packet, _ interceptor.Attributes) error {
	now := time.Now()
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.TransportLayerCC:
			e.onFeedback(p, now)
		case *rtcp.ReceiverReport:
			e.onReports(p.Reports, now)
		case *rtcp.SenderReport:
			e.onReports(p.Reports, now)
		}
	}
	return nil
}

// onReports takes the round-trip time from a report block that echoes one
// of our sender reports: now - LSR - DLSR, in NTP's 1/65536 s units. pion
// stamps sender reports from the same clock, so no mapping is needed.
func (e *bwe) onReports(reports []rtcp.ReceptionReport, now time.Time) {
	for _, r := range reports {
		if r.LastSenderReport == 0 {
			continue
		}
		rtt := ntpCompact(now) - r.LastSenderReport - r.Delay
		if d := time.Duration(rtt) * time.Second / 65536; d >= 0 && d < 10*time.Second {
			e.mu.Lock()
			e.rtt = d
			e.mu.Unlock()
		}
	}
}

// ntpCompact is the middle 32 bits of the NTP timestamp of t.
func ntpCompact(t time.Time) uint32 {
	const ntpEpochOffset = 2208988800
	secs := uint64(t.Unix() + ntpEpochOffset)        //nolint:gosec // after 1900
	frac := uint64(t.Nanosecond()) * (1 << 32) / 1e9 //nolint:gosec // 0..1e9
	return uint32((secs<<32 | frac) >> 16)           //nolint:gosec // the compact form is truncated by definition
}

func (e *bwe) onFeedback(fb *rtcp.TransportLayerCC, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.feedbacks++
	// Reference time: 24 bits of 64 ms, unwrapped against the previous one.
	ref := int64(fb.ReferenceTime)
	if e.haveRef {
		const span = 1 << 24
		prev := e.refUnwrapped
		ref += (prev / span) * span
		if ref < prev-span/2 {
			ref += span
		} else if ref > prev+span/2 {
			ref -= span
		}
	}
	e.refUnwrapped, e.haveRef = ref, true
	arrival := ref * 64000 // µs
	seq := fb.BaseSequenceNumber
	remaining := int(fb.PacketStatusCount)
	deltas := fb.RecvDeltas
	received, lost := 0, 0
	visit := func(symbol uint16) {
		if remaining <= 0 {
			return
		}
		remaining--
		s := seq
		seq++
		rec := &e.sent[int(s)%bweHistory]
		known := rec.valid && rec.seq == s && !rec.done
		switch symbol {
		case rtcp.TypeTCCPacketReceivedSmallDelta, rtcp.TypeTCCPacketReceivedLargeDelta:
			if len(deltas) == 0 {
				return
			}
			arrival += deltas[0].Delta
			deltas = deltas[1:]
			if known {
				rec.done = true
				received++
				if rec.lost {
					// Reported missing before and arrived after all (late or
					// reordered): it was not lost.
					lost--
				}
				e.onAck(rec, arrival)
			}
		case rtcp.TypeTCCPacketNotReceived:
			if known && !rec.lost {
				rec.lost = true
				lost++
				e.train.active = false // a lost packet breaks the train
			}
		}
	}
	for _, c := range fb.PacketChunks {
		switch c := c.(type) {
		case *rtcp.RunLengthChunk:
			for range min(int(c.RunLength), remaining) {
				visit(c.PacketStatusSymbol)
			}
		case *rtcp.StatusVectorChunk:
			for _, sym := range c.SymbolList {
				visit(sym)
			}
		}
	}
	if (received != 0 || lost != 0) && e.haveArrival {
		e.lossLog = append(e.lossLog, lossSample{arrival: e.lastArrival, received: received, lost: lost})
	}
	e.trim()
	e.update(now)
}

// onAck takes one acknowledged packet: its delay, its share of the rate and
// of the current train.
func (e *bwe) onAck(rec *sentPacket, arrival int64) {
	if !e.haveArrival || arrival > e.lastArrival {
		e.lastArrival, e.haveArrival = arrival, true
	}
	oneWay := arrival*1000 - rec.at // ns, plus the unknown clock offset
	if idx := rec.at / int64(baselineBucket); idx > e.bucketIdx {
		shift := int(min(idx-e.bucketIdx, baselineBuckets))
		copy(e.baseline[shift:], e.baseline[:baselineBuckets-shift])
		for i := range shift {
			e.baseline[i] = 1<<63 - 1
		}
		e.bucketIdx = idx
	}
	e.baseline[0] = min(e.baseline[0], oneWay)
	base := e.baseline[0]
	for _, b := range e.baseline[1:] {
		base = min(base, b)
	}
	e.recent = append(e.recent, delaySample{arrival: arrival, delay: oneWay - base})
	e.acked = append(e.acked, ackSample{arrival: arrival, size: rec.size})

	// Packet trains: consecutive packets written back to back.
	t := &e.train
	if t.active && rec.at-t.lastSent < int64(trainGap) && arrival >= t.lastAr {
		t.bytes += int(rec.size)
		t.packets++
		t.lastAr = arrival
	} else {
		e.endTrain()
		*t = trainState{active: true, firstArrival: arrival, lastAr: arrival, packets: 1}
	}
	t.lastSent = rec.at
}

// endTrain turns the finished train into a capacity sample. Three packets
// and 2400 bytes at least: a pair's spacing is too easily the receiver's
// timestamp granularity.
func (e *bwe) endTrain() {
	if c, ok := e.train.sample(); ok {
		e.trains = append(e.trains, c)
	}
}

// sample is the train's dispersion so far.
func (t *trainState) sample() (capSample, bool) {
	if !t.active || t.packets < 3 || t.bytes < 2400 {
		return capSample{}, false
	}
	span := t.lastAr - t.firstArrival // µs
	bps := maxCapacity
	if span > 0 {
		bps = min(int(int64(t.bytes)*8*1_000_000/span), maxCapacity)
	}
	return capSample{arrival: t.lastAr, bps: bps}, true
}

// trim drops samples older than their windows.
func (e *bwe) trim() {
	now := e.lastArrival
	e.recent = dropBefore(e.recent, now-delayWindow.Microseconds(), func(s delaySample) int64 { return s.arrival })
	e.acked = dropBefore(e.acked, now-rateWindow.Microseconds(), func(s ackSample) int64 { return s.arrival })
	e.lossLog = dropBefore(e.lossLog, now-lossWindow.Microseconds(), func(s lossSample) int64 { return s.arrival })
	e.trains = dropBefore(e.trains, now-capacityWindow.Microseconds(), func(s capSample) int64 { return s.arrival })
}

// dropBefore removes the leading samples older than cut, reusing the array.
func dropBefore[S any](s []S, cut int64, at func(S) int64) []S {
	i := 0
	for i < len(s) && at(s[i]) < cut {
		i++
	}
	if i == 0 {
		return s
	}
	n := copy(s, s[i:])
	return s[:n]
}

// rebaseLocked makes the current least delay the baseline.
func (e *bwe) rebaseLocked() {
	if len(e.recent) == 0 {
		return
	}
	d := e.recent[0].delay
	for _, s := range e.recent[1:] {
		d = min(d, s.delay)
	}
	for i := range e.baseline {
		if e.baseline[i] != 1<<63-1 {
			e.baseline[i] += d
		}
	}
	for i := range e.recent {
		e.recent[i].delay -= d
	}
}

// growingLocked: the queue is growing fast (an overload of half the link
// or more), seen before the delay reaches overuseDelay: the delay rose by
// growthRise across the last delayWindow and is past growthDelay. At 3:1
// overload each 10 ms of waiting is 30 ms of packets queued behind, so
// acting on the slope rather than the level halves what must drain.
func (e *bwe) growingLocked() bool {
	if len(e.recent) < 4 {
		return false
	}
	first, last := e.recent[0], e.recent[len(e.recent)-1]
	if last.arrival-first.arrival < growthSpan.Microseconds() {
		return false
	}
	// The newest packets, not one late one: the least of the last three.
	newest := min(last.delay, e.recent[len(e.recent)-2].delay, e.recent[len(e.recent)-3].delay)
	return newest > int64(growthDelay) && newest-first.delay > int64(growthRise)
}

// queueDelayLocked is the least queueing delay over the last delayWindow.
func (e *bwe) queueDelayLocked() time.Duration {
	if len(e.recent) == 0 {
		return 0
	}
	d := e.recent[0].delay
	for _, s := range e.recent[1:] {
		d = min(d, s.delay)
	}
	return time.Duration(d)
}

func (e *bwe) ackedLocked() int {
	if len(e.acked) < 2 {
		return 0
	}
	span := e.acked[len(e.acked)-1].arrival - e.acked[0].arrival
	if span < rateWindow.Microseconds()/4 {
		return 0
	}
	bytes := 0
	for _, s := range e.acked[1:] {
		bytes += int(s.size)
	}
	return int(int64(bytes) * 8 * 1_000_000 / span)
}

func (e *bwe) lossLocked() float64 {
	r, l := 0, 0
	for _, s := range e.lossLog {
		r += s.received
		l += s.lost
	}
	if r+l < 20 || l <= 0 {
		return 0 // too few packets to tell, or none lost
	}
	return float64(l) / float64(r+l)
}

// capacityLocked is the (lower) median train dispersion over the last
// window (at most capacityWindow), or the least with least set; 0 when no
// train arrived in it.
func (e *bwe) capacityLocked(window time.Duration, least bool) int {
	cut := e.lastArrival - window.Microseconds()
	v := e.scratch[:0] // reused: this runs on every feedback
	defer func() { e.scratch = v[:0] }()
	for _, s := range e.trains {
		if s.arrival >= cut {
			v = append(v, s.bps)
		}
	}
	// The train still arriving counts too: a keyframe through a narrow
	// link takes longer to arrive than a cut may wait.
	if c, ok := e.train.sample(); ok {
		v = append(v, c.bps)
	}
	if len(v) == 0 {
		return 0
	}
	sort.Ints(v)
	if least {
		return v[0]
	}
	return v[(len(v)-1)/2]
}

// update moves the estimate after a feedback.
func (e *bwe) update(now time.Time) {
	qd := e.queueDelayLocked()
	acked := e.ackedLocked()
	capacity := e.capacityLocked(capacityWindow, false)
	loss := e.lossLocked()
	// What got through: the acknowledged rate lags a sudden squeeze by its
	// window, the latest trains do not (the narrowest of them: a queue is
	// building, so the link is as narrow as its worst recent reading).
	through := acked
	recentCap := e.capacityLocked(cutWindow, true)
	if recentCap > 0 && (through == 0 || recentCap < through) {
		through = recentCap
	}
	was := e.overuse
	e.overuse = len(e.recent) > 0 && (qd > overuseDelay || e.growingLocked())
	// More delay but the latest trains still arrive unspread: the path got
	// longer (a new route, a delay line), no queue is building at a rate
	// bottleneck. After pathChangeHold of it, the new delay is the
	// baseline; until then it is not congestion.
	if e.overuse && recentCap >= pathChangeFactor*max(acked, 1) {
		e.overuse = false
		if e.longerSince.IsZero() {
			e.longerSince = now
		} else if now.Sub(e.longerSince) >= pathChangeHold {
			e.rebaseLocked()
			e.longerSince = time.Time{}
		}
	} else {
		e.longerSince = time.Time{}
	}
	if e.overuse && !was {
		select {
		case e.onOveruse <- struct{}{}:
		default:
		}
	}
	cut := func(to int) {
		if to <= 0 || to >= e.estimate {
			return
		}
		e.estimate = max(to, e.minBPS)
		e.lastCut, e.cutDelay = now, qd
		e.overuses++
	}
	switch {
	case e.overuse && (!was || (now.Sub(e.lastCut) >= recutInterval && qd > e.cutDelay)):
		cut(through * 85 / 100)
	case loss > lossCut && now.Sub(e.lastCut) >= recutInterval:
		cut(int(float64(max(acked, 1)) * (1 - loss/2)))
	case !e.overuse && qd < overuseDelay/2 && loss <= lossCut/5:
		// Rise toward what the link showed it can carry, 8 % a second as
		// GCC's multiplicative increase; never past the capacity measured.
		if !e.lastGrow.IsZero() {
			dt := now.Sub(e.lastGrow).Seconds()
			grown := int(float64(e.estimate) * (1 + 0.08*min(dt, 1)))
			limit := e.maxBPS
			if capacity > 0 {
				limit = min(limit, capacity)
			}
			if grown > e.estimate {
				e.estimate = max(e.estimate, min(grown, limit))
			}
			e.estimate = max(e.estimate, min(acked, e.maxBPS))
		}
	}
	e.lastGrow = now
}

// confirm raises the estimate to bps: a probe sent that much without delay
// or loss.
func (e *bwe) confirm(bps int) {
	e.mu.Lock()
	e.estimate = max(e.estimate, min(bps, e.maxBPS))
	e.mu.Unlock()
}

func (e *bwe) snapshot() bweSnapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	return bweSnapshot{
		estimate: e.estimate, capacity: e.capacityLocked(capacityWindow, false), acked: e.ackedLocked(), loss: e.lossLocked(),
		queueDelay: e.queueDelayLocked(), overuse: e.overuse, growing: e.overuse && e.growingLocked(), overuses: e.overuses, rtt: e.rtt,
		feedback: e.feedbacks > 0,
	}
}

// GetTargetBitrate implements cc.BandwidthEstimator.
func (e *bwe) GetTargetBitrate() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.estimate
}

// OnTargetBitrateChange implements cc.BandwidthEstimator; the ABR polls
// instead.
func (e *bwe) OnTargetBitrateChange(func(int)) {}

// GetStats implements cc.BandwidthEstimator.
func (e *bwe) GetStats() map[string]any {
	s := e.snapshot()
	return map[string]any{"estimate": s.estimate, "capacity": s.capacity, "acked": s.acked, "averageLoss": s.loss,
		"queueDelayMs": s.queueDelay.Milliseconds(), "overuse": s.overuse}
}

// Close implements cc.BandwidthEstimator.
func (e *bwe) Close() error { return nil }
