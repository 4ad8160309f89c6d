package pipeline

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

type fakeSource struct{ Source }

func TestRegistry(t *testing.T) {
	var r Registry
	var events []StreamEvent
	a := &fakeSource{}
	if err := r.Add("a", a); err != nil {
		t.Fatal(err)
	}
	cancel := r.Watch(func(ev StreamEvent) { events = append(events, ev) })
	if err := r.Add("a", a); !errors.Is(err, ErrStreamExists) {
		t.Errorf("duplicate: %v", err)
	}
	for _, bad := range []string{"", "../x", "a b", "-x", string(make([]byte, 65))} {
		if err := r.Add(bad, a); !errors.Is(err, ErrStreamName) {
			t.Errorf("name %q: %v", bad, err)
		}
	}
	if err := r.Add("b", a); err != nil {
		t.Fatal(err)
	}
	if j, ok := r.Get("b"); !ok || j != a {
		t.Error("Get b")
	}
	r.Remove("a")
	r.Remove("nope")
	cancel()
	if err := r.Add("c", a); err != nil {
		t.Fatal(err)
	}
	if len(events) != 3 || events[0].Name != "a" || events[1].Name != "b" || !events[2].Removed {
		t.Errorf("events %+v", events)
	}
	if n := r.Names(); len(n) != 2 || n[0] != "b" || n[1] != "c" {
		t.Errorf("names %v", n)
	}
}

// TestRegistryDemand: an offered stream is followed on demand. Await asks
// for it and waits until it is added; an unknown one is refused at once.
func TestRegistryDemand(t *testing.T) {
	var r Registry
	a := &fakeSource{}
	ctx := context.Background()
	if _, err := r.Await(ctx, "a", OutputHLS); !errors.Is(err, ErrStreamUnknown) {
		t.Errorf("unknown stream: %v", err)
	}
	r.Offer("a")
	r.Offer("w", OutputWebRTC)
	if _, err := r.Await(ctx, "w", OutputHLS); !errors.Is(err, ErrStreamUnknown) {
		t.Errorf("stream not served by hls: %v", err)
	}
	if got := r.Available(); !slices.Equal(got, []string{"a", "w"}) || len(r.Names()) != 0 || !r.Offered("a") {
		t.Errorf("available %v, names %v", got, r.Names())
	}

	// Several requests wait; the follower is woken once and adds the stream.
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			src, err := r.Await(ctx, "a", OutputHLS)
			if err == nil && src != a {
				err = errors.New("wrong source")
			}
			errs <- err
		}()
	}
	select {
	case <-r.Demanded():
	case <-time.After(5 * time.Second):
		t.Fatal("no demand")
	}
	if last, held := r.LastUse("a"); last.IsZero() || held {
		t.Errorf("last use %v, held %v", last, held)
	}
	if err := r.Add("a", a); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}

	// A hold keeps the stream used; its release restarts the idle time.
	before, _ := r.LastUse("a")
	release := r.Hold("a")
	if _, held := r.LastUse("a"); !held {
		t.Error("not held")
	}
	select {
	case <-r.Demanded(): // left from the waits above
	default:
	}
	release()
	release() // twice is once
	select {
	case <-r.Demanded(): // the follower looks again when a hold ends
	default:
		t.Error("release did not signal")
	}
	if last, held := r.LastUse("a"); held || last.Before(before) {
		t.Errorf("after release: last %v (before %v), held %v", last, before, held)
	}
	// A request's use holds too, and its end is not signalled.
	done := r.Use("a")
	if _, held := r.LastUse("a"); !held {
		t.Error("not held while used")
	}
	done()
	select {
	case <-r.Demanded():
		t.Error("the end of a use signalled")
	default:
	}
	if _, held := r.LastUse("a"); held {
		t.Error("held after the use ended")
	}
	r.Use("nope")()
	r.Hold("nope")() // not offered: nothing recorded

	// Removed (let go), still offered: a request waits again; the wait is
	// bounded by its context, and a withdrawn offer ends it at once.
	r.Remove("a")
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := r.Await(short, "a", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("bounded wait: %v", err)
	}
	go func() {
		_, err := r.Await(ctx, "a", "")
		errs <- err
	}()
	<-r.Demanded()
	r.Withdraw("a")
	if err := <-errs; !errors.Is(err, ErrStreamUnknown) {
		t.Errorf("withdrawn: %v", err)
	}
	if r.Offered("a") {
		t.Error("still offered")
	}

	// A stream added without an offer is served as before.
	if err := r.Add("b", a, OutputWebRTC); err != nil {
		t.Fatal(err)
	}
	if src, err := r.Await(ctx, "b", OutputWebRTC); err != nil || src != a {
		t.Errorf("registered stream: %v", err)
	}
	if _, err := r.Await(ctx, "b", OutputHLS); !errors.Is(err, ErrStreamUnknown) {
		t.Errorf("registered stream, other output: %v", err)
	}
}
