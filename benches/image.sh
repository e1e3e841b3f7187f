#!/usr/bin/env bash
# Image figures (issue 5), with release binaries:
#   1. compressed size of each image layer;
#   2. build time of the whole image against the bundle alone (`--no-image`), same run,
#      median of RUNS builds each;
#   3. time from `runc run` to `GET /health` answering 200, median of STARTS starts: "cold"
#      (empty /var/sandbox, so the rootfs is unpacked first, as on a fresh pod) and "warm"
#      (the rootfs is already unpacked, as on a container restart with the emptyDir kept).
#      The container gets Docker's default capabilities only and shares the host's network
#      namespace so the port is reachable. Needs root, umoci and runc; skipped otherwise.
#
#   The image is built with `--image-rootfs tarball` (IMAGE_ROOTFS), so "cold" still means
#   unpacking rootfs.tar.zst; benches/image_rootfs.sh compares it with the default tree form.
#
#   benches/image.sh [SPEC]          (default: images/python3.yaml)
#   RUNS=3 STARTS=5 LAYER_COMPRESSION=gzip benches/image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${1:-images/python3.yaml}
RUNS=${RUNS:-3}
STARTS=${STARTS:-5}
COMP=${LAYER_COMPRESSION:-gzip}
IMAGE_ROOTFS=${IMAGE_ROOTFS:-tarball}
. benches/lib/runc.sh   # release build, $PREBAKE, $work, cleanup on exit

# --- 1 and 2: build times and layer sizes -------------------------------------------------
tb=(); ti=()
for i in $(seq "$RUNS"); do
  t0=$(now); "$PREBAKE" build "$SPEC" --out "$work/bundle-only" --force --no-image >/dev/null 2>&1; t1=$(now)
  rm -rf "$work/full"
  "$PREBAKE" build "$SPEC" --out "$work/full" --layer-compression "$COMP" --image-rootfs "$IMAGE_ROOTFS" --tag prebake-bench:1 \
    >"$work/summary" 2>/dev/null; t2=$(now)
  tb+=("$(echo "$t1 - $t0" | bc)"); ti+=("$(echo "$t2 - $t1" | bc)")
done
b=$(printf '%s\n' "${tb[@]}" | median); f=$(printf '%s\n' "${ti[@]}" | median)
echo "spec $SPEC, $COMP layers, runtime $(du -h target/release/runtime | cut -f1) (release)"
printf 'build: bundle alone %.2fs, bundle + image %.2fs (image step +%.2fs, %.0f%%), median of %s\n' \
  "$b" "$f" "$(echo "$f - $b" | bc)" "$(echo "($f - $b) * 100 / $b" | bc -l)" "$RUNS"
grep -E '^(layer|digest) ' "$work/summary"
python3 - "$work/full/image" <<'PY'
import json, os, sys
r = sys.argv[1]
blob = lambda d: os.path.join(r, "blobs/sha256", d.split(":")[1])
m = json.load(open(blob(json.load(open(os.path.join(r, "index.json")))["manifests"][0]["digest"])))
total = sum(l["size"] for l in m["layers"])
print("image: %d layers, %.1f MiB compressed in total" % (len(m["layers"]), total / 1048576))
PY

# --- 3: runc run -> /health 200 ------------------------------------------------------------
if ! can_run_containers; then
  echo "start: SKIPPED (needs root, umoci and runc)"
  exit 0
fi
if [ "$COMP" != gzip ]; then
  echo "start: SKIPPED (Debian's umoci cannot unpack $COMP layers; use gzip)"
  exit 0
fi
umoci unpack --image "$work/full/image:1" "$work/rb" >/dev/null
port=$(free_port)
runc_config "$work/rb/config.json" "$port"

cold=(); warm=()
for i in $(seq "$STARTS"); do
  rm -rf "$work/rb/rootfs/var/sandbox/"*
  ids+=("prebake-bench-cold-$$-$i")
  cold+=("$(one_start "$work/rb" "prebake-bench-cold-$$-$i" "$port")")
done
for i in $(seq "$STARTS"); do
  ids+=("prebake-bench-warm-$$-$i")
  warm+=("$(one_start "$work/rb" "prebake-bench-warm-$$-$i" "$port")")
done
printf 'start (runc run -> /health 200), median of %s: cold %.3fs, warm %.3fs  [cold: %s] [warm: %s]\n' \
  "$STARTS" "$(printf '%s\n' "${cold[@]}" | median)" "$(printf '%s\n' "${warm[@]}" | median)" \
  "$(echo "${cold[@]}")" "$(echo "${warm[@]}")"
grep -h 'capabilities:' "$work"/prebake-bench-cold-*-1.log | sed 's/^.*capabilities:/probe in container:/' | head -1
