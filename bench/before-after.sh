#!/usr/bin/env bash
# Two builds of Cohort side by side in one sitting: the executor, the scheduling core and the
# alert replay, each run by the "before" build and the "after" build taking turns (before,
# after, before, after, ...), so that whatever else the machine does falls on both. Made for a
# change that must not move run time (a reshaping of the code, a build-profile change): each
# figure of the after build is judged against the before build's, within TOLERANCE (10%).
#
#     bench/before-after.sh BEFORE_TARGET AFTER_TARGET
#
# BEFORE_TARGET and AFTER_TARGET are Cargo target directories holding a release build:
# release/cohort (`cargo build --release`) and, for the scheduler, release/examples/
# scheduler_bench (without it the scheduler is not compared, and the results say so). The
# script builds nothing.
#
#  - executor: every retail segment (SCALE individuals, default 1000000, seed 7) through
#    `cohort segment run --partitions 2`; REPEAT (5) turns after a warm-up of each; the figure is
#    the sum over segments of each segment's median `elapsed_seconds`.
#  - scheduler: `scheduler_bench` (100,000 queued jobs, 5,000 tenants, 2,000 decisions), REPEAT
#    turns; the figures are the median over turns of its median and of its p99 decision time.
#  - alert replay: EVENTS (5000000) generated outcomes, as bench/alerts.sh makes them, through
#    `taskset -c 0 cohort alerts replay --stats`, REPEAT turns after a warm-up of each; the
#    figures are the median evaluator rate and the median whole-replay rate (events/s).
#
# Writes $RESULTS/before-after.md and $RESULTS/before-after.json (RESULTS: bench/results),
# with LABEL_BEFORE and LABEL_AFTER (e.g. commit ids) naming the two builds. Exit status 1 when
# an after figure is outside the tolerance, or when the two builds find different members.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ $# -ne 2 ]; then
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
abs() { case "$1" in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac; }
BEFORE="$(abs "$1")"
AFTER="$(abs "$2")"
SCALE="${SCALE:-1000000}"
REPEAT="${REPEAT:-5}"
EVENTS="${EVENTS:-5000000}"
TOLERANCE="${TOLERANCE:-0.10}"
RESULTS="${RESULTS:-bench/results}"
LABEL_BEFORE="${LABEL_BEFORE:-before}"
LABEL_AFTER="${LABEL_AFTER:-after}"
AS_OF="2026-11-01T00:00:00Z"
DATA="bench/data/retail-$SCALE"
EVENTS_FILE="bench/data/alerts/events-$EVENTS.jsonl"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cohort-before-after.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
say() { printf '\n== %s\n' "$*" >&2; }

SCHEDULER=1
for side in "$BEFORE" "$AFTER"; do
    if [ ! -x "$side/release/cohort" ]; then
        echo "no $side/release/cohort: build it with \`cargo build --release\`" >&2
        exit 2
    fi
    if [ ! -x "$side/release/examples/scheduler_bench" ]; then
        echo "no $side/release/examples/scheduler_bench: the scheduler is not compared" >&2
        SCHEDULER=0
    fi
done
mkdir -p "$RESULTS" bench/data/alerts

if [ ! -f "$DATA/model.json" ]; then
    say "generating retail data, scale $SCALE, into $DATA"
    "$AFTER/release/cohort" datagen --profile retail --scale "$SCALE" --seed 7 --out "$DATA"
fi
if [ ! -f "$EVENTS_FILE" ]; then
    say "generating $EVENTS outcomes into $EVENTS_FILE"
    python3 bench/alerts_events.py "$EVENTS" "$EVENTS_FILE"
fi

# One line per measurement: "bench side key value".
MEASURED="$WORK/measured.tsv"
: > "$MEASURED"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$MEASURED"; }

# segment_run SIDE_DIR SEGMENT REPORT: prints "elapsed members".
segment_run() {
    "$1/release/cohort" segment run --model "$DATA/model.json" --segment "$2" --as-of "$AS_OF" --partitions 2 \
        --report "$3" > /dev/null
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["elapsed_seconds"], r["members"])' "$3"
}

say "executor: every retail segment, $REPEAT turns each after a warm-up"
for segment in "$DATA"/segments/*.json; do
    name="$(basename "$segment" .json)"
    for turn in warmup $(seq 1 "$REPEAT"); do
        for side in before after; do
            dir="$BEFORE"; [ "$side" = after ] && dir="$AFTER"
            read -r elapsed members < <(segment_run "$dir" "$segment" "$WORK/report.json")
            if [ "$turn" != warmup ]; then
                record executor "$side" "$name" "$elapsed"
                record members "$side" "$name" "$members"
            fi
        done
    done
    echo "$name: $(awk -F'\t' -v n="$name" '$1=="executor" && $3==n {printf "%s=%s ", $2, $4}' "$MEASURED")" >&2
done

[ "$SCHEDULER" = 1 ] && say "scheduler: $REPEAT turns"
for turn in $(seq 1 "$REPEAT"); do
    [ "$SCHEDULER" = 1 ] || break
    for side in before after; do
        dir="$BEFORE"; [ "$side" = after ] && dir="$AFTER"
        line="$("$dir/release/examples/scheduler_bench" | grep 'decisions: median')"
        echo "$side: $line" >&2
        median_ms="$(sed -E 's/.*median ([0-9.]+) ms.*/\1/' <<<"$line")"
        p99_ms="$(sed -E 's/.*p99 ([0-9.]+) ms.*/\1/' <<<"$line")"
        record scheduler "$side" median_ms "$median_ms"
        record scheduler "$side" p99_ms "$p99_ms"
    done
done

say "alert replay: $EVENTS outcomes on one core, $REPEAT turns after a warm-up"
cat "$EVENTS_FILE" > /dev/null
for turn in warmup $(seq 1 "$REPEAT"); do
    for side in before after; do
        dir="$BEFORE"; [ "$side" = after ] && dir="$AFTER"
        line="$(taskset -c 0 "$dir/release/cohort" alerts replay --events "$EVENTS_FILE" --stats 2>&1 > "$WORK/transitions.$side.jsonl")"
        echo "$side $turn: $line" >&2
        if [ "$turn" != warmup ]; then
            record replay "$side" evaluate_events_per_s "$(sed -E 's/.*\(([0-9]+) events\/s\).*/\1/' <<<"$line")"
            record replay "$side" whole_events_per_s "$(sed -E 's/.*whole replay ([0-9]+) events\/s.*/\1/' <<<"$line")"
        fi
    done
done
if ! cmp -s "$WORK/transitions.before.jsonl" "$WORK/transitions.after.jsonl"; then
    echo "the two builds' replays wrote different transitions" >&2
    record members differ transitions 1
fi

python3 - "$MEASURED" "$RESULTS/before-after.md" "$RESULTS/before-after.json" "$TOLERANCE" "$LABEL_BEFORE" "$LABEL_AFTER" \
    "$SCALE" "$REPEAT" "$EVENTS" <<'PY'
import collections, json, statistics, sys, datetime, os
measured, md_path, json_path, tolerance, label_before, label_after, scale, repeat, events = sys.argv[1:]
tolerance = float(tolerance)
values = collections.defaultdict(list)
for line in open(measured):
    bench, side, key, value = line.rstrip("\n").split("\t")
    values[(bench, side, key)].append(float(value))
med = lambda bench, side, key: statistics.median(values[(bench, side, key)])
segments = sorted({key for (bench, _, key) in values if bench == "executor"})
members_differ = [s for s in segments if values[("members", "before", s)] != values[("members", "after", s)]]
members_differ += [k for (b, side, k) in values if b == "members" and side == "differ"]

rows = []  # (benchmark, figure, before, after, better, unit)
rows.append(("executor", f"sum of {len(segments)} segments' median seconds",
             sum(med("executor", "before", s) for s in segments), sum(med("executor", "after", s) for s in segments), "lower", "s"))
if values[("scheduler", "before", "median_ms")]:
    rows.append(("scheduler", "median decision (median of turns)", med("scheduler", "before", "median_ms"), med("scheduler", "after", "median_ms"), "lower", "ms"))
    rows.append(("scheduler", "p99 decision (median of turns)", med("scheduler", "before", "p99_ms"), med("scheduler", "after", "p99_ms"), "lower", "ms"))
rows.append(("alert replay", "evaluator rate (median)", med("replay", "before", "evaluate_events_per_s"), med("replay", "after", "evaluate_events_per_s"), "higher", "events/s"))
rows.append(("alert replay", "whole replay rate (median)", med("replay", "before", "whole_events_per_s"), med("replay", "after", "whole_events_per_s"), "higher", "events/s"))

def holds(before, after, better):
    change = (after - before) / before if before else 0.0
    worse = change if better == "lower" else -change
    return change, worse <= tolerance

out = []
out.append("# Before and after, in one sitting")
out.append("")
out.append(f"- run: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}, `bench/before-after.sh`, {os.uname().machine}, {os.cpu_count()} cores")
out.append(f"- before: {label_before}; after: {label_after}; the two builds take turns, {repeat} measured turns each (after a warm-up)")
out.append(f"- executor: retail SCALE={scale}, seed 7, `segment run --partitions 2`; scheduler: `scheduler_bench`; alert replay: {events} outcomes, `taskset -c 0 cohort alerts replay --stats`")
out.append(f"- judged: each after figure no more than {tolerance:.0%} worse than its before figure")
out.append("")
out.append("| benchmark | figure | before | after | change | holds |")
out.append("|---|---|---:|---:|---:|---|")
results = []
all_hold = not members_differ
for bench, figure, before, after, better, unit in rows:
    change, ok = holds(before, after, better)
    all_hold &= ok
    fmt = (lambda v: f"{v:,.0f}") if unit == "events/s" else (lambda v: f"{v:.3f}")
    out.append(f"| {bench} | {figure} | {fmt(before)} {unit} | {fmt(after)} {unit} | {change:+.1%} | {'yes' if ok else 'NO'} |")
    results.append({"benchmark": bench, "figure": figure, "unit": unit, "better": better, "before": before, "after": after, "change": change, "holds": ok})
if not values[("scheduler", "before", "median_ms")]:
    out.append("| scheduler | not compared: a build lacked `release/examples/scheduler_bench` | | | | |")
out.append("")
out.append("Per segment (median seconds):")
out.append("")
out.append("| segment | before | after | change |")
out.append("|---|---:|---:|---:|")
for s in segments:
    b, a = med("executor", "before", s), med("executor", "after", s)
    out.append(f"| {s} | {b:.3f} | {a:.3f} | {(a - b) / b:+.1%} |")
out.append("")
out.append("Members and transitions: " + ("the same in both builds." if not members_differ else "DIFFER: " + ", ".join(members_differ)))
out.append("")
out.append(("All figures hold." if all_hold else "NOT all figures hold."))
open(md_path, "w").write("\n".join(out) + "\n")
json.dump({"before": label_before, "after": label_after, "tolerance": tolerance, "results": results,
           "members_differ": members_differ, "all_hold": all_hold}, open(json_path, "w"), indent=1)
print("\n".join(out))
sys.exit(0 if all_hold else 1)
PY
