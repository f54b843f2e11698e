#!/usr/bin/env bash
# Scheduling-core benchmark: the time of one scheduling decision with 100,000 queued jobs
# across 5,000 tenants (2,000 decisions, each after one job ends). Writes
# bench/results/scheduler.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
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
} | tee bench/results/scheduler.md
