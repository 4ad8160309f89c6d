package gpu

import (
	"os"
	"testing"
)

// TestProbe checks the probe's shape everywhere and, where PRISM_EXPECT_GPU
// names a device type (the GPU CI machine sets "cuda"), that it was found.
func TestProbe(t *testing.T) {
	r := Probe()
	if len(r.Devices) != 3 || len(r.Encoders) != 5 {
		t.Fatalf("unexpected report %+v", r)
	}
	for _, e := range r.Encoders {
		if !e.Compiled {
			t.Errorf("%s is not compiled into the FFmpeg build: scripts/ffmpeg.sh must enable it", e.Name)
		}
		if !e.Available && e.Error == "" {
			t.Errorf("%s unavailable without a reason", e.Name)
		}
	}
	for _, d := range r.Devices {
		t.Logf("device %-5s available=%v %s", d.Type, d.Available, d.Error)
		if want := os.Getenv("PRISM_EXPECT_GPU"); want == d.Type && !d.Available {
			t.Errorf("%s expected on this machine: %s", d.Type, d.Error)
		}
	}
	if Probe().Devices[0] != r.Devices[0] {
		t.Error("probe not cached")
	}
}
