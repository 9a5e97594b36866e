#!/usr/bin/env bash
# Instructions per item of the async lane and its peers on a current_thread runtime,
# counted by callgrind: repeatable whatever the machine's load.
#
# Each workload runs at two item counts; the difference of the instruction counts divided
# by the difference of the item counts is the cost per item without start-up. Ratios are
# to futures' buffer_unordered and buffered at the same limit.
#
# Usage: benches/callgrind.sh [workload...]
#   environment: SMALL (default 10000), LARGE (default 110000) item counts;
#                LIMIT (default 64) for the async workloads, PAR_LIMIT (default 2) for par_map.
set -euo pipefail

cd "$(dirname "$0")/.."
SMALL=${SMALL:-10000}
LARGE=${LARGE:-110000}
LIMIT=${LIMIT:-64}
PAR_LIMIT=${PAR_LIMIT:-2}
if [ "$#" -gt 0 ]; then
    WORKLOADS=("$@")
else
    WORKLOADS=(buffer_unordered buffered map_concurrent_unordered map_concurrent spawn par_map
        for_each_concurrent par_stream_then par_stream_then_unordered)
fi

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
if [ "$LARGE" -le "$SMALL" ]; then
    echo "LARGE ($LARGE) must exceed SMALL ($SMALL)" >&2
    exit 1
fi

cargo build --release --quiet -p flowgate-benches --bin per_item_instructions
BIN=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/per_item_instructions
[ -x "$BIN" ] || { echo "binary not found: $BIN" >&2; exit 1; }

# Instructions executed (all threads) by one run of the binary.
count() {
    local out
    out=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$@" 2>&1) || {
        echo "$out" >&2
        echo "failed: $BIN $*" >&2
        exit 1
    }
    echo "$out" | sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' | tail -n 1
}

declare -A PER_ITEM LIMITS
for w in "${WORKLOADS[@]}"; do
    limit=$LIMIT
    [ "$w" = par_map ] && limit=$PAR_LIMIT
    small=$(count "$w" "$SMALL" "$limit")
    large=$(count "$w" "$LARGE" "$limit")
    PER_ITEM[$w]=$(awk -v a="$small" -v b="$large" -v d="$((LARGE - SMALL))" \
        'BEGIN { printf "%.1f", (b - a) / d }')
    LIMITS[$w]=$limit
    echo "  $w: $small instructions at $SMALL items, $large at $LARGE" >&2
done

# Baselines at the async limit, counted here if they were not asked for.
for base in buffer_unordered buffered; do
    if [ -z "${PER_ITEM[$base]:-}" ]; then
        small=$(count "$base" "$SMALL" "$LIMIT")
        large=$(count "$base" "$LARGE" "$LIMIT")
        PER_ITEM[$base]=$(awk -v a="$small" -v b="$large" -v d="$((LARGE - SMALL))" \
            'BEGIN { printf "%.1f", (b - a) / d }')
    fi
done

echo
echo "instructions per item (callgrind, current_thread runtime; runs of $SMALL and $LARGE items)"
printf '%-28s %6s %14s %18s %10s\n' workload limit instr/item "/buffer_unordered" /buffered
for w in "${WORKLOADS[@]}"; do
    awk -v w="$w" -v l="${LIMITS[$w]}" -v x="${PER_ITEM[$w]}" \
        -v u="${PER_ITEM[buffer_unordered]}" -v o="${PER_ITEM[buffered]}" \
        'BEGIN { printf "%-28s %6s %14.1f %17.2fx %9.2fx\n", w, l, x, x / u, x / o }'
done
