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
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(images/python3.yaml)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

for spec in "${specs[@]}"; do
  # One build to learn the file set (the plan's paths that exist on the host).
  "$PREBAKE" build "$spec" --out "$work/probe" --force --no-image >/dev/null
  python3 - "$work/probe/bundle/bundle.json" >"$work/files" <<'PY'
import json, os, sys
m = json.load(open(sys.argv[1]))
for p in m["provenance"]:
    if os.path.lexists(p):
        print(p.lstrip("/"))
PY
  pb=(); tz=()
  for _ in $(seq "$RUNS"); do
    t0=$(now); "$PREBAKE" build "$spec" --out "$work/o" --force --no-image >/dev/null; t1=$(now)
    tar --sort=name --no-recursion -C / -T "$work/files" -cf - | zstd -3 -q -T1 >"$work/base.tar.zst"; t2=$(now)
    pb+=("$(echo "$t1 - $t0" | bc)"); tz+=("$(echo "$t2 - $t1" | bc)")
  done
  p=$(printf '%s\n' "${pb[@]}" | median); z=$(printf '%s\n' "${tz[@]}" | median)
  printf '%-28s prebake %6.2fs  tar|zstd %6.2fs  ratio %.2fx  (%s files, rootfs %s bytes zstd, baseline %s bytes)\n' \
    "$spec" "$p" "$z" "$(echo "$p / $z" | bc -l)" "$(wc -l <"$work/files")" \
    "$(stat -c %s "$work/o/bundle/rootfs.tar.zst")" "$(stat -c %s "$work/base.tar.zst")"
done

# dify-sandbox's default python_lib_path, with this machine's Python in place of 3.10.
stdlib=$(python3 -I -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
python3 - "$work/probe/bundle/bundle.json" "$stdlib" <<'PY'
import json, os, sys
m = json.load(open(sys.argv[1])); stdlib = sys.argv[2]
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
r = m["rootfs"]
print(f"rootfs (last spec)           prebake {r['files']} files, {r['size_uncompressed']/2**20:.1f} MiB tar"
      f"  vs  dify-sandbox python_lib_path {files} files, {size/2**20:.1f} MiB  ({size/max(1,r['size_uncompressed']):.1f}x more)")
PY
