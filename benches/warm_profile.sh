#!/usr/bin/env bash
# Where the CPU of one warm-pool run goes (issue 12): `perf record -a` of the whole machine while
# a client sends `print(1)` runs through the API, one at a time, to a server with the warm pool
# on; then every sample is charged to a part of the run's life:
#   run     a run's process (forked from the zygote): its page faults (copy-on-write of the
#           zygote's pages), its exit (tearing down the copied address space), seccomp(2)
#           (the kernel converting and JIT-compiling the filter), the kernel's side of copying
#           pages ahead while it waits as a spare (MADV_POPULATE_WRITE, by madvise or
#           process_madvise), the rest of its kernel time, and its user time (the copy-ahead
#           loop, the confinement steps in Python, the script, the end);
#   zygote  the clone of the next run's process (copying the page tables) and the zygote's own
#           page faults and user time;
#   server  the runtime (HTTP, preparing the run, the poll loop, the reap);
#   client  the benchmark's own client.
# It prints CPU milliseconds per run for each part, their sum, and the runs/s that sum allows
# on this machine's cores: the ceiling for sustained throughput, whatever the concurrency.
# Needs root and perf (Debian: linux-perf).
#
#   sudo benches/warm_profile.sh [SPEC]          (default: images/dify.yaml)
#   RUNS=400 FREQ=4000 NETWORK=true PREBAKE=... RUNTIME=... benches/warm_profile.sh
# (KEEP=1 keeps the scratch directory with perf.data, samples.txt and the server's log.)
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${1:-images/dify.yaml}
RUNS=${RUNS:-400}
FREQ=${FREQ:-4000}
NETWORK=${NETWORK:-true}

if [ "$(id -u)" != 0 ] || ! command -v perf >/dev/null; then
  echo "warm profile: SKIPPED (needs root and perf)"
  exit 0
fi
. benches/lib/common.sh
release_binaries
work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

"$PREBAKE" build "$SPEC" --no-image --out "$work/out" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; exit 1; }
port=$(free_port)
# One zygote for the whole profile: a replaced one would have another pid.
serve_warm "$RUNTIME" "$work/out/bundle" "$work" "$port" "$((RUNS + 1000))"
zygote=$(sed -n 's/.*warm pool: zygote ready.* pid=\([0-9]*\).*/\1/p' "$work/server.log" | tail -1)
[ -n "$zygote" ] || { echo "the warm pool never became ready:" >&2; cat "$work/server.log" >&2; exit 1; }

# The client names itself, so that its samples are told apart from the runs' (both may be
# called python3); it warms up first, then runs RUNS requests one after the other.
cat >"$work/client.py" <<'PY'
import ctypes, http.client, json, sys, time
ctypes.CDLL(None).prctl(15, b"bench-client", 0, 0, 0)  # PR_SET_NAME
port, runs, network = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "true"
body = json.dumps({"language": "python3", "code": "print(1)", "preload": "", "enable_network": network})
conn = http.client.HTTPConnection("127.0.0.1", port)
def one():
    t = time.perf_counter()
    conn.request("POST", "/v1/sandbox/run", body, {"X-Api-Key": "bench", "Content-Type": "application/json"})
    r = json.loads(conn.getresponse().read())
    if r["code"] != 0 or r["data"]["stdout"] != "1\n":
        sys.exit("a run failed: %r" % r)
    return time.perf_counter() - t
if runs == 0:
    for _ in range(50):
        one()
    sys.exit(0)
start = time.perf_counter()
times = sorted(one() for _ in range(runs))
wall = time.perf_counter() - start
print("latency p50 %.2f ms, p99 %.2f ms, %.0f runs/s one at a time"
      % (times[runs // 2] * 1e3, times[min(runs - 1, runs * 99 // 100)] * 1e3, runs / wall))
PY
python3 "$work/client.py" "$port" 0 "$NETWORK"
echo "spec $SPEC, $RUNS runs of print(1), enable_network: $NETWORK, perf at $FREQ Hz, $(nproc) cores, $(date -u +%Y-%m-%d)"
# cpu-clock, so that every sample's period is CPU time in nanoseconds on any machine.
perf record -q -e cpu-clock -a -g -F "$FREQ" -o "$work/perf.data" -- \
  python3 "$work/client.py" "$port" "$RUNS" "$NETWORK" 2>"$work/perf.log" \
  || { cat "$work/perf.log" >&2; exit 1; }
perf script -i "$work/perf.data" -F comm,pid,period,ip,sym,dso 2>/dev/null >"$work/samples.txt"

python3 - "$work/samples.txt" "$server" "$zygote" "$RUNS" "$(nproc)" <<'PY'
import collections, sys
path, server, zygote, runs, cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
zygote_comm = None
samples = []
block = []
for line in open(path, errors="replace"):
    if line.strip():
        block.append(line)
        continue
    if block:
        samples.append(block)
        block = []
if block:
    samples.append(block)

def parse(block):
    head = block[0].split()
    comm, pid, period = " ".join(head[:-2]), int(head[-2]), int(head[-1])
    frames = []
    for l in block[1:]:
        parts = l.split(None, 1)
        if len(parts) == 2:
            rest = parts[1].rsplit(" (", 1)
            frames.append((rest[0].split("+0x")[0], rest[1] if len(rest) == 2 else ""))
    return comm, pid, period, frames

parsed = [parse(b) for b in samples]
for comm, pid, _, _ in parsed:
    if pid == zygote:
        zygote_comm = comm
        break

def part(comm, pid, frames):
    syms = {s for s, _ in frames}
    kernel = bool(frames) and "kernel" in frames[0][1]
    if comm.startswith("swapper"):
        return None
    if comm == "bench-client":
        return "client"
    if pid == server:
        return "server: kernel" if kernel else "server: user"
    if pid == zygote:
        if syms & {"kernel_clone", "__do_sys_clone", "copy_process"}:
            return "zygote: clone of the next run (page tables)"
        if syms & {"exc_page_fault", "asm_exc_page_fault"}:
            return "zygote: page faults"
        return "zygote: other kernel" if kernel else "zygote: user"
    if comm == zygote_comm:
        if syms & {"do_exit", "__x64_sys_exit_group", "do_group_exit"}:
            return "run: exit (address-space teardown)"
        if syms & {"exc_page_fault", "asm_exc_page_fault"}:
            return "run: page faults (copy-on-write)"
        if syms & {"do_seccomp", "__x64_sys_seccomp", "__do_sys_seccomp"}:
            return "run: seccomp filter install"
        if syms & {"madvise_populate", "do_madvise", "__x64_sys_madvise", "vector_madvise",
                   "__x64_sys_process_madvise", "__do_sys_process_madvise", "madvise_do_behavior"}:
            return "run: copy-ahead, before its run (kernel)"
        return "run: other kernel" if kernel else "run: user (confinement, script, end)"
    return "other processes"

cpu = collections.Counter()  # nanoseconds
for comm, pid, period, frames in parsed:
    p = part(comm, pid, frames)
    if p is not None:
        cpu[p] += period
if zygote_comm is None:
    sys.exit("no sample of the zygote (pid %d): nothing to tell runs by" % zygote)
order = sorted(cpu, key=lambda k: (k.split(":")[0] != "run", k.split(":")[0] != "zygote", k.split(":")[0] != "server", -cpu[k]))
sandbox_total = 0.0
for k in order:
    ms = cpu[k] / 1e6 / runs
    if not k.startswith(("client", "other")):
        sandbox_total += ms
    print("cpu per run %-46s %6.3f ms" % (k, ms))
print("cpu per run, run + zygote + server                   %6.3f ms" % sandbox_total)
print("throughput ceiling on %d cores: %.0f runs/s" % (cores, cores * 1000.0 / sandbox_total))
PY
