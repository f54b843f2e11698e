#!/usr/bin/env bash
# Estimator benchmark: records a trace of real runs (bench/estimator_trace.py: datagen tenants
# of two profiles and four sizes each, their data growing, shrinking and jumping between steps,
# every segment run once a step through `cohort serve`), then replays it with
# `cohort estimator eval`: our estimator against a static grant and an Autopilot-style
# decayed maximum + 15%, same trace, same run. Writes $RESULTS/estimator.md (RESULTS: default
# bench/results), the numbers in $RESULTS/estimator.json, and keeps a recorded trace in
# $RESULTS/estimator-trace.jsonl.
#
#     bench/estimator.sh                 # about 2,200 runs
#     RUNS=300 bench/estimator.sh        # a quick check
#     TRACE=bench/results/estimator-trace.jsonl bench/estimator.sh   # evaluate a kept trace again
# Environment: RUNS (2200), SEED (7), COVERAGE (0.995), MIN_GRANT (the service's default, 64KiB),
# STATIC_GRANT (1GiB), TRACE (skip recording; evaluate this file).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${RUNS:-2200}"
SEED="${SEED:-7}"
COVERAGE="${COVERAGE:-0.995}"
MIN_GRANT="${MIN_GRANT:-64KiB}"
STATIC_GRANT="${STATIC_GRANT:-1GiB}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
COHORT="$TARGET_DIR/release/cohort"
RESULTS="${RESULTS:-bench/results}"
mkdir -p "$RESULTS"
say() { printf '\n== %s\n' "$*" >&2; }

say "building the release binary"
cargo build --release --bin cohort

if [ -z "${TRACE:-}" ]; then
    TRACE="$RESULTS/estimator-trace.jsonl"
    say "recording a trace of about $RUNS runs"
    python3 bench/estimator_trace.py --cohort "$COHORT" --work bench/data/estimator --runs "$RUNS" --seed "$SEED" --out "$TRACE"
fi

say "replaying $TRACE"
EVAL=(estimator eval --trace "$TRACE" --coverage "$COVERAGE" --min-grant "$MIN_GRANT" --static-grant "$STATIC_GRANT")
RESULT="$("$COHORT" "${EVAL[@]}")"
echo "$RESULT"
# The same replay as JSON (it is deterministic) for bench/run-all.
"$COHORT" "${EVAL[@]}" --json > "$RESULTS/estimator.json"
{
    echo "# Estimator: replay of a recorded trace"
    echo
    echo "\`bench/estimator.sh\` on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); trace \`$TRACE\`"
    echo "(coverage $COVERAGE, min grant $MIN_GRANT, static grant $STATIC_GRANT)."
    echo
    echo "$RESULT"
} > "$RESULTS/estimator.md"
