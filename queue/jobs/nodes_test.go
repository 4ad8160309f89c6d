package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/prism-streaming/prism/internal/testutil"
	"github.com/prism-streaming/prism/queue/bus"
)

func TestPlacementReason(t *testing.T) {
	job := func(cost float64, c Constraints) *Job {
		return &Job{Spec: Spec{ID: "j", Constraints: c}, Cost: cost}
	}
	cpu := NodeInfo{ID: "cpu", CPUBudget: 1e8, Used: 6e7, Encoders: []string{"x264"}}
	gpu := NodeInfo{ID: "gpu", CPUBudget: 2e8, GPUs: []string{"H100"}, Encoders: []string{"x264", "nvenc"}}
	draining := NodeInfo{ID: "old", CPUBudget: 1e9, Draining: true}
	viewer := NodeInfo{ID: "edge", Roles: []string{RoleServe}}
	cases := []struct {
		name  string
		nodes []NodeInfo
		job   *Job
		want  string
	}{
		{"nobody", nil, job(1, Constraints{}), "no live node"},
		{"fits", []NodeInfo{cpu}, job(4e7, Constraints{}), ""},
		{"busy", []NodeInfo{cpu}, job(5e7, Constraints{}), "waiting for free capacity for 5e7 px/s"},
		{"too big", []NodeInfo{cpu, viewer}, job(1.2e8, Constraints{}), "no node with capacity for 1.2e8 px/s"},
		{"draining nodes do not count", []NodeInfo{cpu, draining}, job(5e8, Constraints{}), "no node with capacity for 5e8 px/s"},
		{"gpu wanted", []NodeInfo{cpu}, job(1, Constraints{NeedsGPU: true}), "no node with a GPU"},
		{"gpu there", []NodeInfo{cpu, gpu}, job(1, Constraints{NeedsGPU: true}), ""},
		{"encoder wanted", []NodeInfo{cpu}, job(1, Constraints{Encoder: "nvenc"}), "no node with encoder nvenc"},
		{"encoder there", []NodeInfo{cpu, gpu}, job(1, Constraints{Encoder: "nvenc"}), ""},
		{"auto is anything", []NodeInfo{viewer, cpu}, job(1, Constraints{Encoder: "auto"}), ""},
	}
	for _, c := range cases {
		if got := placementReason(c.nodes, c.job); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestGPUJobWaitsForAGPUNode(t *testing.T) {
	testutil.LeakCheck(t)
	ctx := context.Background()
	e := testutil.StartNATS(t, bus.EmbeddedConfig{})
	cpuRunner := &blockingRunner{}
	startNode(t, fastNode(t, "cpu", openStore(t, testutil.DialNATS(t, e, "cpu"), 1), cpuRunner, 100*testutil.TinyCost))
	client := openStore(t, testutil.DialNATS(t, e, "client"), 1)
	spec := tinySpec("needs-gpu")
	spec.Constraints = Constraints{NeedsGPU: true, Encoder: "nvenc"}
	if _, err := client.Submit(ctx, spec); err != nil {
		t.Fatal(err)
	}
	consistently(t, time.Second, "GPU job not on the CPU node", func() bool {
		j := getJob(t, client, "needs-gpu")
		return j.State == StatePending && j.Reason == "no node with a GPU"
	})
	g := fastNode(t, "gpu", openStore(t, testutil.DialNATS(t, e, "gpu"), 1), &blockingRunner{}, 100*testutil.TinyCost)
	g.GPUs, g.Encoders = []string{"NVIDIA L4"}, []string{"x264", "nvenc"}
	startNode(t, g)
	waitJob(t, client, "needs-gpu", 5*time.Second, "running on the GPU node", func(j *Job) bool { return j.State == StateRunning && j.Owner == "gpu" })
	if cpuRunner.starts.Load() != 0 {
		t.Fatal("the CPU node ran a GPU job")
	}
}
