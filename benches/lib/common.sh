# Shared by the bench scripts (source it from the repository root; bash): small helpers, and
# the binaries to measure.

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

# A free port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts `RUNTIME serve` of BUNDLE with the warm pool on, in the background, and waits until its
# zygote is ready: its config, root and log (server.log) in DIR, on PORT, each zygote serving
# at most FORKS runs. Sets $server to its pid; on failure prints its log and exits.
# NAMESPACES=false: chroot-only, as under Docker's default capabilities.
#   serve_warm RUNTIME BUNDLE DIR PORT FORKS
serve_warm() {
  local runtime=$1 bundle=$2 dir=$3 port=$4 forks=$5
  printf 'app:\n  port: %s\n  key: bench\nmax_workers: 8\nwarm_pool: true\nwarm_pool_max_forks: %s\n' \
    "$port" "$forks" >"$dir/config.yaml"
  if [ "${NAMESPACES:-}" = false ]; then
    echo 'namespaces: false' >>"$dir/config.yaml"
  fi
  "$runtime" serve --bundle "$bundle" --root "$dir/root" --config "$dir/config.yaml" \
    </dev/null >/dev/null 2>"$dir/server.log" &
  server=$!
  for _ in $(seq 600); do
    grep -q "warm pool: zygote ready" "$dir/server.log" && return 0
    kill -0 "$server" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "the warm pool never became ready:" >&2
  cat "$dir/server.log" >&2
  exit 1
}

# Sets $PREBAKE and $RUNTIME: the release build's (built now), unless both are given.
release_binaries() {
  if [ -z "${PREBAKE:-}" ] || [ -z "${RUNTIME:-}" ]; then
    cargo build --release --quiet --bins
    PREBAKE=${PREBAKE:-$PWD/target/release/prebake}
    RUNTIME=${RUNTIME:-$PWD/target/release/runtime}
  fi
}
