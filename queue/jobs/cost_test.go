package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
	"github.com/prism-streaming/prism/transcode/ladder"
)

// TestRunningJobIsRepriced: a job is priced at its ladder's nominal cost
// until its runner reports the real one; then the owner's capacity frees
// up and a second job that did not fit is taken.
func TestRunningJobIsRepriced(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	s := openStore(t, testutil.DialNATS(t, e, "n1"), 1)
	report := make(chan float64, 1)
	runner := RunnerFunc(func(ctx context.Context, spec Spec, running func()) error {
		if spec.ID == "first" {
			ReportCost(ctx, <-report)
		}
		running()
		<-ctx.Done()
		return nil
	})
	// Room for one job at the nominal cost, not two.
	startNode(t, fastNode(t, "n1", s, runner, 1.5*testutil.TinyCost))
	ctx := context.Background()
	if _, err := s.Submit(ctx, tinySpec("first")); err != nil {
		t.Fatal(err)
	}
	report <- testutil.TinyCost / 4
	waitJob(t, s, "first", 5*time.Second, "running at its real cost", func(j *Job) bool {
		return j.State == StateRunning && j.Cost == testutil.TinyCost/4
	})
	if _, err := s.Submit(ctx, tinySpec("second")); err != nil {
		t.Fatal(err)
	}
	waitJob(t, s, "second", 5*time.Second, "the second job running in the room freed", func(j *Job) bool {
		return j.State == StateRunning
	})
}

// TestPushedJobPricedForItsSource: a pushed stream's job is priced from the
// publisher's video, not from the ladder's nominal 1080p source.
func TestPushedJobPricedForItsSource(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := OpenStore(ctx, testutil.DialNATS(t, e, "n1"), StoreConfig{Replicas: 1, CheckLadder: ladder.Check, SourceCost: ladder.SourceCost})
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{ID: "cam", Input: "ingest://cam", Ladder: "default", Ingest: &IngestSpec{Protocol: "rtmp", Width: 1280, Height: 720, FPS: 30}}
	j, err := s.Submit(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	// default on 720p30: the 720p, 480p and 360p rungs.
	want := float64(1280*720+854*480+640*360) * 30
	if j.Cost != want {
		t.Errorf("cost %g, want %g (the rungs planned for 1280x720@30)", j.Cost, want)
	}
}

// TestLadderNeedingNVENCGoesWhereItOpens: a ladder with a rung that asks for
// nvenc without a software fallback is placed only on a node whose probe
// lists nvenc; the CPU node leaves it, and the job says why while it waits.
func TestLadderNeedingNVENCGoesWhereItOpens(t *testing.T) {
	testutil.LeakCheck(t)
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := OpenStore(ctx, testutil.DialNATS(t, e, "n1"), StoreConfig{Replicas: 1, CheckLadder: ladder.Check, RequiredEncoder: ladder.RequiredEncoder})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan string, 4)
	runner := func(node string) Runner {
		return RunnerFunc(func(ctx context.Context, spec Spec, running func()) error {
			ran <- node + " " + spec.ID
			running()
			<-ctx.Done()
			return nil
		})
	}
	cpu := fastNode(t, "cpu", s, runner("cpu"), 10*testutil.TinyCost)
	cpu.Encoders = []string{"auto", "x264"}
	startNode(t, cpu)
	nvenc := "name: gpu\nrungs:\n  - {name: 180p, height: 180, bitrate: 300k, encoder: nvenc, preset: p4}\n"
	soft := "name: gpu-soft\nrungs:\n  - {name: 180p, height: 180, bitrate: 300k, encoder: nvenc, fallback: software, preset: p4}\n"
	j, err := s.Submit(ctx, Spec{ID: "needs-nvenc", Input: testutil.TinyInput, Ladder: "gpu", LadderYAML: nvenc})
	if err != nil {
		t.Fatal(err)
	}
	if j.Spec.Constraints.Encoder != "nvenc" {
		t.Fatalf("constraint %+v: want encoder nvenc from the ladder", j.Spec.Constraints)
	}
	if _, err := s.Submit(ctx, Spec{ID: "falls-back", Input: testutil.TinyInput, Ladder: "gpu-soft", LadderYAML: soft}); err != nil {
		t.Fatal(err)
	}
	waitJob(t, s, "falls-back", 5*time.Second, "the fallback ladder running on the CPU node", func(j *Job) bool { return j.State == StateRunning && j.Owner == "cpu" })
	waitJob(t, s, "needs-nvenc", 5*time.Second, "pending with the reason", func(j *Job) bool {
		return j.State == StatePending && j.Reason == "no node with encoder nvenc"
	})
	gpuNode := fastNode(t, "gpu", s, runner("gpu"), 10*testutil.TinyCost)
	gpuNode.Encoders, gpuNode.GPUs = []string{"auto", "x264", "nvenc"}, []string{"cuda"}
	startNode(t, gpuNode)
	waitJob(t, s, "needs-nvenc", 5*time.Second, "running on the NVENC node", func(j *Job) bool { return j.State == StateRunning && j.Owner == "gpu" })
}
