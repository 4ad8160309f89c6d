package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/queue/jobs"
)

// TestRecordSaysHowRungsEncode: a running job's record names, per rung,
// the encoder, its device, the scaler and why (encoder: auto here, so the
// reason says why not NVENC on a node without it), and a stopped job's
// record no longer claims it.
func TestRecordSaysHowRungsEncode(t *testing.T) {
	testutil.NeedsFFmpeg(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	nc := testutil.DialNATS(t, e, "test")
	store := startNode(t, nc, 20*time.Second)
	ctx := context.Background()
	if _, err := store.Submit(ctx, jobs.Spec{ID: "enc", Input: testutil.TinyInput, Ladder: "tiny", LadderYAML: testutil.TinyLadder}); err != nil {
		t.Fatal(err)
	}
	waitState(t, store, "enc", 20*time.Second, jobs.StateRunning)
	var j *jobs.Job
	testutil.Eventually(t, 10*time.Second, "the record's encoding", func() bool {
		var err error
		j, err = store.Get(ctx, "enc")
		return err == nil && len(j.Encoding) > 0
	})
	for _, r := range j.Encoding {
		if r.Rung == "" || r.Encoder == "" || r.Device == "" || r.Scaler == "" {
			t.Errorf("incomplete rung encoding: %+v", r)
		}
		if !strings.HasPrefix(r.Why, "encoder auto: "+r.Encoder+" opens here") || !strings.Contains(r.Why, "scaling auto: ") {
			t.Errorf("rung %s: reason %q does not say why %s and where it scales", r.Rung, r.Why, r.Encoder)
		}
		t.Logf("rung %s: %s on %s, scaled on %s: %s", r.Rung, r.Encoder, r.Device, r.Scaler, r.Why)
	}
	if _, err := store.Stop(ctx, "enc"); err != nil {
		t.Fatal(err)
	}
	if j := waitState(t, store, "enc", 10*time.Second, jobs.StateStopped); len(j.Encoding) != 0 {
		t.Errorf("a stopped job's record still lists encoders: %+v", j.Encoding)
	}
}
