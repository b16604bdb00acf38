#!/usr/bin/env bash
# Smoke test of the benchmark program: a --quick run against coturn must produce a table
# with figures for both servers. No timing assertions: benchmarks print figures only.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v turnserver >/dev/null || { echo "bench-smoke: turnserver (Debian's coturn) is missing" >&2; exit 1; }

out=$(mktemp --suffix=.md)
charts=(throughput cpu viewers-cpu ttff)
trap 'rm -f "$out" "${out%.md}"-*.svg' EXIT

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

grep -q '^| figure | unit | better | gateway | peer | gateway / peer |' "$out" || fail "no results table"
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
# Viewers over direct UDP, the gateway against Janus (Debian's janus, streaming plugin): a
# number in both columns.
for row in "viewers of the 1 Mbit/s test pattern, 1 core, direct UDP \\(peer: Janus\\): most viewers" \
           "viewers of the 1 Mbit/s test pattern, 1 core, direct UDP \\(peer: Janus\\): server CPU at that count"; do
  grep -Eq "^\| ${row}[^|]* \| [^|]+ \| [^|]+ \| ${num} \| ${num} \| ${num}× \|$" "$out" \
    || fail "row '$row' lacks figures for the gateway and Janus"
done
# A cluster of three gateways (Redis, an origin and two edges pulling from it): the cluster's
# viewers against one gateway's, and what each edge's pull costs the origin.
row="cluster of 3 gateways \\(an origin, 2 edges\\), a core each, direct UDP \\(peer: one gateway\\): most viewers"
grep -Eq "^\| ${row}[^|]* \| [^|]+ \| [^|]+ \| ${num} \| ${num} \| ${num}× \|$" "$out" \
  || fail "row '$row' lacks figures for the cluster and one gateway"
for row in "cluster of 3 gateways \\(an origin, 2 edges\\), a core each, direct UDP \\(peer: one gateway\\): origin's extra CPU per edge node"; do
  grep -Eq "^\| ${row} \| [^|]+ \| [^|]+ \| ${num} \| n/a \| n/a \|$" "$out" \
    || fail "row '$row' lacks the gateway's figure"
done
# The RTP join part (a sender with a 10 s keyframe interval, viewers joining late): figures
# for the gateway, n/a for coturn.
for row in "time to first frame for a new viewer of an RTP stream whose keyframes come every 10 s: p50" \
           "time to first frame for a new viewer of an RTP stream whose keyframes come every 10 s: max"; do
  grep -Eq "^\| ${row} \| [^|]+ \| [^|]+ \| ${num} \| n/a \| n/a \|$" "$out" \
    || fail "row '$row' lacks the gateway's figure"
done
grep -q 'turnutils_uclient | gateway' "$out" || fail "no turnutils_uclient cross-check for the gateway"
grep -q 'turnutils_uclient | coturn' "$out" || fail "no turnutils_uclient cross-check for coturn"

# The charts beside the report: each file exists, is named in the report, parses as SVG,
# and has a drawn series (its legend entry and its line, in its colour) for each server
# where both are measured.
for c in "${charts[@]}"; do
  f="${out%.md}-$c.svg"
  [[ -s "$f" ]] || fail "chart $f was not written"
  grep -qF "($(basename "$f"))" "$out" || fail "the report does not name $(basename "$f")"
done
python3 - "${out%.md}" <<'PY' || fail "charts are not what they should be"
import sys, xml.etree.ElementTree as ET
stem = sys.argv[1]
NS = "{http://www.w3.org/2000/svg}"
# chart -> {legend label: line colour}, as bench/src/plots.rs draws them.
want = {
    "throughput": {"gateway TURN/TCP": "#1F77B4", "gateway TURN/TLS": "#17BECF",
                   "coturn TURN/TCP": "#D62728", "coturn TURN/TLS": "#FF7F0E"},
    "viewers-cpu": {"gateway, steps that passed": "#1F77B4"},
    "ttff": {"gateway p50": "#1F77B4"},
}
want["cpu"] = want["throughput"]
bad = []
for chart, series in want.items():
    path = f"{stem}-{chart}.svg"
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        bad.append(f"{path}: not well-formed XML: {e}")
        continue
    if root.tag not in ("svg", NS + "svg"):
        bad.append(f"{path}: root element is {root.tag}, not svg")
        continue
    texts = {"".join(t.itertext()).strip() for t in root.iter() if t.tag in ("text", NS + "text")}
    def tagged(name):
        return [e for e in root.iter() if e.tag in (name, NS + name)]
    for label, colour in series.items():
        if label not in texts:
            bad.append(f"{path}: no legend entry '{label}'")
        # The legend's sample line, and a marker at each measured point, in its colour.
        if not any(p.get("stroke", "").upper() == colour for p in tagged("polyline")):
            bad.append(f"{path}: no line in the colour of '{label}' ({colour})")
        if not any(c.get("fill", "").upper() == colour for c in tagged("circle")):
            bad.append(f"{path}: no measured point of '{label}' ({colour})")
for b in bad:
    print("bench-smoke:", b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
echo "bench-smoke: table has figures for gateway and coturn; charts ${charts[*]} written and well-formed"
