package relay

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/internal/testutil/fake"
	"github.com/prism-streaming/prism/pipeline"
	"github.com/prism-streaming/prism/queue/bus"
)

// TestDescribe: a node's API learns a published stream's tracks and stats
// from its publisher without following it: the job gets no reader and no
// keyframe request (a follower would ask for one as it joins).
func TestDescribe(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	pubConn, apiConn := testutil.DialNATS(t, e, "publisher"), testutil.DialNATS(t, e, "api")
	job := fake.NewSource()
	defer job.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pubDone := make(chan error, 1)
	go func() { pubDone <- Publish(ctx, pubConn, "cam3", job) }()

	var info StreamInfo
	var stats pipeline.SourceStats
	testutil.Eventually(t, 2*time.Second, "stream described", func() bool {
		var err error
		info, stats, err = Describe(ctx, apiConn, "cam3")
		return err == nil
	})
	if !reflect.DeepEqual(info.Tracks, job.Tracks()) || info.Stream != "cam3" || info.Instance == "" {
		t.Fatalf("info %+v, want the job's tracks %+v", info, job.Tracks())
	}
	if stats.MediaTime != 42*time.Second {
		t.Fatalf("stats %+v, want the job's (media time 42s)", stats)
	}
	if n, k := job.Readers(), job.Keyframes(); n != 1 || k != 0 {
		t.Fatalf("describing: the job has %d readers (want only the publisher's) and %d keyframe requests (want 0)", n, k)
	}

	// The publisher stops: describing fails at once, with ErrStreamNotFound.
	cancel()
	if err := <-pubDone; err != nil {
		t.Fatalf("publisher: %v", err)
	}
	// The publisher's unsubscribes are on their way: once the server has
	// them, nobody answers.
	if err := pubConn.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err := Describe(context.Background(), apiConn, "cam3")
	if took := time.Since(start); !errors.Is(err, ErrStreamNotFound) || took > DescribeTimeout {
		t.Fatalf("no publisher: %v after %s, want ErrStreamNotFound within %s", err, took, DescribeTimeout)
	}
	t.Logf("no publisher: %v after %s", err, time.Since(start).Round(time.Microsecond))
	if _, _, err := Describe(context.Background(), apiConn, "bad.name"); !errors.Is(err, pipeline.ErrStreamName) {
		t.Fatalf("bad name: %v", err)
	}
}
