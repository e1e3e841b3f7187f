# Shared by the bench scripts (source it from the repository root; bash): small helpers, and
# the binaries to measure.

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

# A free port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Sets $PREBAKE and $RUNTIME: the release build's (built now), unless both are given.
release_binaries() {
  if [ -z "${PREBAKE:-}" ] || [ -z "${RUNTIME:-}" ]; then
    cargo build --release --quiet --bins
    PREBAKE=${PREBAKE:-$PWD/target/release/prebake}
    RUNTIME=${RUNTIME:-$PWD/target/release/runtime}
  fi
}
