#!/usr/bin/env bash
# The image's two rootfs forms (issue 12, item 3), same spec, same run, release binaries:
#   tree     the bundle layer holds the rootfs as a tree, used in place (`--image-rootfs tree`)
#   tarball  the bundle layer holds rootfs.tar.zst, unpacked at start (`--image-rootfs tarball`)
# For each form:
#   1. pull size: the compressed layers in the OCI layout (what a registry sends), bundle layer
#      and total;
#   2. engine unpack: GNU tar extracting every layer (gunzip + untar, as root: what
#      containerd's or Docker's overlay snapshotter does once per node at pull time; into the
#      page cache, no sync, like the runtime's own unpack), median of STARTS. Not `umoci unpack`, which also hashes every file into an mtree manifest and
#      takes several times longer on a tree;
#   3. start: from `runc run` of a fresh container (a new umoci unpack, so nothing of an
#      earlier start is left, as on a fresh pod) to `GET /health` answering 200, median of
#      STARTS, the two forms interleaved. Docker's default capabilities only, the host's
#      network namespace so the port is reachable.
#   4. runc's share of that start: from `runc run` to the runtime's first log line (the rest
#      of the start is the runtime's), median of STARTS.
#   5. tree form only: a node's later pods of the image. The layers extracted once, as the
#      engine keeps them; each container an overlay of them with a fresh upper layer (what
#      containerd's and Docker's overlay snapshotters do), the uid lock directory shared from
#      the host as the README requires. The node's first pod probes and leaves the record of
#      its probes there; each later pod (STARTS of them) finds it and is ready before probing.
# Needs root, umoci and runc for 2 to 5 (skipped otherwise).
#
#   benches/image_rootfs.sh [SPEC]        (default: images/python3.yaml)
#   STARTS=5 benches/image_rootfs.sh images/dify.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${1:-images/python3.yaml}
STARTS=${STARTS:-5}
. benches/lib/runc.sh   # release build, $PREBAKE, $work, cleanup on exit
FORMS=(tree tarball)

# --- 1: pull size -------------------------------------------------------------------------
for f in "${FORMS[@]}"; do
  "$PREBAKE" build "$SPEC" --out "$work/$f" --image-rootfs "$f" --tag prebake-bench:1 \
    >"$work/$f.summary" 2>/dev/null
done
echo "spec $SPEC, gzip layers, $(date -u +%Y-%m-%d)"
python3 - "$work" "${FORMS[@]}" <<'PY'
import json, os, sys
work, forms = sys.argv[1], sys.argv[2:]
sizes = {}
for f in forms:
    r = os.path.join(work, f, "image")
    blob = lambda d: os.path.join(r, "blobs/sha256", d.split(":")[1])
    m = json.load(open(blob(json.load(open(os.path.join(r, "index.json")))["manifests"][0]["digest"])))
    layers = [l["size"] for l in m["layers"]]
    sizes[f] = (layers[-1], sum(layers))
    print("pull %-8s bundle layer %6.1f MiB, all layers %6.1f MiB" % (f, layers[-1] / 1048576, sum(layers) / 1048576))
t, a = sizes["tree"], sizes["tarball"]
print("pull tree / tarball: bundle layer %.2fx, all layers %.2fx" % (t[0] / a[0], t[1] / a[1]))
PY

# --- 2 and 3: engine unpack and start -------------------------------------------------------
if ! can_run_containers; then
  echo "unpack, start: SKIPPED (needs root, umoci and runc)"
  exit 0
fi
port=$(free_port)

layer_blobs() { # $1 = form: the paths of its image's layer blobs, lowest layer first
  python3 -c '
import json, sys
r = sys.argv[1] + "/blobs/sha256/"
m = json.load(open(r + json.load(open(sys.argv[1] + "/index.json"))["manifests"][0]["digest"][7:]))
print(" ".join(r + l["digest"][7:] for l in m["layers"]))' "$work/$1/image"
}

engine_unpack() { # $1 = form; prints the seconds GNU tar takes to extract every layer
  local t0 t1 dir=$work/x-$1 blobs
  blobs=$(layer_blobs "$1")
  rm -rf "$dir"; mkdir "$dir"
  t0=$(now)
  for b in $blobs; do tar -xzf "$b" -C "$dir" --numeric-owner; done
  t1=$(now)
  rm -rf "$dir"
  sync
  echo "$t1 - $t0" | bc
}

fresh_bundle() { # $1 = form, $2 = dir: a fresh runc bundle of the image
  rm -rf "$2"
  umoci unpack --image "$work/$1/image:1" "$2" >/dev/null
  runc_config "$2/config.json" "$port"
}

declare -A unpack start share
for i in $(seq "$STARTS"); do
  for f in "${FORMS[@]}"; do
    unpack[$f]+="$(engine_unpack "$f") "
    fresh_bundle "$f" "$work/rb-$f"
    sync
    id="prebake-bench-$f-$$-$i"
    ids+=("$id")
    start[$f]+="$(one_start "$work/rb-$f" "$id" "$port") "
    share[$f]+="$(runc_share "$id") "
  done
done
for f in "${FORMS[@]}"; do
  u=$(printf '%s\n' ${unpack[$f]} | median); s=$(printf '%s\n' ${start[$f]} | median)
  printf '%-8s engine unpack %.3fs, start (runc run -> /health 200) %.3fs, medians of %s  [start: %s]\n' \
    "$f" "$u" "$s" "$STARTS" "${start[$f]% }"
  eval "med_$f=$s"
  r=$(printf '%s\n' ${share[$f]} | median)
  printf '%-8s of the start, runc (runc run -> the runtime'"'"'s first log line) %.3fs, the runtime %.3fs, medians\n' \
    "$f" "$r" "$(echo "$s - $r" | bc -l)"
done
printf 'start tarball / tree: %.1fx\n' "$(echo "$med_tarball / $med_tree" | bc -l)"
grep -h 'rootfs ' "$work"/prebake-bench-tree-*-1.log | sed 's/^.*INFO/tree log:/' | head -1
grep -h 'rootfs ' "$work"/prebake-bench-tarball-*-1.log | sed 's/^.*INFO/tarball log:/' | head -1

# --- 5: later pods on the same node (tree form) ----------------------------------------------
layers=$work/node-layers
mkdir "$layers"
for b in $(layer_blobs tree); do tar -xzf "$b" -C "$layers" --numeric-owner; done
mkdir "$work/node-locks"
pod_bundle() { # $1 = dir: a runc bundle whose root is a fresh overlay of the node's layers
  mkdir -p "$1/upper" "$1/work" "$1/root"
  mount -t overlay overlay -o "lowerdir=$layers,upperdir=$1/upper,workdir=$1/work" "$1/root"
  python3 - "$work/rb-tree/config.json" "$1" "$work/node-locks" <<'PY'
import json, sys
src, bundle, locks = sys.argv[1:]
c = json.load(open(src))
c["root"] = {"path": bundle + "/root"}
c["mounts"].append({"destination": "/run/prebake-runtime", "type": "bind", "source": locks,
                    "options": ["rbind", "rw"]})
json.dump(c, open(bundle + "/config.json", "w"))
PY
}
later=""
later_share=""
for i in $(seq 0 "$STARTS"); do
  pod_bundle "$work/pod-$i"
  sync
  id="prebake-bench-pod-$$-$i"
  ids+=("$id")
  t=$(one_start "$work/pod-$i" "$id" "$port")
  umount "$work/pod-$i/root"
  if [ "$i" = 0 ]; then
    first=$t
    first_share=$(runc_share "$id")
    grep -q 'probes passed' "$work/$id.log" || { echo "the first pod kept no record:" >&2; cat "$work/$id.log" >&2; exit 1; }
  else
    grep -q 'ready now, probing in the background' "$work/$id.log" \
      || { echo "pod $i probed before it was ready:" >&2; cat "$work/$id.log" >&2; exit 1; }
    later+="$t "
    later_share+="$(runc_share "$id") "
  fi
done
l=$(printf '%s\n' $later | median); ls_=$(printf '%s\n' $later_share | median)
printf 'tree     a node'"'"'s first pod (probes, keeps the record) %.3fs (runc %.3fs, the runtime %.3fs)\n' \
  "$first" "$first_share" "$(echo "$first - $first_share" | bc -l)"
printf 'tree     a node'"'"'s later pods (ready on the record) %.3fs, median of %s (runc %.3fs, the runtime %.3fs)  [%s]\n' \
  "$l" "$STARTS" "$ls_" "$(echo "$l - $ls_" | bc -l)" "${later% }"
printf 'later / first pod: %.2fx\n' "$(echo "$l / $first" | bc -l)"
