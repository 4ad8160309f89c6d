package relay

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/internal/testutil/fake"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
)

// TestFollowSurvivesHostileMessages: whoever can publish on
// media.<stream>.<track> sends malformed messages and headers that claim
// huge packets, most of them with the real publisher's instance (it is in
// the track list anyone can ask for). The followed stream drops them,
// counts the loss (video waits for a keyframe and asks for one), keeps
// delivering the real publisher's packets, and allocates next to nothing
// for the claims.
func TestFollowSurvivesHostileMessages(t *testing.T) {
	testutil.LeakCheck(t)
	const maxPayload = 64 << 10
	e := testutil.StartNATS(t, bus.EmbeddedConfig{MaxPayload: maxPayload})
	pubConn, subConn := testutil.DialNATS(t, e, "publisher"), testutil.DialNATS(t, e, "viewer")
	intruder := testutil.DialNATS(t, e, "intruder")
	job := fake.NewSource()
	defer job.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pubDone := make(chan error, 1)
	go func() { pubDone <- Publish(ctx, pubConn, "cam", job) }()
	defer func() {
		cancel()
		err := <-pubDone // stopped by cancel: its error says so
		_ = err
	}()
	var remote *Stream
	testutil.Eventually(t, 2*time.Second, "stream published", func() bool {
		var err error
		remote, err = Follow(ctx, subConn, "cam", WithPublisherWait(0))
		return err == nil
	})
	defer remote.Close()
	reader := remote.Subscribe(pipeline.Lossless())
	defer reader.Close()
	instance, err := strconv.ParseUint(remote.Info().Instance, 16, 64)
	if err != nil {
		t.Fatal(err)
	}

	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	// readUntil reads up to the packet carrying want; no forged packet and
	// none of the names in never may come before it.
	readUntil := func(want string, never ...string) {
		t.Helper()
		for {
			p, err := reader.Read(rctx)
			if err != nil {
				t.Fatalf("waiting for %q: %v", want, err)
			}
			got := string(p.Data)
			if got == "forged" {
				t.Fatalf("a forged packet reached the stream: track %d keyframe %v", p.Track, p.Keyframe)
			}
			for _, n := range never {
				if got == n {
					t.Fatalf("%q was delivered before %q", n, want)
				}
			}
			if got == want {
				return
			}
		}
	}
	var dts int64
	send := func(track int, data string, key bool) {
		dts += 3000
		job.Publish(&pipeline.Packet{Track: track, Data: []byte(data), PTS: dts, DTS: dts, Duration: 3000, Keyframe: key})
	}
	send(0, "key-1", true)
	readUntil("key-1")

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	keyframes := job.Keyframes()

	room := maxPayload - headerLen
	forged := []byte("forged")
	withVersion := func(b []byte, v byte) []byte { b[0] = v; return b }
	hostile := []struct {
		name    string
		subject string
		msg     []byte
	}{
		{"total 0xFFFFFFFF", "0", craft(wireHeader{flags: flagChunked | flagKeyframe, instance: instance, seq: 7, chunks: 2, total: 0xFFFFFFFF}, 0, make([]byte, room))},
		{"total 0xFFFFFFFF, one chunk", "0", craft(wireHeader{flags: flagKeyframe, instance: instance, seq: 8, chunks: 1, total: 0xFFFFFFFF}, 0, forged)},
		{"more than the chunks carry", "0", craft(wireHeader{flags: flagChunked | flagKeyframe, instance: instance, seq: 9, chunks: 3, total: 40 << 20}, 0, make([]byte, room))},
		{"chunk index past the count", "0", craft(wireHeader{flags: flagChunked, instance: instance, seq: 9, chunks: 2, total: 12}, 5, forged)},
		{"chunk count 0", "0", craft(wireHeader{flags: flagKeyframe, instance: instance, seq: 9, total: 6}, 0, forged)},
		{"wrong version", "0", withVersion(craft(wireHeader{flags: flagKeyframe, instance: instance, seq: 9, chunks: 1, total: 6}, 0, forged), wireVersion+1)},
		{"short header", "0", []byte{wireVersion, flagKeyframe, 0, 0}},
		{"unknown flags", "0", craft(wireHeader{flags: flagKeyframe | 0x40, instance: instance, seq: 9, chunks: 1, total: 6}, 0, forged)},
		{"mismatched instance", "0", craft(wireHeader{flags: flagKeyframe, instance: instance + 1, seq: 2, chunks: 1, total: 6}, 0, forged)},
		{"unknown track", "9", craft(wireHeader{flags: flagKeyframe, track: 9, instance: instance, seq: 1, chunks: 1, total: 6}, 0, forged)},
		{"track not its subject's", "1", craft(wireHeader{flags: flagKeyframe, track: 0, instance: instance, seq: 9, chunks: 1, total: 6}, 0, forged)},
		{"a chunk that does not fit", "0", craft(wireHeader{flags: flagChunked, instance: instance, seq: 10, chunks: 2, total: uint32(room) + 1}, 1, forged)},
		// Last, so that its packet is still being reassembled when memory
		// is measured: the largest packet a header may claim (1025 chunks
		// of this max payload), its first chunk sent.
		{"64 MiB claim", "0", craft(wireHeader{flags: flagChunked | flagKeyframe, instance: instance, seq: 11, chunks: 1025, total: maxPacketLen}, 0, make([]byte, room))},
	}
	for _, h := range hostile {
		if err := intruder.Publish("media.cam."+h.subject, h.msg); err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
	}
	if err := intruder.Flush(); err != nil {
		t.Fatal(err)
	}
	// The server delivered all of it before it answered the flush: the
	// real publisher's next packet reaches the stream after them.
	send(1, "audio-after", false)
	readUntil("audio-after")

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	const limit = 64 << 20
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew >= limit {
		t.Fatalf("heap grew %d MiB while a hostile claim is being reassembled", grew>>20)
	}
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated >= limit {
		t.Fatalf("%d MiB allocated for %d hostile messages", allocated>>20, len(hostile))
	}
	t.Logf("heap %+d KiB, %d KiB allocated, for %d hostile messages", (int64(after.HeapAlloc)-int64(before.HeapAlloc))>>10,
		(after.TotalAlloc-before.TotalAlloc)>>10, len(hostile))

	// The loss makes video wait for a keyframe, which it asked for; then
	// the real publisher's packets flow again.
	send(0, "delta-lost", false)
	testutil.Eventually(t, 3*time.Second, "a keyframe request after the loss", func() bool { return job.Keyframes() > keyframes })
	send(0, "key-2", true)
	readUntil("key-2", "delta-lost")
	send(0, "delta-2", false)
	send(1, "audio-2", false)
	readUntil("delta-2")
	readUntil("audio-2")
	select {
	case <-remote.Done():
		t.Fatalf("the stream ended: %v", remote.Err())
	default:
	}
}
