package hls

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/prism-streaming/prism/internal/testutil"
)

// TestSilentAACDecodesToSilence: the frames that fill the audio over a
// discontinuity decode, in FFmpeg, to 1024 samples of digital silence per
// frame, mono and stereo.
func TestSilentAACDecodesToSilence(t *testing.T) {
	for _, ch := range []int{1, 2} {
		conf := mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelConfig: uint8(ch)}
		frame := silentAAC(&gohlslib.Track{Codec: &codecs.MPEG4Audio{Config: conf}})
		if frame == nil {
			t.Fatalf("%d channels: no silent frame", ch)
		}
		const frames = 20
		var adts []byte
		for range frames {
			pkts := mpeg4audio.ADTSPackets{{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelConfig: uint8(ch), ChannelCount: ch, AU: frame}}
			b, err := pkts.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			adts = append(adts, b...)
		}
		dir := t.TempDir()
		in, out := filepath.Join(dir, "in.aac"), filepath.Join(dir, "out.raw")
		if err := os.WriteFile(in, adts, 0o644); err != nil {
			t.Fatal(err)
		}
		testutil.FFmpeg(t, "-xerror", "-i", in, "-f", "wav", "-c:a", "pcm_s16le", "-flags", "+bitexact", "-map_metadata", "-1", out)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, []byte("data"))
		if i < 0 || len(b) < i+8 {
			t.Fatalf("%d channels: no data chunk in FFmpeg's WAV", ch)
		}
		pcm := b[i+8:]
		if want := frames * 1024 * ch * 2; len(pcm) != want {
			t.Fatalf("%d channels: %d bytes of PCM, want %d", ch, len(pcm), want)
		}
		for i := 0; i+1 < len(pcm); i += 2 {
			if s := int16(binary.LittleEndian.Uint16(pcm[i:])); s != 0 {
				t.Fatalf("%d channels: sample %d is %d, not silence", ch, i/2, s)
			}
		}
	}
}
