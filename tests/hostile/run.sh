#!/usr/bin/env bash
# The hostile-client suite (issue 14): replays each attack of issue 14 against the RELEASE
# gateway binary on loopback while a str0m viewer watches over TURN/TLS and a well-behaved
# client keeps allocating over TURN/TLS; prints one figure line per attack and fails when the
# viewer loses video, the gateway's RSS passes its bound or does not come back, or the other
# client's Allocate p99 passes 50 ms. See tests/hostile/README.md.
#
#   tests/hostile/run.sh                      every attack
#   tests/hostile/run.sh udp-garbage forged-rtp   only these
#
# Uses GATEWAY_BIN (tests/run exports the binary it built with --all-features) and the
# driver gateway-hostile (built by the same workspace build; built here when missing).
# Needs ffmpeg with libx264 (tests/run installs it). Loopback only; every process it starts
# is killed by PID when it ends.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}

command -v ffmpeg >/dev/null 2>&1 || { echo "[hostile] missing ffmpeg (apt-get install ffmpeg; tests/run installs it)" >&2; exit 2; }

gw_bin=${GATEWAY_BIN:-$target/release/gateway}
driver=${HOSTILE_BIN:-$target/release/gateway-hostile}
if [[ ! -x "$gw_bin" || ! -x "$driver" ]]; then
  echo "[hostile] building the release binaries (cargo build --release --workspace --all-features)"
  cargo build --release --workspace --all-features --quiet
fi

# Thousands of held connections live in the driver and in the gateway (both inherit this).
hard=$(ulimit -Hn)
if [[ "$hard" == unlimited ]] || ((hard >= 65536)); then ulimit -n 65536; else ulimit -n "$hard"; fi
if (($(ulimit -n) < 8192)); then
  echo "[hostile] needs at least 8192 open files (ulimit -Hn is $hard)" >&2
  exit 2
fi

driver_pid=
pidfile=$(mktemp)
cleanup() {
  # The driver kills the gateway and ffmpeg it started (by PID) when it exits, also on
  # SIGTERM; this ends the driver if the script is interrupted, and the processes it noted
  # in $pidfile if it was killed before it could.
  if [[ -n "$driver_pid" ]] && kill -0 "$driver_pid" 2>/dev/null; then
    kill "$driver_pid" 2>/dev/null || true
    wait "$driver_pid" 2>/dev/null || true
  fi
  local pid name
  [[ -f "$pidfile" ]] || return 0
  while read -r pid name; do
    if grep -qa -- "$name" "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
    fi
  done <"$pidfile"
  rm -f "$pidfile"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The whole suite is bounded: 5 minutes, then it is stopped and fails.
GATEWAY_BIN="$gw_bin" HOSTILE_PIDFILE="$pidfile" timeout --signal=TERM --kill-after=10 300 "$driver" "$@" &
driver_pid=$!
wait "$driver_pid"
