#!/usr/bin/env bash
# Two builds of `runtime` against each other, warm pool on, same bundle, same run (issue 12):
# one server per build, and the requests alternate between them, so that the machine's drift
# (which on this 2-core VM moves a warm run's p50 by 20% within the hour) falls on both alike.
# For a change to the warm path, OLD is the previous commit's binary (build it in a worktree
# with its own CARGO_TARGET_DIR). It prints, for `print(1)` (or the script in CODE_FILE, such
# as benches/lib/dify_jinja2_runner.py) with `enable_network: true`:
#   sparse      requests GAP_MS apart (default 5): every run finds the previous one over;
#   back-to-back  the second of two requests sent one after the other: the run comes while
#               the previous one's process is still exiting;
#   concurrency 2 and 8 for SECONDS (default 5) each: runs/s, failed runs, p50 and p90.
# For a change to what the build writes (the seccomp programs every run installs), set
# OLD_PREBAKE to the previous commit's `prebake`: each side then serves its own build's bundle.
# For a change to the spec (another interpreter, another preload of packages), set OLD_SPEC:
# the old side serves that spec's bundle, the new side SPEC's (NEW_RUNTIME may be OLD_RUNTIME).
# Needs root.
#
#   sudo benches/warm_ab.sh OLD_RUNTIME [NEW_RUNTIME] [SPEC]   (default: this tree's release
#   build, images/dify.yaml)
#   RUNS=300 GAP_MS=5 SECONDS_EACH=5 OLD_PREBAKE=... OLD_SPEC=... CODE_FILE=... benches/warm_ab.sh ...
#   NAMESPACES=false benches/warm_ab.sh ...   (both servers chroot-only, as under Docker's
#   default capabilities)
# (A CODE_FILE script must exit 0 and print the same on every run: the first run's output is
# what every other run must match.)
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: benches/warm_ab.sh OLD_RUNTIME [NEW_RUNTIME] [SPEC]}
RUNS=${RUNS:-300}
GAP_MS=${GAP_MS:-5}
SECONDS_EACH=${SECONDS_EACH:-5}

if [ "$(id -u)" != 0 ]; then
  echo "warm A/B: SKIPPED (needs root)"
  exit 0
fi
. benches/lib/common.sh
release_binaries
NEW=${2:-$RUNTIME}
SPEC=${3:-images/dify.yaml}
work=$(mktemp -d)
servers=()
server=
cleanup() {
  # $server: one that serve_warm started and gave up on before it joined $servers.
  for pid in "${servers[@]}" $server; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$PREBAKE" build "$SPEC" --no-image --out "$work/out-new" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; exit 1; }
OLD_SPEC=${OLD_SPEC:-$SPEC}
if [ -n "${OLD_PREBAKE:-}" ] || [ "$OLD_SPEC" != "$SPEC" ]; then
  "${OLD_PREBAKE:-$PREBAKE}" build "$OLD_SPEC" --no-image --out "$work/out-old" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; exit 1; }
else
  ln -s out-new "$work/out-old"
fi
ports=()
for side in old new; do
  bin=$OLD
  [ "$side" = new ] && bin=$NEW
  port=$(free_port)
  mkdir "$work/$side"
  echo "starting the $side server" >&2
  serve_warm "$bin" "$work/out-$side/bundle" "$work/$side" "$port" 100000
  servers+=("$server")
  server=
  ports+=("$port")
done

code=print\(1\)
if [ -n "${CODE_FILE:-}" ]; then
  code=$(cat "$CODE_FILE") || exit 1
fi
echo "old $OLD ($OLD_SPEC) against new $NEW ($SPEC), ${CODE_FILE:-print(1)}, enable_network: true, $(nproc) cores, $(date -u +%Y-%m-%d)"
python3 - "${ports[0]}" "${ports[1]}" "$RUNS" "$GAP_MS" "$SECONDS_EACH" "$code" <<'PY'
import http.client, json, multiprocessing, sys, time

old, new, runs, gap_ms, secs = (int(a) for a in sys.argv[1:6])
BODY = json.dumps({"language": "python3", "code": sys.argv[6], "preload": "", "enable_network": True})
HEAD = {"X-Api-Key": "bench", "Content-Type": "application/json"}

def send(conn):
    conn.request("POST", "/v1/sandbox/run", BODY, HEAD)
    return json.loads(conn.getresponse().read())

first = send(http.client.HTTPConnection("127.0.0.1", old))
if first.get("code") != 0 or first["data"]["exit_code"] != 0:
    sys.exit("the script failed: %r" % first)
EXPECT = first["data"]["stdout"]

def one(conn):
    t = time.perf_counter()
    r = send(conn)
    took = (time.perf_counter() - t) * 1000
    return took, r.get("code") == 0 and r["data"]["stdout"] == EXPECT

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, len(v) * p // 100)]

def alternate(burst):
    conns = {port: http.client.HTTPConnection("127.0.0.1", port) for port in (old, new)}
    times = {old: [], new: []}
    for i in range(runs + 30):
        for port, conn in conns.items():
            for k in range(burst):
                took, ok = one(conn)
                if not ok:
                    sys.exit("a run failed on port %d" % port)
                if i >= 30 and k == burst - 1:
                    times[port].append(took)
                if burst == 1:
                    time.sleep(gap_ms / 1000)
    return times

def line(name, times):
    o, n = pct(times[old], 50), pct(times[new], 50)
    print("%-14s old p50 %5.2f ms p90 %5.2f | new p50 %5.2f ms p90 %5.2f | new/old p50 %.2f"
          % (name, o, pct(times[old], 90), n, pct(times[new], 90), n / o))

line("sparse", alternate(1))
line("back-to-back", alternate(2))

def worker(port, q):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    ok = bad = 0
    lat = []
    end = time.monotonic() + secs
    while time.monotonic() < end:
        took, good = one(conn)
        lat.append(took)
        ok, bad = ok + good, bad + (not good)
    q.put((ok, bad, lat))

for conc in (2, 8):
    out = {}
    for port in (old, new):
        q = multiprocessing.Queue()
        ps = [multiprocessing.Process(target=worker, args=(port, q)) for _ in range(conc)]
        for p in ps:
            p.start()
        res = [q.get() for _ in ps]
        for p in ps:
            p.join()
        lat = [x for r in res for x in r[2]]
        out[port] = (sum(r[0] for r in res) / secs, sum(r[1] for r in res), pct(lat, 50), pct(lat, 90))
    (oa, of, o50, o90), (na, nf, n50, n90) = out[old], out[new]
    print("concurrency %d  old %4.0f runs/s (%d failed) p50 %5.2f p90 %5.2f | new %4.0f runs/s (%d failed) p50 %5.2f p90 %5.2f | new/old runs/s %.2f"
          % (conc, oa, of, o50, o90, na, nf, n50, n90, na / oa))
PY
