#!/usr/bin/env bash
# Does a V8 startup snapshot (node --build-snapshot / --snapshot-blob, Node >= 20) make a
# trivial script start faster? Compares, interleaved in one run, `node -e 'console.log(1)'`
# with the same code run from a user-land snapshot whose deserialize-main evaluates it.
# Prints the medians and their ratio. Knobs: RUNS=40, NODE=node. Both run in an empty
# environment, as in the sandbox (NODE_EXTRA_CA_CERTS alone adds ~100 ms to node's start).
set -euo pipefail
NODE=$(command -v "${NODE:-node}")
RUNS=${RUNS:-40}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/entry.js" <<'JS'
const v8 = require('v8');
v8.startupSnapshot.setDeserializeMainFunction(() => {
  (0, eval)(process.argv[2]);
});
JS
(cd "$work" && env -i "$NODE" --snapshot-blob snap.blob --build-snapshot entry.js)
out=$(env -i "$NODE" --snapshot-blob "$work/snap.blob" x 'console.log(1)')
[ "$out" = 1 ] || { echo "the snapshot does not run the code (printed: $out)" >&2; exit 1; }

python3 - "$NODE" "$work/snap.blob" "$RUNS" <<'PY'
import statistics, subprocess, sys, time
node, blob, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
cmds = {
    "node -e": [node, "-e", "console.log(1)"],
    "snapshot": [node, "--snapshot-blob", blob, "x", "console.log(1)"],
}
times = {k: [] for k in cmds}
for _ in range(runs):
    for name, cmd in cmds.items():
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, env={})
        times[name].append((time.perf_counter() - t) * 1000)
for name, ts in times.items():
    print(f"{name:10} median {statistics.median(ts):6.1f} ms  min {min(ts):6.1f} ms")
ratio = statistics.median(times["snapshot"]) / statistics.median(times["node -e"])
print(f"snapshot / node -e: {ratio:.2f}")
PY
