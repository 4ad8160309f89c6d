// Package pipeline is the staged pipeline's plain-Go plumbing, the one
// vocabulary every other package speaks: Packet and Track (what crosses
// stage boundaries), Fanout and Reader (one bounded ring per reader, so a
// slow reader drops its own packets), stage statistics, the Registry of
// streams a node serves with the stream-name rules, and Source, the
// interface every output reads. The FFmpeg stages that plug into it live in
// transcode/; pipeline imports no other Prism package.
package pipeline
