package worker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/jobs"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// undecodableUntil writes an MPEG-TS file of H.264 whose IDR slices are
// removed up to from seconds (all of them when from is past the end): its
// parameter sets open the input, and nothing decodes before the first IDR
// left, as with a camera whose stream starts between keyframes.
func undecodableUntil(t *testing.T, seconds, from float64) string {
	t.Helper()
	dir := t.TempDir()
	raw, ts := filepath.Join(dir, "in.h264"), filepath.Join(dir, "in.ts")
	testutil.FFmpeg(t, "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration="+ftoa(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-x264-params", "keyint=infinite:scenecut=0:forced-idr=1",
		"-force_key_frames", "expr:gte(t,n_forced*2)", "-f", "h264", raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	frames, kept := 0, 0
	for _, nal := range bytes.Split(b, []byte{0, 0, 1}) {
		nal = bytes.TrimSuffix(nal, []byte{0}) // a 4-byte start code's leading zero
		if len(nal) == 0 {
			continue
		}
		switch nal[0] & 0x1f {
		case 1: // a non-IDR slice
			frames++
		case 5: // an IDR slice
			frames++
			if float64(frames-1)/25 < from {
				continue
			}
			kept++
		}
		out = append(append(out, 0, 0, 0, 1), nal...)
	}
	if err := os.WriteFile(raw, out, 0o644); err != nil {
		t.Fatal(err)
	}
	// -copyinkf: keep the frames before the first keyframe, which a plain
	// copy drops.
	testutil.FFmpeg(t, "-r", "25", "-i", raw, "-c", "copy", "-copyinkf", "-f", "mpegts", ts)
	t.Logf("%d frames, %d IDRs kept from %.1fs", frames, kept, from)
	return ts
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// startNode runs a job agent with the in-process runner on a real NATS
// server and job store.
func startNode(t *testing.T, nc *nats.Conn, startTimeout time.Duration) *jobs.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store, err := jobs.OpenStore(ctx, nc, jobs.StoreConfig{Replicas: 1, CheckLadder: ladder.Check})
	if err != nil {
		t.Fatal(err)
	}
	n := &jobs.Node{ID: "n1", Store: store, Runner: &InProcess{NC: nc, Log: testutil.Logger(t)}, Capacity: 10 * testutil.TinyCost,
		Roles: []string{jobs.RoleTranscode}, StartTimeout: startTimeout, MaxAttempts: 1, Log: testutil.Logger(t)}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return store
}

// waitState polls the job record until its state is one of states.
func waitState(t *testing.T, s *jobs.Store, id string, timeout time.Duration, states ...jobs.State) *jobs.Job {
	t.Helper()
	var j *jobs.Job
	testutil.Eventually(t, timeout, fmt.Sprintf("%s in %v", id, states), func() bool {
		var err error
		j, err = s.Get(context.Background(), id)
		return err == nil && slices.Contains(states, j.State)
	})
	return j
}

// TestRunningMeansMedia: a job whose input opens at once but has nothing
// decodable for its first 2 s becomes running only once its rung's first
// IDR is on NATS, not when its input and encoders open.
func TestRunningMeansMedia(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	testutil.LeakCheck(t)
	input := undecodableUntil(t, 6, 2)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "test")
	store := startNode(t, nc, 20*time.Second)

	// The video rung's subject, watched from before the job starts.
	var mu sync.Mutex
	var firstMedia time.Time
	sub, err := nc.Subscribe("media.late.0", func(*nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if firstMedia.IsZero() {
			firstMedia = time.Now()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	submitted := time.Now()
	if _, err := store.Submit(context.Background(), jobs.Spec{ID: "late", Input: input, Ladder: "tiny", LadderYAML: testutil.TinyLadder}); err != nil {
		t.Fatal(err)
	}
	waitState(t, store, "late", 20*time.Second, jobs.StateStarting, jobs.StateRunning)
	j := waitState(t, store, "late", 20*time.Second, jobs.StateRunning, jobs.StateFailed, jobs.StateStopped)
	running := time.Now()
	if j.State != jobs.StateRunning {
		t.Fatalf("job %s: %s", j.State, j.Reason)
	}
	mu.Lock()
	first := firstMedia
	mu.Unlock()
	t.Logf("running after %s, first video on NATS after %s", running.Sub(submitted).Round(time.Millisecond), first.Sub(submitted).Round(time.Millisecond))
	if first.IsZero() || first.After(running) {
		t.Fatalf("running before any video reached NATS (first at %v)", first)
	}
	if d := running.Sub(submitted); d < 1500*time.Millisecond {
		t.Fatalf("running %s after submission, before the input's first IDR (2 s in)", d)
	}
	if _, err := store.Stop(context.Background(), "late"); err != nil {
		t.Fatal(err)
	}
	waitState(t, store, "late", 10*time.Second, jobs.StateStopped)
}

// TestInputWithoutMediaFailsAfterStartTimeout: an input that opens and never
// delivers a decodable frame fails the job after the start timeout, the
// reason saying what it waited for; the job never reported running.
func TestInputWithoutMediaFailsAfterStartTimeout(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	testutil.LeakCheck(t)
	input := undecodableUntil(t, 20, 1000)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "test")
	store := startNode(t, nc, 2*time.Second)
	if _, err := store.Submit(context.Background(), jobs.Spec{ID: "silent", Input: input, Ladder: "tiny", LadderYAML: testutil.TinyLadder}); err != nil {
		t.Fatal(err)
	}
	j := waitState(t, store, "silent", 20*time.Second, jobs.StateFailed, jobs.StateStopped, jobs.StateRunning)
	if j.State != jobs.StateFailed {
		t.Fatalf("job %s (%s), want failed", j.State, j.Reason)
	}
	want := "did not start within 2s: input open, no media yet: waiting for the first frames of 180p"
	if !strings.Contains(j.Reason, want) {
		t.Fatalf("reason %q, want it to say %q", j.Reason, want)
	}
}
