#!/usr/bin/env bash
# Build-time benchmark (issue 2): `prebake build` against `tar --sort=name | zstd` of the same
# files, in the same run, plus the rootfs size against what dify-sandbox's default
# python_lib_path list would copy on this machine.
#
#   benches/build_vs_tar.sh [SPEC ...]      (default: images/python3.yaml)
#
# Prints one line per spec: median seconds of N runs for each side and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
cargo build --release --quiet
PREBAKE=$PWD/target/release/prebake
. benches/lib/common.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(images/python3.yaml)

for spec in "${specs[@]}"; do
  # One build to learn the file set (the plan's paths that exist on the host).
  "$PREBAKE" build "$spec" --out "$work/probe" --force --no-image >/dev/null
  cp "$work/probe/bundle/bundle.json" "$work/manifest-$(basename "$spec" .yaml).json"
  python3 - "$work/probe/bundle/bundle.json" >"$work/files" <<'PY'
import json, os, sys
m = json.load(open(sys.argv[1]))
for p in m["provenance"]:
    if os.path.lexists(p):
        print(p.lstrip("/"))
PY
  pb=(); pc=(); tz=()
  for _ in $(seq "$RUNS"); do
    # warm: .pyc from the cache (a rebuild); cold: --no-cache compiles every .pyc.
    t0=$(now); "$PREBAKE" build "$spec" --out "$work/o" --force --no-image >/dev/null; t1=$(now)
    tar --sort=name --no-recursion -C / -T "$work/files" -cf - | zstd -3 -q -T1 >"$work/base.tar.zst"; t2=$(now)
    "$PREBAKE" build "$spec" --out "$work/c" --force --no-image --no-cache >/dev/null; t3=$(now)
    pb+=("$(echo "$t1 - $t0" | bc)"); tz+=("$(echo "$t2 - $t1" | bc)"); pc+=("$(echo "$t3 - $t2" | bc)")
  done
  p=$(printf '%s\n' "${pb[@]}" | median); z=$(printf '%s\n' "${tz[@]}" | median)
  c=$(printf '%s\n' "${pc[@]}" | median)
  printf '%-22s prebake %5.2fs (cold, compiling .pyc: %5.2fs)  tar|zstd %5.2fs  ratio %.2fx (cold %.2fx)  (%s paths, rootfs %s bytes zstd, baseline %s bytes)\n' \
    "$spec" "$p" "$c" "$z" "$(echo "$p / $z" | bc -l)" "$(echo "$c / $z" | bc -l)" "$(wc -l <"$work/files")" \
    "$(stat -c %s "$work/o/bundle/rootfs.tar.zst")" "$(stat -c %s "$work/base.tar.zst")"
done

# dify-sandbox's default python_lib_path, with this machine's Python in place of 3.10.
stdlib=$(python3 -I -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
python3 - "$stdlib" "$work"/manifest-*.json <<'PY'
import json, os, sys
stdlib = sys.argv[1]
dify = [stdlib, "/usr/lib/python3", "/usr/lib/x86_64-linux-gnu", "/etc/ssl/certs/ca-certificates.crt",
        "/etc/nsswitch.conf", "/etc/hosts", "/etc/resolv.conf", "/run/systemd/resolve/stub-resolv.conf",
        "/run/resolvconf/resolv.conf", "/etc/localtime", "/usr/share/zoneinfo", "/etc/timezone"]
files = size = 0
for p in dify:
    if os.path.isdir(p) and not os.path.islink(p):
        for d, _, fs in os.walk(p):
            for f in fs:
                fp = os.path.join(d, f)
                if os.path.isfile(fp) and not os.path.islink(fp):
                    files += 1; size += os.path.getsize(fp)
    elif os.path.isfile(p):
        files += 1; size += os.path.getsize(os.path.realpath(p))
for path in sys.argv[2:]:
    r = json.load(open(path))["rootfs"]
    name = os.path.basename(path)[len("manifest-"):-len(".json")]
    print(f"rootfs {name:21} prebake {r['files']} files, {r['size_uncompressed']/2**20:.1f} MiB tar"
          f"  vs  dify-sandbox python_lib_path {files} files, {size/2**20:.1f} MiB  ({size/max(1,r['size_uncompressed']):.1f}x more)")
PY
