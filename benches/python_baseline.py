#!/usr/bin/env python3
"""The classic Python recipe, measured: generator -> chunks -> multiprocessing.Pool.map.

    python3 benches/python_baseline.py wordcount FILE [--workers 2] [--chunk 4096]
    python3 benches/python_baseline.py records FILE [--workers 2] [--chunk 4096] [--rounds 4]

Standard library only (Python 3.11). Both jobs read a file written by
`gen_corpus` (see benches/run_recipe.sh), the same file the flowgate side reads.

wordcount: the file's lines, generated one at a time, cut into chunks of lines;
    Pool.map(count_chunk, chunks) where count_chunk counts words with str.split and
    collections.Counter; the Counters are merged and the top 20 printed in the format of
    examples/wordcount.rs.
records: CSV records "id,a,b,c,d"; process_data parses a record and computes a score
    in plain Python (ROUNDS rounds of 13 arithmetic steps, 4 unless --rounds says
    otherwise), the same steps as benches/src/bin/records.rs; each chunk reports its
    record count, the sum of its scores truncated to whole numbers (a checksum) and its
    10 best records; the parent merges them.

Pool.map turns its whole input into a list before it hands out any work: every line is
in the parent's memory at once. That is the recipe being measured, so it is kept.

Timing: from just before the pool is created (the fork of the workers included) to the
merged result; generating the input file is not timed.

Peak memory: the parent's peak resident set (getrusage RUSAGE_SELF ru_maxrss, KiB on
Linux) plus every worker's own peak. A worker's peak is its VmHWM, read from
/proc/<pid>/status after Pool.map has returned and before the pool is closed, for every
process in multiprocessing.active_children(); where /proc is missing, the largest
ru_maxrss each worker reported with its results is used instead. After the pool is
joined, getrusage(RUSAGE_CHILDREN).ru_maxrss (on Linux the largest single child, not a
sum) is printed as a check. Pages a forked worker still shares with the parent are
counted in both, as in any sum of resident sets.
"""

import argparse
import collections
import functools
import heapq
import itertools
import multiprocessing
import os
import resource
import sys
import time

TOP_WORDS = 20
TOP_RECORDS = 10
ROUNDS = 4


def read_lines(path):
    """The file's lines, one at a time (the generator of the recipe)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield line


def chunked(iterable, size):
    """Lists of up to `size` items, one at a time."""
    it = iter(iterable)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def own_peak_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def count_chunk(lines):
    counts = collections.Counter()
    for line in lines:
        counts.update(line.split())
    return len(lines), counts, os.getpid(), own_peak_kib()


def process_data(line, rounds=ROUNDS):
    """Parses one record and scores it: (id, score)."""
    fields = line.split(",")
    rid = int(fields[0])
    a = int(fields[1])
    b = int(fields[2])
    c = float(fields[3])
    d = float(fields[4])
    x, y = a, b
    score = 0.0
    for k in range(rounds):
        x = (x * 1103515245 + 12345 + k) & 0x7FFFFFFF
        y = (y * 31 + (x >> 16)) % 65521
        score += (x % 1000) * c - y * d
    return rid, score / rounds


def best(entries):
    """The best (score, id) entries: higher score first, then lower id."""
    return heapq.nsmallest(TOP_RECORDS, entries, key=lambda e: (-e[0], e[1]))


def process_chunk(lines, rounds=ROUNDS):
    checksum = 0
    scored = []
    for line in lines:
        rid, score = process_data(line, rounds)
        checksum += int(score)
        scored.append((score, rid))
    return len(lines), checksum, best(scored), os.getpid(), own_peak_kib()


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def run(job, path, workers, chunk, rounds):
    """Runs the recipe; returns (items, seconds, result, worker peaks in KiB)."""
    if job == "wordcount":
        func = count_chunk
    elif rounds == ROUNDS:
        func = process_chunk
    else:
        func = functools.partial(process_chunk, rounds=rounds)
    started = time.perf_counter()
    with multiprocessing.Pool(workers) as pool:
        results = pool.map(func, chunked(read_lines(path), chunk))
        # The workers are idle now, still alive: read their lifetime peaks.
        peaks = {p.pid: vm_hwm_kib(p.pid) for p in multiprocessing.active_children()}
        if not peaks or None in peaks.values():
            peaks = {}
            for r in results:
                pid, kib = r[-2], r[-1]
                peaks[pid] = max(peaks.get(pid, 0), kib)
        if job == "wordcount":
            total = collections.Counter()
            items = 0
            for n, counts, _pid, _kib in results:
                items += n
                total.update(counts)
            top = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_WORDS]
            result = (total, top)
        else:
            items = 0
            checksum = 0
            top = []
            for n, part_sum, part_top, _pid, _kib in results:
                items += n
                checksum += part_sum
                top = best(top + part_top)
            result = (checksum, top)
        elapsed = time.perf_counter() - started
        pool.close()
        pool.join()
    return items, elapsed, result, peaks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=["wordcount", "records"])
    parser.add_argument("path")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help="records: rounds of arithmetic per record")
    args = parser.parse_args()

    items, elapsed, result, peaks = run(args.job, args.path, args.workers, args.chunk, args.rounds)

    if args.job == "wordcount":
        total, top = result
        print(f"top {TOP_WORDS} of {len(total)} distinct words:")
        for word, n in top:
            print(f"{n:>12}  {word}")
        words = sum(total.values())
        rate = items / max(elapsed, 1e-9)
        print(f"{items} lines, {words} words in {elapsed:.2f} s: "
              f"{rate:.0f} lines/s on {args.workers} workers")
    else:
        checksum, top = result
        print(f"records: {items}")
        print(f"checksum: {checksum}")
        print(f"top {TOP_RECORDS}:")
        for score, rid in top:
            print(f"{rid:>12} {score!r}")
        rate = items / max(elapsed, 1e-9)
        print(f"{items} records in {elapsed:.2f} s: "
              f"{rate:.0f} records/s on {args.workers} workers")

    parent_kib = own_peak_kib()
    children_max_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    worker_kib = sorted(peaks.values(), reverse=True)
    total_kib = parent_kib + sum(worker_kib)
    workers_mib = ", ".join(f"{k / 1024:.1f}" for k in worker_kib)
    print(f"parent peak {parent_kib / 1024:.1f} MiB; workers' peaks [{workers_mib}] MiB "
          f"(RUSAGE_CHILDREN max {children_max_kib / 1024:.1f} MiB)")
    print(f"peak memory (parent + workers): {total_kib / 1024:.1f} MiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
