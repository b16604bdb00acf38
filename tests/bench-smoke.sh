#!/usr/bin/env bash
# Smoke test of the benchmark program: a --quick run against coturn must produce a table
# with figures for both servers. No timing assertions: benchmarks print figures only.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v turnserver >/dev/null || { echo "bench-smoke: turnserver (Debian's coturn) is missing" >&2; exit 1; }

out=$(mktemp --suffix=.md)
trap 'rm -f "$out"' EXIT

# tests/run hands over the binaries it built (GATEWAY_BIN, GATEWAY_BENCH_BIN); run alone,
# build them here.
if [[ -z "${GATEWAY_BIN:-}" ]]; then
  cargo build --release --quiet -p gateway
  export GATEWAY_BIN="$PWD/target/release/gateway"
fi
if [[ -n "${GATEWAY_BENCH_BIN:-}" && -x "$GATEWAY_BENCH_BIN" ]]; then
  "$GATEWAY_BENCH_BIN" --quick --out "$out" >/dev/null
else
  cargo run --release --quiet -p gateway-bench -- --quick --out "$out" >/dev/null
fi

fail() { echo "bench-smoke: $*" >&2; cat "$out" >&2; exit 1; }

grep -q '^| figure | unit | better | gateway | coturn | gateway / coturn |' "$out" || fail "no results table"
# Each figure row has a value for both servers: gateway and coturn columns are numbers.
num='[0-9][0-9,.]*'
for row in "TURN/TCP, 1 alloc: relayed packets" "TURN/TLS, 1 alloc: relayed packets" \
           "TURN/TLS allocation set-up rate" "RSS per idle TURN/TLS allocation at"; do
  grep -Eq "^\| ${row}[^|]* \| [^|]+ \| [^|]+ \| ${num} \| ${num} \| ${num}× \|$" "$out" \
    || fail "row '$row' lacks figures for both servers"
done
# The viewers part is gateway only: a number for the gateway, n/a for coturn.
for row in "viewers of the 1 Mbit/s test pattern, 1 gateway core, TURN/TLS: most viewers" \
           "viewers of the 1 Mbit/s test pattern, 1 gateway core, TURN/TLS: time to first frame, 1 viewer"; do
  grep -Eq "^\| ${row}[^|]* \| [^|]+ \| [^|]+ \| ${num} \| n/a \| n/a \|$" "$out" \
    || fail "row '$row' lacks the gateway's figure"
done
grep -q 'turnutils_uclient | gateway' "$out" || fail "no turnutils_uclient cross-check for the gateway"
grep -q 'turnutils_uclient | coturn' "$out" || fail "no turnutils_uclient cross-check for coturn"
echo "bench-smoke: table has figures for gateway and coturn"
