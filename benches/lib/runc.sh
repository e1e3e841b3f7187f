# Shared by benches/image.sh and benches/image_rootfs.sh (source it from the repository root;
# bash). Sourcing it builds the release binaries, sets $PREBAKE, a scratch directory $work and
# the array ids (containers to delete), removed on exit, and SOURCE_DATE_EPOCH (default 0).

. benches/lib/common.sh

cleanup() {
  for id in "${ids[@]}"; do runc delete --force "$id" >/dev/null 2>&1 || true; done
  # Overlays a bench mounted under $work (its pods' roots), so rm removes no layer through one.
  { findmnt -rn -o TARGET | grep "^$work/" || true; } | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$work"
}

# Whether this machine can run the start measurements.
can_run_containers() {
  [ "$(id -u)" = 0 ] && command -v umoci >/dev/null && command -v runc >/dev/null
}

# health_200 PORT: whether GET /health on 127.0.0.1:PORT answers 200 now. In the shell (bash's
# /dev/tcp), so polling starts no process: a curl per poll cost 4-8 ms of every measured start
# (its own start, and the sleep between polls), more than the runtime's part of a re-start.
health_200() {
  local status=
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 2>/dev/null
  read -r -t 5 status <&3 || true
  exec 3<&-
  [[ $status == "HTTP/1.1 200"* ]]
}

# pause_1ms: a millisecond's pause without starting a process (`read -t` on a FIFO nobody
# writes, opened read-write so the open does not block).
pause_1ms() {
  [ -p "$work/never" ] || mkfifo "$work/never"
  read -r -t 0.001 <>"$work/never" || true
}

# runc_config CONFIG_JSON PORT: the runc bundle's config as Docker would run the image's
# Entrypoint, with its default capabilities only, no terminal, API_KEY and SANDBOX_PORT set,
# and the host's network namespace (so the port is reachable on 127.0.0.1).
runc_config() {
  python3 - "$1" "$2" <<'PY'
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
}

# one_start BUNDLE ID PORT: prints the seconds from `runc run` to GET /health answering 200,
# then stops and deletes the container. A container that stops first fails the run, with its
# log ($work/ID.log; the start's time is in $work/ID.t0, for runc_share).
one_start() {
  local bundle=$1 id=$2 port=$3 t0 t1 polls=0
  # The shell's own clock: no process start inside the measured interval.
  t0=$EPOCHREALTIME
  runc run --detach --bundle "$bundle" "$id" </dev/null >"$work/$id.log" 2>&1
  until health_200 "$port"; do
    # Whether it died, every 100th poll: `runc state` is a process start of its own.
    if (( ++polls % 100 == 0 )) && ! runc state "$id" 2>/dev/null | grep -q '"running"'; then
      echo "container $id died:" >&2; cat "$work/$id.log" >&2; exit 1
    fi
    pause_1ms
  done
  t1=$EPOCHREALTIME
  echo "$t0" >"$work/$id.t0"
  runc kill "$id" TERM >/dev/null 2>&1 || true
  for _ in $(seq 200); do [ "$(runc state "$id" 2>/dev/null | grep -c '"stopped"')" = 1 ] && break; sleep 0.05; done
  runc delete --force "$id" >/dev/null 2>&1 || true
  echo "$t1 - $t0" | bc
}

# runc_share ID: the seconds from `runc run` to the runtime's first log line in that start,
# which is runc's part of it (creating the container, up to the exec of its process).
runc_share() {
  python3 - "$(cat "$work/$1.t0")" "$work/$1.log" <<'PY'
import datetime, re, sys
t0, log = float(sys.argv[1]), sys.argv[2]
for line in open(log, errors="replace"):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    if m:
        at = datetime.datetime.fromisoformat(m.group(1)[:26]).replace(tzinfo=datetime.timezone.utc)
        print("%.4f" % (at.timestamp() - t0))
        break
else:
    sys.exit("no timestamped line in " + log)
PY
}

cargo build --release --quiet --bins
PREBAKE=$PWD/target/release/prebake
work=$(mktemp -d)
ids=()
trap cleanup EXIT
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
