#!/usr/bin/env bash
# Builds FFmpeg 7.1 (from Debian 13's source package) plus nv-codec-headers into a
# versioned cache outside the checkout, and prints the prefix. Reused when present.
#
# Why not Debian 12's FFmpeg: it is 5.1 and go-astiav v0.39 needs the 7.x API.
# Why a trimmed configure: a full build takes ~13 min on 2 cores; Prism needs a
# small, explicit set of codecs, formats, filters and protocols.
#
# Environment:
#   PRISM_CACHE   cache root (default: $HOME/.cache/prism)
#   PRISM_FFMPEG  use this prefix instead of building (must hold lib/pkgconfig)
set -euo pipefail

FFMPEG_VERSION=7.1.5
NVCODEC_VERSION=12.1.14.0
CACHE_ROOT="${PRISM_CACHE:-$HOME/.cache/prism}"

log() { echo "ffmpeg.sh: $*" >&2; }

# A system FFmpeg 7.x (libavcodec 61) is fine as is.
if [[ -n "${PRISM_FFMPEG:-}" ]]; then echo "$PRISM_FFMPEG"; exit 0; fi
if pkg-config --exists 'libavcodec >= 61' 'libavcodec < 62' 2>/dev/null \
   && command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then
  # The prefix pkg-config found it under: /usr for Debian's, or a build
  # already on PKG_CONFIG_PATH (a shell that sourced build/env.sh).
  log "using FFmpeg $(pkg-config --modversion libavcodec) found by pkg-config"; pkg-config --variable=prefix libavcodec; exit 0
fi

DECODERS=(h264 hevc vp8 vp9 av1 libdav1d mpeg2video mpeg4 mjpeg png rawvideo wrapped_avframe
  aac aac_fixed aac_latm mp3 mp3float opus libopus flac vorbis ac3
  pcm_s16le pcm_s16be pcm_s24le pcm_s32le pcm_f32le pcm_f64le pcm_u8 pcm_mulaw pcm_alaw
  h264_cuvid hevc_cuvid h264_qsv hevc_qsv)
ENCODERS=(libx264 libx265 libvpx_vp8 h264_nvenc hevc_nvenc av1_nvenc h264_qsv hevc_qsv h264_vaapi hevc_vaapi
  aac libopus opus rawvideo wrapped_avframe png mjpeg pcm_s16le flac)
HWACCELS=(h264_nvdec hevc_nvdec vp9_nvdec av1_nvdec h264_vaapi hevc_vaapi vp9_vaapi av1_vaapi)
PARSERS=(h264 hevc aac aac_latm opus mpegaudio vp8 vp9 av1 mpegvideo mpeg4video mjpeg png flac ac3)
DEMUXERS=(mov matroska flv live_flv mpegts hls rtsp rtp sdp h264 hevc aac mp3 wav ogg
  image2 image_png_pipe rawvideo data concat)
MUXERS=(mp4 mov ipod matroska webm flv mpegts hls segment rtsp rtp rtp_mpegts null adts
  h264 hevc ogg opus wav image2 framecrc framemd5 rawvideo)
PROTOCOLS=(file pipe tcp udp rtp http https httpproxy tls hls crypto data rtmp rtmps libsrt)
FILTERS=(buffer buffersink abuffer abuffersink split asplit scale fps format aformat aresample
  null anull setpts asetpts asetnsamples settb asettb testsrc testsrc2 sine anullsrc color nullsrc
  hwupload hwdownload hwupload_cuda hwmap scale_cuda scale_vaapi scale_qsv vpp_qsv
  psnr ssim showinfo ashowinfo select aselect trim atrim pad crop fifo afifo volume
  framerate tpad apad)
BSFS=(h264_mp4toannexb hevc_mp4toannexb aac_adtstoasc extract_extradata dump_extra
  h264_metadata null)

join() { local IFS=,; echo "$*"; }
FLAGS=(--enable-gpl --enable-version3 --enable-shared --disable-static --disable-doc
  --disable-ffplay --disable-debug --disable-everything --enable-avdevice --enable-indev=lavfi
  --enable-libx264 --enable-libx265 --enable-libvpx --enable-libopus --enable-libdav1d --enable-gnutls --enable-libsrt
  --enable-ffnvcodec --enable-nvenc --enable-nvdec --enable-cuvid --enable-cuda-llvm
  --enable-libvpl --enable-vaapi
  --enable-decoder="$(join "${DECODERS[@]}")" --enable-encoder="$(join "${ENCODERS[@]}")"
  --enable-hwaccel="$(join "${HWACCELS[@]}")" --enable-parser="$(join "${PARSERS[@]}")"
  --enable-demuxer="$(join "${DEMUXERS[@]}")" --enable-muxer="$(join "${MUXERS[@]}")"
  --enable-protocol="$(join "${PROTOCOLS[@]}")" --enable-filter="$(join "${FILTERS[@]}")"
  --enable-bsf="$(join "${BSFS[@]}")")

KEY=$(printf '%s\n' "$FFMPEG_VERSION" "$NVCODEC_VERSION" "${FLAGS[@]}" | sha256sum | cut -c1-12)
PREFIX="$CACHE_ROOT/ffmpeg-$FFMPEG_VERSION-$KEY"
if [[ -f "$PREFIX/.complete" ]]; then echo "$PREFIX"; exit 0; fi

SRC="$CACHE_ROOT/src"
mkdir -p "$SRC"

# Debian 13's sources, through the machine's own Debian mirror, in a private apt
# state directory so the system's bookworm setup is untouched.
APTDIR="$CACHE_ROOT/apt-trixie"
mirror=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | grep -v security | head -1 | sed -E 's/^URIs: *//; s/^deb +(\[[^]]*\] +)?//; s/ .*//' || true)
[[ -n "$mirror" ]] || { log "no Debian mirror found in /etc/apt"; exit 1; }
mkdir -p "$APTDIR/lists/partial"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$APTDIR/sources.list"
APT=(apt-get -q -o Dir::Etc::SourceList="$APTDIR/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o Dir::State::Lists="$APTDIR/lists" -o APT::Sandbox::User=root)

fetch_orig() { # package, version -> path of orig tarball
  local pkg=$1 ver=$2 out
  out=$(ls "$SRC"/${pkg}_${ver}.orig.tar.* 2>/dev/null | head -1 || true)
  if [[ -z "$out" ]]; then
    [[ -f "$APTDIR/lists/.updated" ]] || { "${APT[@]}" update >&2; touch "$APTDIR/lists/.updated"; }
    local uri
    uri=$("${APT[@]}" source --print-uris "$pkg" 2>/dev/null | grep -o "'[^']*${pkg}_${ver}\.orig\.tar\.[a-z0-9]*'" | tr -d "'" | head -1)
    [[ -n "$uri" ]] || { log "no ${pkg} ${ver} orig tarball in Debian 13 sources"; exit 1; }
    out="$SRC/$(basename "$uri")"
    curl -fsSL --retry 3 -o "$out.tmp" "$uri" && mv "$out.tmp" "$out"
  fi
  echo "$out"
}

log "building FFmpeg $FFMPEG_VERSION into $PREFIX"
ff_tar=$(fetch_orig ffmpeg "$FFMPEG_VERSION")
nv_tar=$(fetch_orig nv-codec-headers "$NVCODEC_VERSION")

BUILD=$(mktemp -d "$CACHE_ROOT/build.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
tar -C "$BUILD" -xf "$nv_tar"
make -C "$BUILD"/nv-codec-headers* PREFIX="$PREFIX" install >/dev/null
tar -C "$BUILD" -xf "$ff_tar"
cd "$BUILD"/ffmpeg-*
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
./configure --prefix="$PREFIX" --extra-ldflags="-Wl,-rpath,$PREFIX/lib" "${FLAGS[@]}" >"$BUILD/configure.log" 2>&1 \
  || { tail -30 "$BUILD/configure.log" >&2; cat ffbuild/config.log | tail -40 >&2; exit 1; }
make -j"$(( $(nproc) + 1 ))" >"$BUILD/make.log" 2>&1 || { tail -40 "$BUILD/make.log" >&2; exit 1; }
make install >/dev/null
touch "$PREFIX/.complete"
log "done"
echo "$PREFIX"
