package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/prism-streaming/prism/pipeline"
)

// fuzzMaxSpec is the API's bound on a job submission (internal/api
// maxSpecBody).
const fuzzMaxSpec = 256 << 10

// decodeSpec decodes a submission as POST /api/v1/jobs does: one JSON value,
// unknown fields refused.
func decodeSpec(data []byte) (Spec, error) {
	var s Spec
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(&s)
	return s, err
}

// FuzzSpec feeds job submissions to the API's decoding and Spec.Validate.
// Neither may panic; Validate's errors wrap ErrInvalidSpec and say so; a
// spec it accepts has a valid stream name as ID, and survives a round trip
// (encoded as the store does and decoded as the API does, it is the same
// work, valid, and encodes the same).
func FuzzSpec(f *testing.F) {
	for _, s := range []string{
		`{"id":"demo","input":"lavfi:testsrc2=size=1280x720:rate=30[out0];sine=frequency=440:sample_rate=48000[out1]","ladder":"default"}`,
		`{"id":"cam1","input":"rtsp://10.0.0.1/stream","ladder":"mobile","outputs":["hls","webrtc"],"restart":true,` +
			`"play":"signed","realtime":false,"constraints":{"needs_gpu":true,"encoder":"nvenc"},` +
			`"publish":[{"url":"https://sfu.example/whip/cam1","token":"s3cret"}]}`,
		`{"id":"inline","input":"srt://0.0.0.0:9000?mode=listener","ladder":"custom","ladder_yaml":"name: custom\ngop: 2s\nrungs:\n  - {name: 360p, height: 360, bitrate: 800k}\n"}`,
		`{"id":"demo","input":"x","ladder":"default","outputs":["hls","hls"]}`,
		`{"id":"../etc","input":"x","ladder":"default"}`,
		`{"id":"demo","input":"x\u0000","ladder":"default"}`,
		`{"id":"demo","input":"x","ladder":"default","unknown":1}`,
		`{"id":"demo","input":"x","ladder":"default"} trailing`,
		`{"id":"demo","input":"x","ladder":"default","publish":[{"url":"rtmp://x"}]}`,
		`{"id":1}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > fuzzMaxSpec {
			return
		}
		spec, err := decodeSpec(data)
		if err != nil {
			return // 400 "job spec: ..."
		}
		if err := spec.Validate(); err != nil {
			if !errors.Is(err, ErrInvalidSpec) || !strings.HasPrefix(err.Error(), ErrInvalidSpec.Error()+": ") {
				t.Fatalf("Validate error %q does not wrap ErrInvalidSpec", err)
			}
			return
		}
		if !pipeline.ValidName(spec.ID) {
			t.Fatalf("accepted ID %q", spec.ID)
		}
		if len(spec.Outputs) == 0 && (!spec.Serves(OutputHLS) || !spec.Serves(OutputWebRTC)) {
			t.Fatalf("a spec without outputs must serve them all: %+v", spec)
		}
		enc, err := json.Marshal(&spec)
		if err != nil {
			t.Fatalf("marshal %+v: %v", spec, err)
		}
		again, err := decodeSpec(enc)
		if err != nil {
			t.Fatalf("the API refuses the store's encoding %s: %v", enc, err)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("round trip through %s no longer valid: %v", enc, err)
		}
		if !spec.equal(&again) {
			t.Fatalf("round trip through %s: %+v, want %+v", enc, again, spec)
		}
		if enc2, _ := json.Marshal(&again); !bytes.Equal(enc, enc2) {
			t.Fatalf("encodings differ after a round trip:\n%s\n%s", enc, enc2)
		}
	})
}
