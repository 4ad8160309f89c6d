#!/usr/bin/env bash
# The anchor benchmark: 20 s of 1080p30 H.264 + AAC through the mobile ladder
# (720p/480p/360p, x264 veryfast zerolatency), Prism and the FFmpeg CLI in the
# same run on the same machine. Writes build/bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."
media="${PRISM_CACHE:-$HOME/.cache/prism}/media"
clip="$media/bench-1080p30-20s.mp4"
mkdir -p "$media" build
if [[ ! -s "$clip" ]]; then
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i testsrc2=size=1920x1080:rate=30:duration=20 \
    -f lavfi -i sine=frequency=440:sample_rate=48000:duration=20 \
    -c:v libx264 -preset veryfast -b:v 6M -maxrate 6M -bufsize 12M -g 60 -pix_fmt yuv420p \
    -c:a aac -b:a 128k -shortest "$clip.tmp.mp4"
  mv "$clip.tmp.mp4" "$clip"
fi
./bin/prism bench --input "$clip" --ladder "${LADDER:-mobile}" --vs-ffmpeg --json build/bench.json "$@"
