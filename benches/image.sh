#!/usr/bin/env bash
# Image figures (issue 5), with release binaries:
#   1. compressed size of each image layer;
#   2. build time of the whole image against the bundle alone (`--no-image`), same run,
#      median of RUNS builds each;
#   3. time from `runc run` to `GET /health` answering 200, median of STARTS starts: "cold"
#      (empty /var/sandbox, so the rootfs is unpacked first, as on a fresh pod) and "warm"
#      (the rootfs is already unpacked, as on a container restart with the emptyDir kept).
#      The container gets Docker's default capabilities only and shares the host's network
#      namespace so the port is reachable. Needs root, umoci, runc and curl; skipped otherwise.
#
#   benches/image.sh [SPEC]          (default: images/python3.yaml)
#   RUNS=3 STARTS=5 LAYER_COMPRESSION=gzip benches/image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${1:-images/python3.yaml}
RUNS=${RUNS:-3}
STARTS=${STARTS:-5}
COMP=${LAYER_COMPRESSION:-gzip}
cargo build --release --quiet --bins
PREBAKE=$PWD/target/release/prebake
work=$(mktemp -d)
ids=()
cleanup() {
  for id in "${ids[@]}"; do runc delete --force "$id" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}

# --- 1 and 2: build times and layer sizes -------------------------------------------------
tb=(); ti=()
for i in $(seq "$RUNS"); do
  t0=$(now); "$PREBAKE" build "$SPEC" --out "$work/bundle-only" --force --no-image >/dev/null 2>&1; t1=$(now)
  rm -rf "$work/full"
  "$PREBAKE" build "$SPEC" --out "$work/full" --layer-compression "$COMP" --tag prebake-bench:1 \
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
if [ "$(id -u)" != 0 ] || ! command -v umoci >/dev/null || ! command -v runc >/dev/null \
  || ! command -v curl >/dev/null; then
  echo "start: SKIPPED (needs root, umoci, runc and curl)"
  exit 0
fi
if [ "$COMP" != gzip ]; then
  echo "start: SKIPPED (Debian's umoci cannot unpack $COMP layers; use gzip)"
  exit 0
fi
umoci unpack --image "$work/full/image:1" "$work/rb" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$work/rb/config.json" "$port" <<'PY'
import json, sys
path, port = sys.argv[1], sys.argv[2]
c = json.load(open(path))
caps = ["CAP_" + x for x in ("CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP "
        "NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP").split()]
p = c["process"]
p["terminal"] = False
p["noNewPrivileges"] = False
p["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
p["env"] += ["API_KEY=bench", "SANDBOX_PORT=" + port]
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
json.dump(c, open(path, "w"))
PY

one_start() { # $1 = id; prints seconds from `runc run` to /health 200
  local id=$1 t0 t1
  t0=$(now)
  runc run --detach --bundle "$work/rb" "$id" </dev/null >"$work/$id.log" 2>&1
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ]; do
    if ! runc state "$id" >/dev/null 2>&1; then
      echo "container $id died:" >&2; cat "$work/$id.log" >&2; exit 1
    fi
    sleep 0.005
  done
  t1=$(now)
  runc kill "$id" TERM >/dev/null 2>&1 || true
  for _ in $(seq 200); do [ "$(runc state "$id" 2>/dev/null | grep -c '"stopped"')" = 1 ] && break; sleep 0.05; done
  runc delete --force "$id" >/dev/null 2>&1 || true
  echo "$t1 - $t0" | bc
}
cold=(); warm=()
for i in $(seq "$STARTS"); do
  rm -rf "$work/rb/rootfs/var/sandbox/"*
  ids+=("prebake-bench-cold-$$-$i")
  cold+=("$(one_start "prebake-bench-cold-$$-$i")")
done
for i in $(seq "$STARTS"); do
  ids+=("prebake-bench-warm-$$-$i")
  warm+=("$(one_start "prebake-bench-warm-$$-$i")")
done
printf 'start (runc run -> /health 200), median of %s: cold %.3fs, warm %.3fs  [cold: %s] [warm: %s]\n' \
  "$STARTS" "$(printf '%s\n' "${cold[@]}" | median)" "$(printf '%s\n' "${warm[@]}" | median)" \
  "$(echo "${cold[@]}")" "$(echo "${warm[@]}")"
grep -h 'capabilities:' "$work"/prebake-bench-cold-*-1.log | sed 's/^.*capabilities:/probe in container:/' | head -1
