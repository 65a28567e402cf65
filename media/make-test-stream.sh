#!/usr/bin/env bash
# Generates media/test-stream/: a small, real HLS stream for tests and the demo.
#
#   20 s of lavfi testsrc2 video with a 440 Hz lavfi sine tone, H.264 + AAC,
#   fragmented MP4 segments (each rendition has an EXT-X-MAP init segment),
#   a keyframe every 2 s and 2 s segments (10 per rendition), VOD playlists,
#   two renditions under one master playlist:
#     360p.m3u8  640x360, H.264 ~500 kbit/s max, AAC 64 kbit/s mono
#     180p.m3u8  320x180, H.264 ~200 kbit/s max, AAC 64 kbit/s mono
#   All URIs in the playlists are relative file names in the same directory.
#
# Generated with ffmpeg 5.1.9-0+deb12u1 (Debian bookworm's `ffmpeg` package,
# libx264 and ffmpeg's native AAC encoder). Single-threaded, bitexact flags:
# the same ffmpeg build gives the same bytes. The exact command, run from the
# repository root (this script cd's there):
#
#   ffmpeg -hide_banner -loglevel error -nostdin -y \
#     -f lavfi -i testsrc2=size=640x360:rate=25:duration=20 \
#     -f lavfi -i sine=frequency=440:sample_rate=48000:duration=20 \
#     -filter_complex '[0:v]split=2[v360][vsrc];[vsrc]scale=320:180[v180]' \
#     -map '[v360]' -map '[v180]' -map 1:a -map 1:a \
#     -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p \
#     -crf 30 -maxrate:v:0 500k -bufsize:v:0 1000k -maxrate:v:1 200k -bufsize:v:1 400k \
#     -g 50 -keyint_min 50 -sc_threshold 0 -force_key_frames 'expr:gte(t,n_forced*2)' \
#     -c:a aac -b:a 64k -ac 1 \
#     -threads 1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
#     -f hls -hls_time 2 -hls_playlist_type vod -hls_segment_type fmp4 \
#     -hls_flags independent_segments \
#     -hls_fmp4_init_filename 'init_%v.mp4' \
#     -hls_segment_filename 'media/test-stream/%v_%02d.m4s' \
#     -master_pl_name master.m3u8 \
#     -var_stream_map 'v:0,a:0,name:360p v:1,a:1,name:180p' \
#     'media/test-stream/%v.m3u8'
set -euo pipefail

cd "$(dirname "$0")/.."
out=media/test-stream

command -v ffmpeg >/dev/null || { echo "ffmpeg not found (apt-get install -y ffmpeg)" >&2; exit 1; }
echo "using $(ffmpeg -hide_banner -version | head -n1)" >&2

# Start from an empty directory so no stale segment survives a re-run.
rm -rf "$out"
mkdir -p "$out"

ffmpeg -hide_banner -loglevel error -nostdin -y \
  -f lavfi -i testsrc2=size=640x360:rate=25:duration=20 \
  -f lavfi -i sine=frequency=440:sample_rate=48000:duration=20 \
  -filter_complex '[0:v]split=2[v360][vsrc];[vsrc]scale=320:180[v180]' \
  -map '[v360]' -map '[v180]' -map 1:a -map 1:a \
  -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p \
  -crf 30 -maxrate:v:0 500k -bufsize:v:0 1000k -maxrate:v:1 200k -bufsize:v:1 400k \
  -g 50 -keyint_min 50 -sc_threshold 0 -force_key_frames 'expr:gte(t,n_forced*2)' \
  -c:a aac -b:a 64k -ac 1 \
  -threads 1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
  -f hls -hls_time 2 -hls_playlist_type vod -hls_segment_type fmp4 \
  -hls_flags independent_segments \
  -hls_fmp4_init_filename 'init_%v.mp4' \
  -hls_segment_filename "$out/%v_%02d.m4s" \
  -master_pl_name master.m3u8 \
  -var_stream_map 'v:0,a:0,name:360p v:1,a:1,name:180p' \
  "$out/%v.m3u8"

du -sb "$out" >&2
