#!/usr/bin/env bash
# Ballista benchmark: the retail benchmark's largest segment (multi_category_shoppers, the one
# with the most time and memory in bench/executor.sh) run by `cohort segment run` on the
# embedded executor and on a local Apache DataFusion Ballista cluster of one scheduler and two
# executors (`cohort ballista local`, loopback ports), side by side, with the overhead.
#
# Run it alone, from anywhere:
#     bench/ballista.sh                   # SCALE=1000000 individuals (about 50M rows)
#     SCALE=100000 bench/ballista.sh      # a quick check
# Environment: SCALE (default 1000000), SEGMENT (default multi_category_shoppers), REPEAT
# (timed runs per engine after one warm-up each, medians reported; default 3), THREADS
# (partitions of the embedded run and task slots in all of the cluster, split between its two
# executors; default 2), CARGO_TARGET_DIR (default target), COHORT (a cohort binary to use
# instead of building the release one).
# Writes $RESULTS/ballista.md and $RESULTS/ballista.json (RESULTS: default bench/results).
# Exit status 1 when the members differ.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SCALE="${SCALE:-1000000}"
SEGMENT="${SEGMENT:-multi_category_shoppers}"
REPEAT="${REPEAT:-3}"
THREADS="${THREADS:-2}"
SEED=7
AS_OF="2026-11-01T00:00:00Z"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BUILD=1
if [ -n "${COHORT:-}" ]; then BUILD=0; else COHORT="$TARGET_DIR/release/cohort"; fi
DATA="bench/data/retail-$SCALE"
RESULTS="${RESULTS:-bench/results}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cohort-ballista.XXXXXX")"
CLUSTER_PID=""
cleanup() {
    if [ -n "$CLUSTER_PID" ]; then
        kill "$CLUSTER_PID" 2>/dev/null || true
        wait "$CLUSTER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*" >&2; }

if [ "$BUILD" = 1 ]; then
    say "building the release binary"
    cargo build --release --bin cohort
fi

if [ ! -f "$DATA/model.json" ]; then
    say "generating retail data, scale $SCALE, into $DATA"
    "$COHORT" datagen --profile retail --scale "$SCALE" --seed "$SEED" --out "$DATA"
fi

SLOTS=$(( THREADS / 2 )); [ "$SLOTS" -ge 1 ] || SLOTS=1
say "starting a local Ballista cluster: one scheduler, two executors of $SLOTS task slots"
"$COHORT" ballista local --executors 2 --task-slots "$SLOTS" > "$WORK/cluster.out" 2> "$WORK/cluster.log" &
CLUSTER_PID=$!
for _ in $(seq 1 300); do
    [ -s "$WORK/cluster.out" ] && break
    kill -0 "$CLUSTER_PID" 2>/dev/null || { cat "$WORK/cluster.log" >&2; exit 1; }
    sleep 0.1
done
URL="$(head -n1 "$WORK/cluster.out")"
[ -n "$URL" ] || { echo "the cluster printed no URL" >&2; cat "$WORK/cluster.log" >&2; exit 1; }
say "cluster at $URL"

# run ENGINE N: one run; prints "seconds members rows_scanned peak_bytes".
run() {
    local engine=$1 n=$2 extra=()
    [ "$engine" = ballista ] && extra=(--ballista "$URL")
    "$COHORT" segment run --model "$DATA/model.json" --segment "$DATA/segments/$SEGMENT.json" --as-of "$AS_OF" \
        --partitions "$THREADS" --output "$WORK/$engine.$n.csv" --report "$WORK/$engine.$n.json" ${extra[@]+"${extra[@]}"} \
        2> "$WORK/$engine.$n.log" || { cat "$WORK/$engine.$n.log" >&2; return 1; }
    python3 - "$WORK/$engine.$n.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["elapsed_seconds"], r["members"], r["rows_scanned"], r["peak_memory_bytes"])
PY
}

: > "$WORK/times.tsv"
for engine in embedded ballista; do
    say "$engine: one warm-up run, then $REPEAT timed"
    run "$engine" warm > /dev/null
    for n in $(seq 1 "$REPEAT"); do
        line="$(run "$engine" "$n")"
        echo "  run $n: $line" >&2
        printf '%s\t%s\n' "$engine" "$line" >> "$WORK/times.tsv"
    done
done

SAME=1
cmp -s "$WORK/embedded.1.csv" "$WORK/ballista.1.csv" || SAME=0

mkdir -p "$RESULTS"
python3 - "$WORK/times.tsv" "$RESULTS" "$SCALE" "$SEGMENT" "$THREADS" "$SLOTS" "$REPEAT" "$SAME" "$(git rev-parse --short HEAD)" "$COHORT" <<'PY'
import json, statistics, sys
path, results, scale, segment, threads, slots, repeat, same, commit, binary = sys.argv[1:]
import os
profile = os.path.basename(os.path.dirname(binary))
build = ("release build" if profile == "release" else
         f"{profile} build: dependencies (DataFusion, Arrow, Ballista) optimized at opt-level 2, Cohort's own crates not")
runs = {"embedded": [], "ballista": []}
for line in open(path):
    engine, rest = line.rstrip("\n").split("\t")
    s, members, rows, peak = rest.split()
    runs[engine].append({"seconds": float(s), "members": int(members), "rows_scanned": int(rows), "peak_bytes": int(peak)})
med = {e: statistics.median(r["seconds"] for r in rs) for e, rs in runs.items()}
out = {
    "segment": segment, "scale": int(scale), "threads": int(threads), "executors": 2, "task_slots_per_executor": int(slots),
    "repeat": int(repeat), "commit": commit, "profile": profile,
    "embedded_s": med["embedded"], "ballista_s": med["ballista"],
    "overhead_s": med["ballista"] - med["embedded"], "ratio": med["ballista"] / med["embedded"],
    "members": runs["embedded"][0]["members"], "same_members": same == "1",
    "embedded_rows_scanned": runs["embedded"][0]["rows_scanned"], "ballista_rows_scanned": runs["ballista"][0]["rows_scanned"],
    "embedded_peak_bytes": max(r["peak_bytes"] for r in runs["embedded"]),
    "ballista_peak_bytes": max(r["peak_bytes"] for r in runs["ballista"]),
    "runs": runs,
}
json.dump(out, open(f"{results}/ballista.json", "w"), indent=2)
mib = lambda b: f"{b / 2**20:,.0f}"
md = f"""# Ballista: the largest retail segment, embedded and on a local cluster

`{segment}` over retail at scale {int(scale):,} (commit {commit}, {build}); medians of {repeat} runs after a
warm-up. Embedded: `cohort segment run --partitions {threads}`. Ballista: the same command with
`--ballista`, on `cohort ballista local --executors 2 --task-slots {slots}` (one scheduler, two
executors, loopback gRPC and Arrow Flight) on the same machine.

| engine | seconds (median) | members | rows scanned | peak memory MiB |
|---|---:|---:|---:|---:|
| embedded | {med['embedded']:.3f} | {out['members']:,} | {out['embedded_rows_scanned']:,} | {mib(out['embedded_peak_bytes'])} |
| Ballista | {med['ballista']:.3f} | {runs['ballista'][0]['members']:,} | {out['ballista_rows_scanned']:,} | {mib(out['ballista_peak_bytes'])} |

Overhead of the cluster: {out['overhead_s']:+.3f} s, {out['ratio']:.2f}× the embedded time.
Members {'identical' if out['same_members'] else '**DIFFER**'}.
Peak memory: embedded, the run's pool high-water mark; Ballista, the largest stage's operator
memory as the scheduler reports it (summed over its tasks).
"""
open(f"{results}/ballista.md", "w").write(md)
print(md)
PY
[ "$SAME" = 1 ] || { echo "members differ between the engines" >&2; exit 1; }
