#!/usr/bin/env bash
# Sources in object storage and Iceberg tables against local Parquet: every retail segment
# through `cohort segment run`, the same rows read as Parquet from local disk, as the same files
# from an S3-compatible server (moto's, started here on a loopback port), and as Iceberg tables
# PyIceberg writes (kept in bench/data/retail-$SCALE-iceberg), taking turns. Members must agree.
#
#     bench/lakehouse.sh                 # SCALE=100000 individuals
#     SCALE=1000000 bench/lakehouse.sh
# Environment: SCALE (100000), REPEAT (timed runs from each place per segment, after a warm-up
# of each; 3), THREADS (partitions, 2), CARGO_TARGET_DIR (target), RESULTS (bench/results),
# COHORT_BIN (a cohort binary to measure instead of building the release one; the results say
# which was measured).
# Builds the release binary, generates bench/data/retail-$SCALE (kept), installs moto's server
# if missing, writes $RESULTS/lakehouse.md and $RESULTS/lakehouse.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SCALE="${SCALE:-100000}"
REPEAT="${REPEAT:-3}"
THREADS="${THREADS:-2}"
RESULTS="${RESULTS:-bench/results}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
COHORT="${COHORT_BIN:-$TARGET_DIR/release/cohort}"
PROFILE="${COHORT_BIN:+the binary COHORT_BIN names ($COHORT_BIN)}"
PROFILE="${PROFILE:-release}"
DATA="bench/data/retail-$SCALE"

if [ "${SKIP_BUILD:-}" != 1 ] && [ -z "${COHORT_BIN:-}" ]; then
    echo "== building the release binary" >&2
    cargo build --release
fi
if [ ! -f "$DATA/model.json" ]; then
    echo "== generating retail data, scale $SCALE, into $DATA" >&2
    "$COHORT" datagen --profile retail --scale "$SCALE" --seed 7 --out "$DATA"
fi
if ! command -v moto_server >/dev/null || ! python3 -c 'import pyiceberg, boto3' 2>/dev/null; then
    echo "== installing moto's S3 server and PyIceberg" >&2
    python3 -m pip install --quiet "moto[server]" "pyiceberg[sql-sqlite,pyarrow]"
fi
exec python3 bench/lakehouse.py --cohort "$COHORT" --profile "$PROFILE" --data "$DATA" --repeat "$REPEAT" --partitions "$THREADS" --results "$RESULTS" --scale "$SCALE"
