#!/usr/bin/env bash
# Scheduling-core benchmark: the time of one scheduling decision with 100,000 queued jobs
# across 5,000 tenants (2,000 decisions, each after one job ends). Writes
# $RESULTS/scheduler.md (RESULTS: default bench/results) and the numbers to $RESULTS/scheduler.json.
#
#     bench/scheduler.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RESULTS="${RESULTS:-bench/results}"
mkdir -p "$RESULTS"
cargo build --release -p cohort-control --example scheduler_bench >&2
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
{
    echo "# Scheduling-core benchmark"
    echo
    echo "- run: $(date -u +%Y-%m-%dT%H:%M:%SZ), \`bench/scheduler.sh\`, $(uname -m), $(nproc) cores"
    echo
    echo '```'
    "$TARGET_DIR/release/examples/scheduler_bench"
    echo '```'
} | tee "$RESULTS/scheduler.md"
python3 - "$RESULTS/scheduler.md" "$RESULTS/scheduler.json" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
m = re.search(r"(\d+) queued jobs across (\d+) tenants, (\d+) decisions: median ([0-9.]+) ms, p99 ([0-9.]+) ms, max ([0-9.]+) ms", text)
if not m:
    sys.exit("scheduler_bench printed no result line")
keys = ["queued_jobs", "tenants", "decisions", "median_ms", "p99_ms", "max_ms"]
json.dump(dict(zip(keys, [int(m.group(i)) for i in (1, 2, 3)] + [float(m.group(i)) for i in (4, 5, 6)])), open(sys.argv[2], "w"), indent=1)
PY
