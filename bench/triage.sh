#!/usr/bin/env bash
# Triage benchmark: a failure triage report over RECORDS (default 100,000) failed attempts in
# the report's day, with as many again in the seven days before it (the history that decides
# which signatures are new). Three ways, each a warm-up and three measured runs:
#  1. `cohort triage --failures FILE --stats`: the pure report (normalizing, classifying,
#     grouping, ordering) over records read from JSON lines; reading is timed apart.
#  2. The peer: the same grouping written the common way, regular expressions in the manner of
#     Sentry's message grouping, in Python (bench/triage_peer.py).
#  3. `cohort triage --data-dir DIR --stats`: the report as the service makes it, from a SQLite
#     store holding the same failures (the query joining attempts, jobs and tenants included).
# Target: the report over 100,000 failure records in under 2 s. Writes $RESULTS/triage.md
# (RESULTS: default bench/results) and the numbers (medians of the measured runs) in
# $RESULTS/triage.json.
#
#     bench/triage.sh                 # RECORDS=100000
#     RECORDS=10000 bench/triage.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RECORDS="${RECORDS:-100000}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
COHORT="$TARGET_DIR/release/cohort"
WORK="bench/data/triage"
RESULTS="${RESULTS:-bench/results}"
rm -rf "$WORK"
mkdir -p "$RESULTS" "$WORK"
say() { printf '\n== %s\n' "$*" >&2; }

say "building the release binary"
cargo build --release --bin cohort

END_MS=1795000000000  # 2026-11-18T11:06:40Z
FROM="$(date -u -d @$(( END_MS / 1000 - 86400 )) +%Y-%m-%dT%H:%M:%SZ)"
UNTIL="$(date -u -d @$(( END_MS / 1000 )) +%Y-%m-%dT%H:%M:%SZ)"

say "generating $RECORDS failure records in the day and $RECORDS before it"
python3 bench/triage_records.py "$RECORDS" "$WORK/failures.jsonl" "$END_MS"

say "a store with the same failures"
"$COHORT" serve --data-dir "$WORK/store" --listen 127.0.0.1:0 --workers 1 > "$WORK/serve.out" 2> "$WORK/serve.log" &
SERVE=$!
trap 'kill "$SERVE" 2>/dev/null || true' EXIT   # should the wait below fail
# Its line "cohort listening on …" says the store exists, migrations applied. Not a pipeline:
# once grep has the line, tail dies of SIGPIPE, and under pipefail that would end the script.
grep -q -m1 "listening" < <(timeout 60 tail -F "$WORK/serve.out" 2>/dev/null)
kill "$SERVE"; wait "$SERVE" || true
trap - EXIT
python3 bench/triage_records.py "$RECORDS" - "$END_MS" --sqlite "$WORK/store/cohort.db"

run() {
    local name="$1"; shift
    local out=""
    for run in warm-up 1 2 3; do
        LINE="$("$@" 2>&1 >/dev/null | tail -1)"
        echo "$name, run $run: $LINE" >&2
        printf '%s\t%s\t%s\n' "$name" "$run" "$LINE" >> "$WORK/runs.tsv"
        out="$out
| $name | $run | $LINE |"
    done
    printf '%s' "$out"
}

ROWS=""
ROWS="$ROWS$(run "cohort triage (records file)" "$COHORT" triage --failures "$WORK/failures.jsonl" --since "$FROM" --until "$UNTIL" --format json --stats)"
ROWS="$ROWS$(run "peer: Python regex grouping" python3 bench/triage_peer.py "$WORK/failures.jsonl" $(( END_MS - 86400000 )) "$END_MS")"
ROWS="$ROWS$(run "cohort triage (SQLite store)" "$COHORT" triage --data-dir "$WORK/store" --since "$FROM" --until "$UNTIL" --format json --stats)"

"$COHORT" triage --failures "$WORK/failures.jsonl" --since "$FROM" --until "$UNTIL" --format json > "$WORK/report.json"
SUMMARY="$(python3 - "$WORK/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["signatures"]
new = sum(1 for x in s if x["new"])
print(f"{r['failures']} failed attempts in the window, {len(s)} signatures, {new} new")
PY
)"

CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
cat > "$RESULTS/triage.md" <<MD
# Triage benchmark

\`bench/triage.sh\` (RECORDS=$RECORDS), $(date -u +%Y-%m-%d), on $(nproc) cores of $CPU, $(free -g | awk '/Mem:/ {print $2}') GiB.

$RECORDS failed attempts in the report's day and $RECORDS in the seven days before it (the
history that decides what is new), 5,000 tenants in six regions. Report: $SUMMARY.

| how | run | measured |
|---|---|---|$ROWS

Target: a report over 100,000 failure records in under 2 s. The records-file runs time the
report itself (normalizing, classifying and grouping all $((RECORDS * 2)) records, new and trend
against the history) apart from reading the file; the peer groups only the window's records
(no history, no classification); the store runs time the whole command as the service makes
the report: reading the window's $RECORDS attempts joined with their jobs and tenants and the
history's $RECORDS through sqlx, then the report.
MD
cat "$RESULTS/triage.md"

python3 - "$WORK/runs.tsv" "$RECORDS" "$RESULTS/triage.json" <<'PY'
import json, re, statistics, sys
runs, records, out = sys.argv[1:4]
seconds = {}
for line in open(runs):
    name, run, text = line.rstrip("\n").split("\t", 2)
    if run == "warm-up":
        continue
    if name.startswith("peer"):
        m = re.search(r"read in ([0-9.]+) s; report over \d+ made in ([0-9.]+) s", text)
        keys = ("peer_read_s", "peer_report_s")
    elif "store" in name:
        m = re.search(r"()report made from the store in ([0-9.]+) s", text)
        keys = (None, "store_s")
    else:
        m = re.search(r"read in ([0-9.]+) s; report made in ([0-9.]+) s", text)
        keys = ("cohort_read_s", "cohort_report_s")
    if not m:
        sys.exit("%s, run %s: no timing in %r" % (name, run, text))
    for key, value in zip(keys, m.groups()):
        if key:
            seconds.setdefault(key, []).append(float(value))
json.dump(dict({"records": int(records)}, **{k: statistics.median(v) for k, v in seconds.items()}), open(out, "w"), indent=1)
PY
