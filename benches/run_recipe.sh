#!/usr/bin/env bash
# flowgate against the Python recipe "generator -> chunks -> multiprocessing.Pool(2).map",
# both reading the same pre-generated files.
#
#   benches/run_recipe.sh                              # 2,000,000 lines and records, 3 runs
#   LINES=200000 RECORDS=200000 RUNS=1 benches/run_recipe.sh
#   ROUNDS=16 benches/run_recipe.sh                    # heavier per-record arithmetic
#
# Environment: LINES, RECORDS (input sizes), RUNS (runs of each side, interleaved),
# ROUNDS (rounds of 13 arithmetic steps per record, default 4), PYTHON (default python3),
# WORKDIR (where the inputs go; default a temporary directory removed at the end).
#
# Jobs:
#   wordcount  python_baseline.py wordcount FILE   vs  examples/wordcount.rs FILE
#   records    python_baseline.py records FILE     vs  benches/src/bin/records.rs FILE
# Throughput excludes generating the files. Python's peak memory is the parent's peak plus
# every worker's peak (see python_baseline.py); flowgate's is its process's VmHWM.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lines="${LINES:-2000000}"
records="${RECORDS:-2000000}"
runs="${RUNS:-3}"
rounds="${ROUNDS:-4}"
python="${PYTHON:-python3}"

if [[ -n "${WORKDIR:-}" ]]; then
    work="$WORKDIR"
    mkdir -p "$work"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi

echo "building (release)..." >&2
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p flowgate-benches \
    --bin gen_corpus --bin records
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p flowgate --example wordcount
target_dir="${CARGO_TARGET_DIR:-$root/target}/release"

echo "generating $lines lines and $records records in $work (not timed)..." >&2
"$target_dir/gen_corpus" words "$lines" "$work/words.txt"
"$target_dir/gen_corpus" records "$records" "$work/records.csv"
echo "$("$python" --version 2>&1); words.txt $(du -h "$work/words.txt" | cut -f1)," \
    "records.csv $(du -h "$work/records.csv" | cut -f1); $(nproc) cores;" \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

py_wordcount() { "$python" "$root/benches/python_baseline.py" wordcount "$work/words.txt"; }
fg_wordcount() { "$target_dir/examples/wordcount" "$work/words.txt"; }
py_records() {
    "$python" "$root/benches/python_baseline.py" records "$work/records.csv" --rounds "$rounds"
}
fg_records() { "$target_dir/records" "$work/records.csv" --rounds "$rounds"; }

# Prints "<items per second> <peak MiB>" from a run's output.
summarize() {
    awk '
        / lines\/s | records\/s / { for (i = 2; i <= NF; i++) if ($i ~ /^(lines|records)\/s$/) rate = $(i - 1) }
        /^peak memory/ { for (i = 1; i <= NF; i++) if ($i == "MiB") mib = $(i - 1) }
        END { if (rate == "" || mib == "") exit 1; print rate, mib }
    ' "$1"
}

for run in $(seq 1 "$runs"); do
    # Alternate which side goes first, so that neither always meets a warmer cache.
    if (( run % 2 == 1 )); then order="py fg"; else order="fg py"; fi
    for job in wordcount records; do
        for side in $order; do
            out="$work/$side-$job-$run.txt"
            "${side}_${job}" >"$out"
            echo "run $run  $job  $side: $(summarize "$out")  (items/s, peak MiB)" >&2
        done
    done
done

# The two sides must agree on the answer.
status=0
if ! diff <(head -n 21 "$work/py-wordcount-1.txt") <(head -n 21 "$work/fg-wordcount-1.txt") >/dev/null; then
    echo "MISMATCH: Python and flowgate wordcount disagree on the top 20" >&2
    status=1
fi
if ! diff <(head -n 13 "$work/py-records-1.txt") <(head -n 13 "$work/fg-records-1.txt") >/dev/null; then
    echo "MISMATCH: Python and flowgate records disagree on the checksum or the top 10" >&2
    status=1
fi

"$python" - "$work" "$runs" "$lines" "$records" "$rounds" <<'EOF'
import statistics, sys

work, runs, lines, records, rounds = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]

def read(side, job, run):
    rate = mib = None
    with open(f"{work}/{side}-{job}-{run}.txt") as f:
        for line in f:
            words = line.split()
            for i, w in enumerate(words):
                if w in ("lines/s", "records/s"):
                    rate = float(words[i - 1])
            if line.startswith("peak memory"):
                mib = float(words[words.index("MiB") - 1])
    return rate, mib

targets = {"wordcount": 5.0, "records": 50.0}
sizes = {"wordcount": f"{int(lines):,} lines", "records": f"{int(records):,} records, {rounds} rounds"}
print()
print(f"{'job':<10} {'side':<9} {'items/s median':>15} {'min..max':>21} {'peak MiB':>9}"
      f" {'x Python':>9} {'mem 1/x':>8}")
for job in ("wordcount", "records"):
    rows = {}
    for side in ("py", "fg"):
        got = [read(side, job, r) for r in range(1, runs + 1)]
        rates = [g[0] for g in got]
        mibs = [g[1] for g in got]
        rows[side] = (statistics.median(rates), min(rates), max(rates), statistics.median(mibs))
    py, fg = rows["py"], rows["fg"]
    speed = fg[0] / py[0]
    memory = py[3] / fg[3]
    for side, name in (("py", "Python"), ("fg", "flowgate")):
        med, lo, hi, mib = rows[side]
        extra = f" {speed:>8.1f}x {memory:>7.0f}x" if side == "fg" else ""
        print(f"{job:<10} {name:<9} {med:>15,.0f} {f'{lo:,.0f}..{hi:,.0f}':>21} {mib:>9.1f}{extra}")
    print(f"{'':<10} {sizes[job]}: throughput {speed:.1f}x Python (target >= {targets[job]:.0f}x: "
          f"{'met' if speed >= targets[job] else 'NOT met'}), peak memory 1/{memory:.0f} of "
          f"Python's (target <= 1/20: {'met' if memory >= 20 else 'NOT met'})")
print(f"\nmedians of {runs} interleaved run(s) each; items/s = lines/s or records/s")
EOF
exit "$status"
