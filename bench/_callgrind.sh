# Shared by bench/callgrind-*.sh (sourced, not run): a ctrd under callgrind in a scratch directory.
#
#   cg_start SRC_DIR    start ctrd from SRC_DIR under valgrind; sets WORK (scratch directory,
#                       removed on exit), SOCK (its socket) and VG (valgrind's pid)
#   cg_zero             zero the counters (before the measured work)
#   cg_total            dump the counters and print the daemon's user-space instructions since
#                       cg_zero (all threads)
# PY (the interpreter, default $PYTHON or python3) must have ctrd's dependencies.
PY=${PYTHON:-python3}

cg_start() {
  WORK=$(mktemp -d /tmp/ctrd-cg.XXXXXX)
  VG=""
  trap 'if [ -n "$VG" ]; then kill "$VG" 2>/dev/null || true; wait "$VG" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
  SOCK=$WORK/ctrd.sock
  cat > "$WORK/config.toml" <<CFG
version = 2
root = "$WORK/root"
state = "$WORK/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "1h"
  mutation_threshold = 0
CFG
  PYTHONPATH=$1 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out.%p" \
    "$PY" -m ctrd --config "$WORK/config.toml" > "$WORK/daemon.log" 2>&1 &
  VG=$!
  for _ in $(seq 1 240); do [ -S "$SOCK" ] && break; sleep 0.5; done
  [ -S "$SOCK" ] || { echo "ctrd did not start under valgrind; log:" >&2; cat "$WORK/daemon.log" >&2; exit 1; }
}

cg_zero() {
  callgrind_control -z "$VG" > /dev/null
}

cg_total() {
  callgrind_control -d "$VG" > /dev/null
  sleep 1
  grep -h -m1 '^summary:\|^totals:' "$WORK"/cg.out.*.1 | awk '{print $2}'
}
