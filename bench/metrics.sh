#!/usr/bin/env bash
# /metrics scrape cost with 5,000 tenants (bench/metrics.py): a release `cohort serve`, TENANTS
# tenants each with one finished job, SCRAPES timed scrapes; bounded per-tenant series (the
# default, top 50 + other) beside unbounded ones (the peer). Target: under 1 MB and 50 ms.
# Writes $RESULTS/metrics.md (RESULTS: default bench/results) and the numbers in
# $RESULTS/metrics.json.
#
#     bench/metrics.sh                      # TENANTS=5000 SCRAPES=200
#     TENANTS=500 SCRAPES=50 bench/metrics.sh   # quick
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TENANTS="${TENANTS:-5000}"
SCRAPES="${SCRAPES:-200}"
RESULTS="${RESULTS:-bench/results}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
COHORT="$TARGET_DIR/release/cohort"
mkdir -p "$RESULTS" bench/data

printf '\n== building the release binary\n' >&2
cargo build --release --bin cohort

printf '\n== %s tenants, %s scrapes, bounded and unbounded\n' "$TENANTS" "$SCRAPES" >&2
TABLE="$(python3 bench/metrics.py --cohort "$COHORT" --work bench/data/metrics --tenants "$TENANTS" --scrapes "$SCRAPES" --json "$RESULTS/metrics.json")"
echo "$TABLE"
{
    echo "# /metrics with $TENANTS tenants"
    echo
    echo "Machine: $(nproc) cores, $(uname -m); release build; $(date -u +%Y-%m-%d). Command: \`bench/metrics.sh\`"
    echo "(TENANTS=$TENANTS SCRAPES=$SCRAPES). Scrapes are timed by the client over loopback, one at a time,"
    echo "after every tenant's job finished. Target: a scrape under 1 MB and 50 ms."
    echo
    echo "$TABLE"
} >"$RESULTS/metrics.md"
echo "wrote $RESULTS/metrics.md and $RESULTS/metrics.json" >&2
