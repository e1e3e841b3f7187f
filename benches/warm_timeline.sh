#!/usr/bin/env bash
# Where the wall-clock time of one warm `print(1)` goes (issue 12), step by step: the client's,
# the server's and the run's own CLOCK_MONOTONIC marks, which all three share.
#
# The marks are not in the product: `benches/warm_timeline.patch` adds them (to server.rs,
# sandbox/run.rs and zygote.py), and this script applies it to a scratch worktree of HEAD,
# builds that (its own target directory, `target/timeline`, kept for the next time: the first
# build takes minutes) and measures it. A run then prints its marks on its stderr and the
# server its own on its log; requests go one at a time, GAP_MS apart, so each server line
# belongs to the request before it. If the patch no longer applies, refresh it: the marks sit
# at the places named in the table below.
# Needs root.
#
#   sudo benches/warm_timeline.sh [SPEC]          (default: images/dify.yaml)
#   RUNS=300 GAP_MS=5 NETWORK=true benches/warm_timeline.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${1:-images/dify.yaml}
RUNS=${RUNS:-300}
GAP_MS=${GAP_MS:-5}
NETWORK=${NETWORK:-true}

if [ "$(id -u)" != 0 ]; then
  echo "warm timeline: SKIPPED (needs root)"
  exit 0
fi
. benches/lib/common.sh
repo=$PWD
work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  git -C "$repo" worktree remove --force "$work/src" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

git worktree add --quiet --detach "$work/src" HEAD
git -C "$work/src" apply "$repo/benches/warm_timeline.patch" \
  || { echo "benches/warm_timeline.patch does not apply to HEAD: refresh it (see the top of this script)" >&2; exit 1; }
echo "building the marked runtime (target/timeline)..." >&2
(cd "$work/src" && CARGO_TARGET_DIR="$repo/target/timeline" cargo build --release --quiet --bins)
bin="$repo/target/timeline/release"

"$bin/prebake" build "$SPEC" --no-image --out "$work/out" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; exit 1; }
port=$(free_port)
# One zygote for the whole measurement: a replacement would start its runs cold meanwhile.
serve_warm "$bin/runtime" "$work/out/bundle" "$work" "$port" "$((RUNS + 1000))"

echo "spec $SPEC, $RUNS runs of print(1) $GAP_MS ms apart, enable_network: $NETWORK, $(nproc) cores, $(date -u +%Y-%m-%d)"
python3 - "$port" "$RUNS" "$GAP_MS" "$NETWORK" "$work/server.log" <<'PY'
import http.client, json, sys, time

port, runs, gap_ms, network, log = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "true", sys.argv[5]
WARMUP = 30
body = json.dumps({"language": "python3", "code": "print(1)", "preload": "", "enable_network": network})
conn = http.client.HTTPConnection("127.0.0.1", port)

def server_lines():
    return [l.split()[1:] for l in open(log) if l.startswith("@@STL")]

before = len(server_lines())
client = []
for i in range(runs + WARMUP):
    sent = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    conn.request("POST", "/v1/sandbox/run", body, {"X-Api-Key": "bench", "Content-Type": "application/json"})
    r = json.loads(conn.getresponse().read())
    got = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    if r["code"] != 0 or r["data"]["stdout"] != "1\n":
        sys.exit("a run failed: %r" % r)
    marks = [l for l in r["data"]["stderr"].splitlines() if l.startswith("@@TL ")]
    client.append((sent, got, marks))
    time.sleep(gap_ms / 1000)
time.sleep(0.2)
served = server_lines()[before:]
if len(served) != len(client):
    sys.exit("%d server lines for %d requests" % (len(served), len(client)))

STEPS = [
    ("sent", "the request reaches the handler (client, TCP, HTTP, JSON body, key)"),
    ("handler", "the handler's task reaches a blocking thread"),
    ("blocking", "the run is prepared (resolver files, uid, pipes, code memfd, plan)"),
    ("prepared", "the spare has its plan (hand-over, its wake-up)"),
    ("plan", "plan read; network namespace, resolver mounts, descriptors"),
    ("fds", "session, /tmp, working directory, hostname, rlimits, ids"),
    ("ids", "parent-death signal, no_new_privs, the two seccomp programs"),
    ("seccomp", "the gate, the environment"),
    ("script", "the script (read, compiled, run)"),
    ("script over", "the interpreter's end (threads, atexit, flush, collect)"),
    ("end", "the end record; the server sees both streams close and reads it"),
    ("outcome", "the outcome reaches the async handler"),
    ("answered", "the response (JSON, HTTP) reaches the client, which parses it"),
]
rows, faults = [], []
for (sent, got, marks), line in list(zip(client, served))[WARMUP:]:
    s = dict(kv.split("=") for kv in line)
    if not marks or any(k not in s for k in ("handler", "blocking", "prepared", "outcome", "answered")):
        continue  # a run that went cold
    words = marks[0].split()[1:]
    run = [int(w) for w in words if "=" not in w]
    if len(run) != 7:
        continue  # no spare was ready: the zygote cloned this run on its path
    faults += [int(w.split("=")[1]) for w in words if w.startswith("faults=")]
    rows.append([sent, int(s["handler"]), int(s["blocking"]), int(s["prepared"])] + run
                + [int(s["outcome"]), int(s["answered"]), got])
if len(rows) < runs // 2:
    sys.exit("only %d of %d runs were warm" % (len(rows), runs))

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, len(v) * p // 100)]

print("%d runs handed to a spare; microseconds per step, p50 and p90 (the sum of p50s is not the p50 of the sum)" % len(rows))
total50 = 0.0
for k, (_, what) in enumerate(STEPS):
    d = [(r[k + 1] - r[k]) / 1e3 for r in rows]
    total50 += pct(d, 50)
    print("%7.0f %7.0f  %s" % (pct(d, 50), pct(d, 90), what))
whole = [(r[-1] - r[0]) / 1e3 for r in rows]
print("%7.0f %7.0f  the whole request, as the client sees it (sum of the p50s: %.0f)" % (pct(whole, 50), pct(whole, 90), total50))
print("%7d %7d  page faults of the run from its plan to its end" % (pct(faults, 50), pct(faults, 90)))
PY
