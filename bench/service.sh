#!/usr/bin/env bash
# Service benchmark: JOBS small segment jobs pushed through a running `cohort serve`. The
# headline is the case users have: every job at its own as-of, so every job executes, on SQLite
# and on PostgreSQL. Then the same with every job at one as-of, where jobs queued together share
# one execution (the executions that ran are counted). Same machine, same run. Prints jobs per
# second end to end (first submission to last job final) and submission latency p50/p99, and
# writes the table to $RESULTS/service.md (RESULTS: default bench/results) and the numbers to
# $RESULTS/service.json.
#
#     bench/service.sh                     # 10,000 jobs over 4 small retail tenants
#     JOBS=2000 bench/service.sh           # a quick check
# Environment: JOBS (10000), TENANTS (4), SCALE (individuals per tenant, 100), WORKERS
# (executor slots, default: cores), CONCURRENCY (submissions in flight, 32),
# DATABASE_URL (PostgreSQL server to create a scratch database on,
# postgres://postgres@127.0.0.1:5432/test; set it empty to skip PostgreSQL).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
JOBS="${JOBS:-10000}"
TENANTS="${TENANTS:-4}"
SCALE="${SCALE:-100}"
WORKERS="${WORKERS:-$(nproc)}"
CONCURRENCY="${CONCURRENCY:-32}"
RESULTS="${RESULTS:-bench/results}"
DATABASE_URL="${DATABASE_URL-postgres://postgres@127.0.0.1:5432/test}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
# The load generator's build (another workspace) goes to the same directory.
export CARGO_TARGET_DIR="$TARGET_DIR"
# COHORT names a server binary to measure instead of building the release one (the results say which).
BUILT_COHORT="${COHORT:-}"
COHORT="${COHORT:-$TARGET_DIR/release/cohort}"
BENCH="$TARGET_DIR/release/service_bench"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cohort-service-bench.XXXXXX")"
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*" >&2; }

mkdir -p "$RESULTS"
say "building the release binary and the load generator"
# The load generator is a crate of its own (bench/loadgen): the server measured is the
# `cargo build --release --bin cohort` one, and the generator's build rebuilds nothing of it.
if [ -z "$BUILT_COHORT" ]; then
    cargo build --release --bin cohort
fi
cargo build --release --manifest-path bench/loadgen/Cargo.toml

say "generating $TENANTS tenants of $SCALE individuals"
for i in $(seq 1 "$TENANTS"); do
    "$COHORT" datagen --profile retail --scale "$SCALE" --seed "$i" --out "$WORK/data/t$i" 2>/dev/null
done

ADMIN="bench-admin-token-$(date +%s)"
ROWS=()
run_one() {
    local label="$1" url="$2" dir="$WORK/serve-$1" extra=("${@:3}")
    mkdir -p "$dir"
    mkfifo "$dir/stdout"
    COHORT_ADMIN_TOKEN="$ADMIN" COHORT_LOG=warn "$COHORT" serve --listen 127.0.0.1:0 --data-dir "$dir" \
        --database-url "$url" --workers "$WORKERS" >"$dir/stdout" 2>"$dir/stderr" &
    SERVER_PID=$!
    # The server prints its address once it listens: read it from the pipe as it comes.
    local base="" line
    exec 3<"$dir/stdout"
    while IFS= read -r line <&3; do
        case "$line" in "cohort listening on "*) base="${line#cohort listening on }"; break ;; esac
    done
    [ -n "$base" ] || { cat "$dir/stderr" >&2; exit 1; }
    say "$label: $JOBS jobs through $base"
    ROWS+=("$("$BENCH" --base "$base" --admin "$ADMIN" --data "$WORK/data" --jobs "$JOBS" --concurrency "$CONCURRENCY" --label "$label" "${extra[@]}")")
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
    exec 3<&-
    SERVER_PID=""
}

# The headline: each job at its own as-of, nothing to share, every job runs.
run_one sqlite "sqlite://$WORK/serve-sqlite/cohort.db" --as-of distinct
if [ -n "$DATABASE_URL" ]; then
    DB="cohort_bench_$$"
    psql "$DATABASE_URL" -qc "CREATE DATABASE $DB" >/dev/null
    run_one postgres "${DATABASE_URL%/*}/$DB" --as-of distinct
    psql "$DATABASE_URL" -qc "DROP DATABASE $DB WITH (FORCE)" >/dev/null || true
fi
# Its peer: every job at one as-of, so jobs queued together share one execution.
run_one sqlite-shared "sqlite://$WORK/serve-sqlite-shared/cohort.db"
if [ -n "$DATABASE_URL" ]; then
    DB="cohort_bench_shared_$$"
    psql "$DATABASE_URL" -qc "CREATE DATABASE $DB" >/dev/null
    run_one postgres-shared "${DATABASE_URL%/*}/$DB"
    psql "$DATABASE_URL" -qc "DROP DATABASE $DB WITH (FORCE)" >/dev/null || true
fi

{
    echo "# Service benchmark: jobs through \`cohort serve\`"
    echo
    echo "- run: $(date -u +%Y-%m-%dT%H:%M:%SZ), \`bench/service.sh\`, JOBS=$JOBS, TENANTS=$TENANTS (retail, $SCALE individuals each), WORKERS=$WORKERS, CONCURRENCY=$CONCURRENCY"
    echo "- machine: $(uname -m), $(nproc) cores; load generator on the same machine; server: ${BUILT_COHORT:-the release build}"
    echo "- end to end: first submission to the last job final (the service's own counts); latency: each POST .../runs"
    echo "- sqlite and postgres (the headline): each job asks for its own instant, so every job executes; sqlite-shared and postgres-shared: every job asks for its tenant's segment as of one instant, so jobs queued together share one execution (they ride on it)"
    echo "- executions: attempts that ran the executor (the service's own count, cohort_job_duration_seconds_count)"
    echo
    echo "| store | jobs | tenants | seconds | jobs/s | submit p50 ms | submit p99 ms | submitting s | succeeded | failed | executions |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do echo "$row"; done
    echo
    echo "Target: at least 500 jobs/s end to end on this 2-core machine, judged on the headline rows (every job executes)."
} | tee "$RESULTS/service.md"

# The rows again, as JSON for bench/run-all.
printf '%s\n' "${ROWS[@]}" | python3 -c '
import json, sys
keys = ["store", "jobs", "tenants", "seconds", "jobs_per_second", "submit_p50_ms", "submit_p99_ms", "submitting_seconds", "succeeded", "failed", "executions"]
rows = {}
for line in sys.stdin:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == len(keys):
        row = dict(zip(keys, [cells[0]] + [float(c) for c in cells[1:]]))
        rows[row["store"]] = row
json.dump({"jobs": int(sys.argv[1]), "concurrency": int(sys.argv[2]), "workers": int(sys.argv[3]), "stores": rows}, open(sys.argv[4], "w"), indent=1)
' "$JOBS" "$CONCURRENCY" "$WORKERS" "$RESULTS/service.json"
