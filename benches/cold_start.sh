#!/usr/bin/env bash
# Cold-start benchmark (issue 4, "Figures"): `runtime serve` from an empty sandbox root until
# /health answers 200, against a baseline that does what dify-sandbox does at every start
# (walk the library paths and link or copy them into the chroot file by file, one process per
# file, then run the interpreter once in that chroot). Same file set, same machine, same run,
# interleaved so that background load hits both sides alike. Also: a re-start on a root that
# already holds the stamp, and `runtime unpack` with the stamp present.
#
#   sudo benches/cold_start.sh [SPEC]          (default: images/python3.yaml; must run as root)
#
# Knobs (environment):
#   RUNS=5          cold starts, and runs of each baseline, per figure (median reported)
#   RESTARTS=10     re-starts with the stamp present (and the record of the last cold start's probes)
#   UNPACKS=20      `runtime unpack` calls with the stamp present
#   BASELINES=dify,perfile,inproc   which baselines to run (see benches/README.md)
#   PREBAKE=/path RUNTIME=/path     use these binaries instead of building the release ones
#   BENCH_TMP=/var/tmp              where the roots are made (same filesystem as the host's
#                                   libraries, so the baseline can hardlink as dify-sandbox does)
#
# Prints one line per figure. Only 127.0.0.1 is contacted; every server started is stopped
# (SIGTERM, then wait) and every temporary directory is removed, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "cold_start.sh: must run as root (runtime serve chroots and switches uids; the baseline chroots)" >&2
  exit 2
fi
for tool in chroot tar; do
  command -v "$tool" >/dev/null || { echo "cold_start.sh: the \`$tool\` command is required" >&2; exit 2; }
done
# A real interpreter for the harness (pyenv's python3 on PATH is a bash shim: slow to start).
PY=${BENCH_PYTHON:-}
for c in /usr/bin/python3 "$(command -v python3 || true)"; do
  [ -n "$PY" ] && break
  [ -n "$c" ] && [ -x "$c" ] && PY=$c
done
[ -n "$PY" ] || { echo "cold_start.sh: no python3 for the harness" >&2; exit 2; }

. benches/lib/common.sh
release_binaries
spec=${1:-images/python3.yaml}

base=${BENCH_TMP:-/var/tmp}
work=$(mktemp -d "$base/prebake-cold-start.XXXXXX")
# Baseline roots hold hardlinks to the host's libraries: rm -rf removes the links, never the
# host files. The harness cleans up itself too; this catches an interrupted run.
trap 'rm -rf "$work"' EXIT

"$PREBAKE" build "$spec" --out "$work/out" --force >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; exit 1; }

# The dify-sandbox-like copier: for every path, a `dirname`, a `mkdir -p` and an `ln -f`
# (falling back to `cp` + `chmod`, read-only but keeping the exec bit the interpreter needs) or
# `cp -P` for symlinks, each its own process, as its env.sh does.
# With "copy" as $2 it copies instead of linking (see COPY in benches/README.md).
cat >"$work/dify_copy.sh" <<'SH'
dest=$1 mode=$2
while IFS= read -r src; do
  if [ -d "$src" ] && [ ! -L "$src" ]; then mkdir -p "$dest$src"; continue; fi
  parent=$(dirname "$src")
  mkdir -p "$dest$parent"
  if [ -L "$src" ]; then
    cp -P "$src" "$dest$src"
  else
    { [ "$mode" = link ] && ln -f "$src" "$dest$src" 2>/dev/null; } \
      || { cp "$src" "$dest$src" && chmod a-w "$dest$src"; }
  fi
done
SH
# The lean variant: exactly one process per file (`ln -f` or `cp -P`); directories are made
# only when the parent changes. A lower bound for any copier that spawns per file.
cat >"$work/perfile_copy.sh" <<'SH'
dest=$1 mode=$2
last=
while IFS= read -r src; do
  if [ -d "$src" ] && [ ! -L "$src" ]; then mkdir -p "$dest$src"; last=$src; continue; fi
  parent=${src%/*}
  if [ "$parent" != "$last" ]; then mkdir -p "$dest$parent"; last=$parent; fi
  if [ -L "$src" ]; then
    cp -P "$src" "$dest$src"
  else
    { [ "$mode" = link ] && ln -f "$src" "$dest$src" 2>/dev/null; } || cp "$src" "$dest$src"
  fi
done
SH

RUNTIME=$RUNTIME WORK=$work BUNDLE=$work/out/bundle SPEC=$spec \
RUNS=${RUNS:-5} RESTARTS=${RESTARTS:-10} UNPACKS=${UNPACKS:-20} \
BASELINES=${BASELINES:-dify,perfile,inproc} COPY=${COPY:-0} \
  "$PY" - <<'PY'
import http.client, json, os, shutil, signal, socket, statistics, subprocess, sys, time

env = os.environ
RUNTIME, WORK, BUNDLE = env["RUNTIME"], env["WORK"], env["BUNDLE"]
RUNS, RESTARTS, UNPACKS = int(env["RUNS"]), int(env["RESTARTS"]), int(env["UNPACKS"])
BASELINES = [b for b in env["BASELINES"].split(",") if b]
# COPY=1: the baselines copy file data instead of hardlinking. That is what linking costs in a
# container, where the host's libraries sit in a lower overlayfs layer and link() copies them up.
MODE = "copy" if env["COPY"] == "1" else "link"
START_DEADLINE = 120.0  # seconds: a start slower than this is a failure, not a figure
# Bounded work counter, so that a bug cannot loop forever.
assert 1 <= RUNS <= 100 and 1 <= RESTARTS <= 1000 and 1 <= UNPACKS <= 10000

manifest = json.load(open(os.path.join(BUNDLE, "bundle.json")))
lang = manifest["languages"].get("python3") or next(iter(manifest["languages"].values()))
interp = lang["interpreter"]

# The file set: the rootfs paths that exist on the host (dirs, regular files, symlinks).
# Device nodes are left out (the runtime binds the host's; copying /dev/zero never ends), and
# so is any path below a host symlink (copying through it could write outside the chroot).
def below_symlink(p):
    d = os.path.dirname(p)
    while d not in ("/", ""):
        if os.path.islink(d):
            return True
        d = os.path.dirname(d)
    return False

paths = []
for p in sorted(manifest["provenance"]):
    if not os.path.lexists(p) or below_symlink(p):
        continue
    if os.path.islink(p) or os.path.isdir(p) or os.path.isfile(p):
        paths.append(p)
n_files = sum(1 for p in paths if not os.path.isdir(p) or os.path.islink(p))
with open(os.path.join(WORK, "paths"), "w") as f:
    f.write("".join(p + "\n" for p in paths))

def fresh(name):
    d = os.path.join(WORK, name)
    shutil.rmtree(d, ignore_errors=True)
    return d

def chroot_run(root):
    out = subprocess.run(["chroot", root, interp, "-I", "-c", "print(1)"],
                         capture_output=True, timeout=60)
    if out.returncode != 0 or out.stdout != b"1\n":
        sys.exit(f"baseline: the interpreter failed in the chroot {root}: "
                 f"exit {out.returncode}, stderr {out.stderr[-500:]!r}")

def baseline_shell(script, root):
    os.makedirs(root)
    with open(os.path.join(WORK, "paths"), "rb") as src:
        subprocess.run(["bash", os.path.join(WORK, script), root, MODE], stdin=src,
                       check=True, timeout=1800)

def baseline_inproc(root):
    # One process, no spawning: the bound for any walk-and-copy start.
    os.makedirs(root)
    for p in paths:
        d = root + p
        if os.path.isdir(p) and not os.path.islink(p):
            os.makedirs(d, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(d), exist_ok=True)
        if os.path.islink(p):
            os.symlink(os.readlink(p), d)
        elif MODE == "link":
            os.link(p, d)
        else:
            shutil.copy2(p, d)

def timed_baseline(kind):
    root = fresh("base-" + kind)
    t0 = time.perf_counter()
    if kind == "dify":
        baseline_shell("dify_copy.sh", root)
    elif kind == "perfile":
        baseline_shell("perfile_copy.sh", root)
    elif kind == "inproc":
        baseline_inproc(root)
    else:
        sys.exit(f"BASELINES: unknown baseline {kind!r} (expected dify, perfile or inproc)")
    chroot_run(root)
    dt = time.perf_counter() - t0
    shutil.rmtree(root)
    return dt

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def health(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        c.request("GET", "/health")
        return c.getresponse().status
    except OSError:
        return None
    finally:
        c.close()

def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

def timed_serve(root, tag):
    """Seconds from spawning `runtime serve` until /health answers 200."""
    port = free_port()
    log = open(os.path.join(WORK, f"serve-{tag}.log"), "wb")
    e = dict(os.environ, API_KEY="bench-" + os.urandom(8).hex(), SANDBOX_PORT=str(port))
    e.pop("RUST_LOG", None)
    t0 = time.perf_counter()
    # cwd=WORK: no conf/config.yaml of the caller's directory is picked up.
    proc = subprocess.Popen([RUNTIME, "serve", "--bundle", BUNDLE, "--root", root],
                            cwd=WORK, env=e, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log)
    try:
        while True:
            st = health(port)
            if st == 200:
                return time.perf_counter() - t0
            if proc.poll() is not None:
                break
            if time.perf_counter() - t0 > START_DEADLINE:
                break
            time.sleep(0.001)
    finally:
        stop(proc)
        log.close()
    tail = open(log.name, errors="replace").read()[-2000:]
    sys.exit(f"runtime serve never answered /health 200 (exit {proc.returncode}):\n{tail}")

def logged_ms(tag, what):
    """A duration the server logged, e.g. "rootfs ready in 612.3 ms" (None when absent)."""
    text = open(os.path.join(WORK, f"serve-{tag}.log"), errors="replace").read()
    i = text.find(what + " in ")
    if i < 0:
        return None
    return float(text[i + len(what) + 4:].split(" ms", 1)[0]) / 1000

def timed_unpack(root):
    t0 = time.perf_counter()
    out = subprocess.run([RUNTIME, "unpack", "--bundle", BUNDLE, "--root", root],
                         capture_output=True, text=True, timeout=60)
    dt = time.perf_counter() - t0
    if out.returncode != 0 or "already unpacked" not in out.stdout:
        sys.exit(f"runtime unpack with the stamp present did not skip: {out.stdout}{out.stderr}")
    inner = float(out.stdout.rsplit("(", 1)[1].split(" ms")[0])
    return dt, inner / 1000

def timed_tar():
    root = fresh("tar")
    os.makedirs(root)
    t0 = time.perf_counter()
    subprocess.run(["tar", "--zstd", "-xf", os.path.join(BUNDLE, manifest["rootfs"]["file"]),
                    "-C", root], check=True, timeout=600)
    dt = time.perf_counter() - t0
    shutil.rmtree(root)
    return dt

# Warm the page cache for both sides (archive, host libraries, binaries) before timing.
baseline_inproc(fresh("warm")); chroot_run(os.path.join(WORK, "warm")); shutil.rmtree(os.path.join(WORK, "warm"))
timed_serve(fresh("root-warm"), "warm"); shutil.rmtree(os.path.join(WORK, "root-warm"))

cold, tar = [], []
base = {k: [] for k in BASELINES}
for i in range(RUNS):
    root = fresh(f"root-{i}")
    cold.append(timed_serve(root, f"cold-{i}"))
    if i < RUNS - 1:
        shutil.rmtree(root)  # the last one is kept for the re-start figures
    for k in BASELINES:
        base[k].append(timed_baseline(k))
    tar.append(timed_tar())

kept = os.path.join(WORK, f"root-{RUNS - 1}")
restart = [timed_serve(kept, f"restart-{i}") for i in range(RESTARTS)]
unp = [timed_unpack(kept) for _ in range(UNPACKS)]
shutil.rmtree(kept)

med = statistics.median
def ms(x): return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"
def spread(xs): return f"min {ms(min(xs))}, max {ms(max(xs))}, n={len(xs)}"

parts = [(logged_ms(f"cold-{i}", "rootfs ready"), logged_ms(f"cold-{i}", "probe run ok"))
         for i in range(RUNS)]
parts = [p for p in parts if None not in p]

r = manifest["rootfs"]
print(f"file set: {n_files} files/symlinks + {len(paths) - n_files} dirs from bundle.json provenance "
      f"(rootfs {r['files']} files, {r['size_uncompressed'] / 2**20:.1f} MiB); load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
c = med(cold)
print(f"cold start, empty root -> /health 200 (unpack + probe run): runtime serve {ms(c)} median ({spread(cold)})")
if parts:
    u, p = med([a for a, _ in parts]), med([b for _, b in parts])
    print(f"  of which (server log, median): rootfs unpack {ms(u)}, probe run {ms(p)}, "
          f"the rest (process start, listen, /health polling) {ms(max(0.0, c - u - p))}")
names = {"dify": "dify-sandbox-style (dirname+mkdir+ln per file, then chroot python)",
         "perfile": "one process per file (ln/cp, then chroot python)",
         "inproc": "in-process walk, no spawning (bound, then chroot python)"}
def faster(a, b):
    return f"{a / b:.1f}x faster" if a >= b else f"{b / a:.1f}x slower"
for k in BASELINES:
    b = med(base[k])
    print(f"baseline {names[k]}, {MODE}: {ms(b)} median ({spread(base[k])}) -> runtime {faster(b, c)}")
t = med(tar)
print(f"reference: tar --zstd -x of the same rootfs.tar.zst: {ms(t)} median ({spread(tar)}); runtime cold start is {c / t:.1f}x that")
rs = med(restart)
print(f"re-start, stamp present -> /health 200 (probes in the background: the earlier start left its record): {ms(rs)} median ({spread(restart)}) -> {faster(c, rs)} than cold"
      + "".join(f", {faster(med(base[k]), rs)} than {k}" for k in BASELINES))
uw = med([u[0] for u in unp]); ui = med([u[1] for u in unp])
print(f"runtime unpack, stamp present: {ms(uw)} median wall incl. process start "
      f"({spread([u[0] for u in unp])}), {ms(ui)} inside; target < 10 ms: {'met' if uw < 0.010 else 'MISSED'}")
PY
