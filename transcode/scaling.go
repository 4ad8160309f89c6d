package transcode

import (
	"fmt"
	"strings"

	"github.com/asticode/go-astiav"

	"github.com/prism-streaming/prism/gpu"
)

// Scaling on the GPU (the ladder's "scaling: cuda"): the decoded frame is
// uploaded once (hwupload_cuda), split and scaled per rung with scale_cuda
// (cascaded like the CPU graph), and each rung is downloaded once
// (hwdownload) for its encoder. It is the mixed path for GPUs that decode
// and scale but have no encoder (H100, H200, A100): the CPU keeps only the
// encoders. The filters need FFmpeg built with --enable-cuda-llvm (or
// nvcc) and nv-codec-headers; a build or a machine without them says so.

// cudaFilters are the filters the CUDA scaling graph uses.
var cudaFilters = []string{"hwupload_cuda", "scale_cuda", "hwdownload"}

// scalingPlan is where a job's rungs are scaled, and why there.
type scalingPlan struct {
	cuda   bool
	device int    // CUDA device index when cuda
	why    string // for the job's status
}

// scaler names the plan's device for tracks: "cpu", "cuda:0".
func (p scalingPlan) scaler() string {
	if p.cuda {
		return fmt.Sprintf("cuda:%d", p.device)
	}
	return "cpu"
}

// planScaling decides the ladder's scaling ("auto", "cpu" or "cuda") on
// this machine. cuda is refused with the precise reason when it cannot
// run; auto stays on the CPU, saying whether the GPU path could run.
func planScaling(mode string) (scalingPlan, error) {
	switch mode {
	case "cpu":
		return scalingPlan{why: "scaling cpu as the ladder asks"}, nil
	case "cuda":
		if err := cudaScalingAvailable(0); err != nil {
			return scalingPlan{}, fmt.Errorf("%w: scaling cuda: %w", ErrHardwareUnsupported, err)
		}
		return scalingPlan{cuda: true, why: "scaling cuda as the ladder asks: scale_cuda on cuda:0, one hwdownload per rung"}, nil
	}
	if err := cudaScalingAvailable(0); err != nil {
		return scalingPlan{why: "scaling auto: cpu (scale_cuda unavailable: " + err.Error() + ")"}, nil
	}
	// The mixed path costs an upload and a download per rung; whether that
	// beats libswscale depends on the ladder and the CPU, so auto does not
	// guess: prism bench measures both.
	return scalingPlan{why: "scaling auto: cpu (scale_cuda works on cuda:0 but auto does not use it unmeasured; scaling: cuda turns it on)"}, nil
}

// cudaScalingAvailable reports why CUDA scaling cannot run on device, or nil.
func cudaScalingAvailable(device int) error {
	var missing []string
	for _, f := range cudaFilters {
		if astiav.FindFilterByName(f) == nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s not compiled into this FFmpeg (it needs --enable-cuda-llvm and nv-codec-headers)", strings.Join(missing, ", "))
	}
	want := fmt.Sprint(device)
	for _, d := range gpu.Probe().Devices {
		if d.Type == "cuda" && d.Device == want {
			if d.Available {
				return nil
			}
			return fmt.Errorf("CUDA device %d does not open: %s", device, d.Error)
		}
	}
	return fmt.Errorf("CUDA device %d was not probed", device)
}
