// Package webrtc plays every running ladder over WebRTC: a WHEP endpoint per
// stream (/whep/<stream>), with the rung chosen per viewer from that viewer's
// bandwidth, and a WHIP publisher that pushes a ladder to another WebRTC
// server as one simulcast track.
//
// Data flow of one stream (see stream.go, session.go):
//
//	job fan-out ─► stream reader ─► packetize each rung once ─► per-viewer queue ─► forwarder ─► pion track
//	                (one per stream)  (shared []*rtp.Packet)      (bounded, drops)   (rewrites seq,
//	                                                                                  switches at IDRs)
//
// Browsers receive one layer per m-line, so the server picks the rung for
// each viewer (abr.go) from pion's send-side bandwidth estimate (GCC over
// transport-wide congestion control feedback) and switches only at an IDR of
// the target rung. All rungs share one RTP timestamp base and the forwarder
// numbers packets per viewer, so the browser sees one continuous stream.
package webrtc
