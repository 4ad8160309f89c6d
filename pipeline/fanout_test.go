package pipeline

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
)

func pkt(track int, pts int64, key bool) *Packet {
	return &Packet{Track: track, PTS: pts, DTS: pts, Keyframe: key, Data: []byte{byte(pts)}}
}

func TestSlowReaderDropsOnlyItsOwnPackets(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	var f Fanout
	var logged []string
	var mu sync.Mutex
	f.Log = func(format string, args ...any) { mu.Lock(); logged = append(logged, format); mu.Unlock() }
	var keyRequests []int
	slow := f.Subscribe(WithBufferSize(4), WithName("slow"), WithKeyframeRequest(func(track int) { keyRequests = append(keyRequests, track) }))
	fast := f.Subscribe(WithBufferSize(1000))

	// Publishing never blocks on the slow reader, which reads nothing.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := int64(0); i < 100; i++ {
			f.Publish(pkt(0, i, i%30 == 0), KindVideo)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a slow reader")
	}
	for i := int64(0); i < 100; i++ {
		p, err := fast.Read(context.Background())
		if err != nil || p.PTS != i {
			t.Fatalf("fast reader: packet %d: %v %v", i, p, err)
		}
	}
	if got := slow.Dropped(); got != 96 {
		t.Errorf("slow reader dropped %d, want 96", got)
	}
	if len(keyRequests) != 1 || len(logged) != 1 {
		t.Errorf("want one keyframe request and one drop report, got %v and %v", keyRequests, logged)
	}
	// After the drop, the slow reader resumes only at a keyframe.
	for i := 0; i < 4; i++ {
		if _, err := slow.Read(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	f.Publish(pkt(0, 100, false), KindVideo)
	f.Publish(pkt(0, 101, true), KindVideo)
	p, _ := slow.Read(context.Background())
	if p.PTS != 101 {
		t.Errorf("after a drop the reader got PTS %d, want the keyframe at 101", p.PTS)
	}
	f.Close()
	if _, err := slow.Read(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

func TestAudioDropsDoNotWaitForKeyframes(t *testing.T) {
	var f Fanout
	r := f.Subscribe(WithBufferSize(1))
	f.Publish(pkt(1, 0, true), KindAudio)
	f.Publish(pkt(1, 1, true), KindAudio) // dropped
	if _, err := r.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.Publish(pkt(1, 2, false), KindAudio)
	if p, _ := r.Read(context.Background()); p.PTS != 2 {
		t.Errorf("got %d", p.PTS)
	}
}

func TestLosslessReaderWaitsAndUnblocksOnClose(t *testing.T) {
	defer testutil.CheckGoroutines(t)()
	var f Fanout
	r := f.Subscribe(WithBufferSize(2), Lossless(), WithTracks(0))
	published := make(chan int64, 10)
	go func() {
		for i := int64(0); i < 5; i++ {
			f.Publish(pkt(0, i, true), KindVideo)
			f.Publish(pkt(9, i, true), KindVideo) // filtered out
			published <- i
		}
		close(published)
	}()
	testutil.Eventually(t, time.Second, "two packets published", func() bool { return len(published) == 2 })
	for i := int64(0); i < 5; i++ {
		p, err := r.Read(context.Background())
		if err != nil || p.PTS != i {
			t.Fatalf("read %d: %v %v", i, p, err)
		}
	}
	for range published {
	}
	if r.Dropped() != 0 {
		t.Errorf("lossless reader dropped %d", r.Dropped())
	}
	// A publisher stuck on a full lossless reader is released by Close.
	r2 := f.Subscribe(WithBufferSize(1), Lossless())
	stuck := make(chan struct{})
	go func() {
		f.Publish(pkt(0, 1, true), KindVideo)
		f.Publish(pkt(0, 2, true), KindVideo)
		close(stuck)
	}()
	testutil.Eventually(t, time.Second, "reader full", func() bool { r2.mu.Lock(); defer r2.mu.Unlock(); return r2.n == 1 })
	r2.Close()
	<-stuck
	r.Close()
	if f.Readers() != 0 {
		t.Errorf("%d readers left", f.Readers())
	}
}

func TestReadHonoursContext(t *testing.T) {
	var f Fanout
	r := f.Subscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.Read(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v", err)
	}
}

func TestSubscribeAfterClose(t *testing.T) {
	var f Fanout
	f.Close()
	r := f.Subscribe()
	if _, err := r.Read(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("got %v", err)
	}
}

func BenchmarkPublish(b *testing.B) {
	var f Fanout
	for i := 0; i < 200; i++ {
		f.Subscribe(WithBufferSize(64))
	}
	p := pkt(0, 1, true)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.Publish(p, KindVideo)
	}
}
