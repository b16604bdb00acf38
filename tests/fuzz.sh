#!/usr/bin/env bash
# Replays the committed fuzz corpora and, in CI (CI=true) or when FUZZ_SECONDS is set, fuzzes
# every target for a bounded time. Any crash fails the script and prints the crashing input.
#
#   tests/fuzz.sh                     # replay fuzz/corpus/<target>/ for every target
#   FUZZ_SECONDS=60 tests/fuzz.sh     # ... then fuzz each target for 60 s
#   FUZZ_TARGETS="framer" tests/fuzz.sh
#
# Only the stable toolchain is needed: cargo-fuzz's nightly flags are enabled with
# RUSTC_BOOTSTRAP=1. Writes only under fuzz/ (target/, artifacts/, corpus-new/).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo fuzz list)
fi
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "fuzz.sh: no fuzz targets found" >&2
    exit 1
fi

fuzz_time=""
if [[ -n "${FUZZ_SECONDS:-}" ]]; then
    fuzz_time="$FUZZ_SECONDS"
elif [[ "${CI:-}" == "true" ]]; then
    # Per target: six targets make 3 minutes of fuzzing (keep the sum under ~4).
    fuzz_time=30
fi

echo "fuzz.sh: building ${targets[*]}" >&2
cargo fuzz build

logdir="$root/fuzz/target/fuzz-logs"
mkdir -p "$logdir"
failed=()

# run NAME TARGET CORPUS_DIR... -- LIBFUZZER_ARGS...
run() {
    local name="$1" target="$2"
    shift 2
    local log="$logdir/$target-$name.log"
    echo "fuzz.sh: $target: $name" >&2
    if cargo fuzz run "$target" "$@" >"$log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$log" | tail -n 2 >&2 || true
        return 0
    fi
    grep -E -A2 "panicked at|==ERROR|^SUMMARY|deadly signal|timeout after" "$log" >&2 ||
        tail -n 40 "$log" >&2
    echo "fuzz.sh: $target FAILED ($name); full log: $log" >&2
    local artifacts
    artifacts="$(grep -oE '(Test unit written to|Failing input:) *[^ ]+' "$log" |
        sed -E 's/^(Test unit written to|Failing input:) *//' | sort -u || true)"
    if [[ -n "$artifacts" ]]; then
        while read -r a; do
            echo "fuzz.sh: crashing input: $a" >&2
            echo "fuzz.sh: reproduce with: (cd $root/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $target $a)" >&2
        done <<<"$artifacts"
    fi
    failed+=("$target ($name)")
    return 0
}

for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    run replay "$t" "corpus/$t" -- -runs=0
done

if [[ -n "$fuzz_time" ]]; then
    for t in "${targets[@]}"; do
        # New inputs go to corpus-new/ (git-ignored); the committed seeds stay untouched.
        mkdir -p "corpus-new/$t"
        run "fuzz ${fuzz_time}s" "$t" "corpus-new/$t" "corpus/$t" -- \
            -max_total_time="$fuzz_time" -timeout=20
    done
fi

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: ok (${targets[*]})" >&2
