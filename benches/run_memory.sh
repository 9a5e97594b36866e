#!/usr/bin/env bash
# Peak memory (VmHWM) of one case per fresh process, against an empty runtime.
#
#   benches/run_memory.sh            # empty, pipeline 2M and 20M, collect 2M
#   BIG=1 benches/run_memory.sh      # also collect 20M (about 1.2 GiB)
#   SMALL=200000 LARGE=2000000 benches/run_memory.sh   # other sizes
#
# Each case is a new process of target/release/memory on a tokio multi-thread runtime
# with 2 workers; records are 64 bytes, chunked by 1024, 8 chunks processed at once.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
small="${SMALL:-2000000}"
large="${LARGE:-20000000}"

cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p flowgate-benches --bin memory
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/memory"

cases=("empty" "pipeline $small" "pipeline $large" "collect $small")
if [[ "${BIG:-0}" == "1" ]]; then
    cases+=("collect $large")
fi

declare -A peak
for case in "${cases[@]}"; do
    # shellcheck disable=SC2086 # the case is "name [N]": split on purpose
    output="$("$bin" $case)"
    echo "$output" | sed 's/^/  /' >&2
    kib="$(echo "$output" | awk '/^peak_rss_kib:/ { print $2 }')"
    if ! [[ "$kib" =~ ^[0-9]+$ ]]; then
        echo "no peak memory reported for '$case'" >&2
        exit 1
    fi
    peak["$case"]="$kib"
done

empty="${peak[empty]}"
printf '\n%-22s %12s %10s %16s\n' "case" "peak KiB" "peak MiB" "over empty MiB"
for case in "${cases[@]}"; do
    kib="${peak[$case]}"
    awk -v c="$case" -v k="$kib" -v e="$empty" 'BEGIN {
        printf "%-22s %12d %10.2f %16.2f\n", c, k, k / 1024, (k - e) / 1024
    }'
done
if [[ "${BIG:-0}" != "1" ]]; then
    echo "(collect $large skipped: set BIG=1 to run it; it holds 64 bytes per record, 1.2 GiB at 20M)"
fi
