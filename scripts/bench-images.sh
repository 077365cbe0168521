#!/usr/bin/env bash
# Image store figures: container start from a cached image vs a plain --rootfs directory (interleaved,
# N runs each, per runtime), and pull throughput from a loopback registry vs `skopeo copy` to a dir.
# Usage: scripts/bench-images.sh REGISTRY_REF [N]   (e.g. 127.0.0.1:5000/test/debian:1; the image
# must hold python3; push one with skopeo as test/Corral.IntegrationTests/Images does)
set -euo pipefail
ref=$1; n=${2:-10}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/corral" --version >/dev/null
cli="$here/.build/cli/Corral.Cli"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
rootfs=$("$cli" prepare)
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1 || echo "failed: $*" >&2; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
stats() { sort -n | awk '{a[NR]=$1; s+=$1} END {m = NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "median %d ms, min %d, max %d, mean %.0f (n=%d)\n", m, a[1], a[NR], s/NR, NR}'; }
"$cli" --data-dir "$work/data" pull "$ref" >/dev/null
for rt in runc gvisor; do
  : > "$work/img"; : > "$work/dir"
  for _ in $(seq "$n"); do
    ms "$cli" --data-dir "$work/data" run --runtime "$rt" --image "$ref" -- python3 -c pass >> "$work/img"
    ms "$cli" --data-dir "$work/data" run --runtime "$rt" --rootfs "$rootfs" -- python3 -c pass >> "$work/dir"
  done
  echo "start $rt --image:  $(stats < "$work/img")"
  echo "start $rt --rootfs: $(stats < "$work/dir")"
done
size=$("$cli" --data-dir "$work/data" images --json | python3 -c 'import json,sys; print(list(json.load(sys.stdin)["refs"].values())[0]["size"])')
for _ in $(seq 5); do
  rm -rf "$work/p" "$work/s"
  full=$(ms "$cli" --data-dir "$work/p" pull "$ref")
  rm -rf "$work/p/images/blobs" "$work/p/images/refs.json"
  dl=$(ms "$cli" --data-dir "$work/p" pull "$ref")
  sk=$(ms skopeo copy --quiet --src-tls-verify=false "docker://$ref" "dir:$work/s")
  python3 -c "m=$size/1048576; print(f'pull+unpack {$full} ms; pull, layer already unpacked {$dl} ms = {m/($dl/1000):.0f} MiB/s; skopeo copy to dir {$sk} ms = {m/($sk/1000):.0f} MiB/s ({m:.1f} MiB)')"
done
