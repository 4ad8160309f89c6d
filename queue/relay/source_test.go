package relay

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/internal/testutil/fake"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
)

// TestSourcePlane: a pushed stream's source is published one level below
// the stream's own subjects, so the job's followers never see it; the
// worker follows it across a publisher reconnect (container bytes pass
// unshifted, marked as a discontinuity), and StopSource disconnects the
// publisher.
func TestSourcePlane(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	ingestConn, workerConn := testutil.DialNATS(t, e, "ingest"), testutil.DialNATS(t, e, "worker")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts := pipeline.Track{Name: "mpegts", Kind: pipeline.KindContainer, Codec: pipeline.CodecMPEGTS}
	publish := func() (*fake.Source, chan error) {
		src := fake.NewSource(ts)
		done := make(chan error, 1)
		go func() { done <- PublishSource(ctx, ingestConn, "cam", src) }()
		return src, done
	}
	src, done := publish()
	testutil.Eventually(t, 3*time.Second, "the source live", func() bool { return SourceLive(ctx, workerConn, "cam", 200*time.Millisecond) })
	if _, err := Follow(ctx, workerConn, "cam", WithPublisherWait(0), WithRequestTimeout(300*time.Millisecond)); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("Follow on the job's plane found the source: %v", err)
	}
	stream, err := FollowSource(ctx, workerConn, "cam", WithPublisherWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	r := stream.Subscribe(pipeline.Lossless())
	defer r.Close()
	read := func(want []byte, disc bool) {
		t.Helper()
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		p, err := r.Read(rctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p.Data, want) || p.Discontinuity != disc {
			t.Fatalf("got %q (discontinuity %v), want %q (%v)", p.Data, p.Discontinuity, want, disc)
		}
	}
	testutil.Eventually(t, 3*time.Second, "the follower subscribed", func() bool { return src.Readers() > 0 })
	src.Publish(&pipeline.Packet{Track: 0, Data: []byte("first")})
	read([]byte("first"), false)

	// The publisher reconnects: a new PublishSource of the same stream.
	_ = StopSource(ingestConn, "cam")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the stopped publisher: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("StopSource did not end the publisher")
	}
	src, done = publish()
	testutil.Eventually(t, 5*time.Second, "the follower on the new publisher", func() bool {
		return stream.Changes() == 1 && src.Readers() > 0
	})
	src.Publish(&pipeline.Packet{Track: 0, Data: []byte("again")})
	read([]byte("again"), true)
	src.Publish(&pipeline.Packet{Track: 0, Data: []byte("more")})
	read([]byte("more"), false)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
