#!/usr/bin/env bash
# Executor benchmark: every retail segment run by Cohort (`cohort segment run`) and by DuckDB
# (the same segment hand-written as SQL, bench/sql/retail/<segment>.sql) on the same Parquet
# files, then `cohort segment validate` on the 6,000-object wide model.
#
# Run it alone, from anywhere:
#     bench/executor.sh                   # SCALE=1000000 individuals (about 50M rows)
#     SCALE=100000 bench/executor.sh      # a quick check
# Environment: SCALE (default 1000000), CARGO_TARGET_DIR (default target), THREADS (DuckDB
# threads and Cohort partitions, default 2), REPEAT (timed runs of each engine per segment,
# after one warm-up run each; medians are reported; default 3), MEMORY_LIMIT (passed to cohort as --memory-limit,
# e.g. 4GiB; unlimited when unset — mind that multi_category_shoppers needs many GiB at 1M).
# It builds the release binary, generates bench/data/retail-$SCALE and bench/data/wide (kept
# between runs), installs DuckDB into bench/.venv, prints a table and writes it as Markdown to
# $RESULTS/executor.md (RESULTS: default bench/results), with the numbers bench/run-all reads in
# $RESULTS/executor.json. Exit status 0 even when member counts differ (they are flagged).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SCALE="${SCALE:-1000000}"
THREADS="${THREADS:-2}"
REPEAT="${REPEAT:-3}"
MEMORY_LIMIT="${MEMORY_LIMIT:-}"
SEED=7
AS_OF="2026-11-01T00:00:00Z"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
COHORT="$TARGET_DIR/release/cohort"
DATA="bench/data/retail-$SCALE"
WIDE="bench/data/wide"
VENV="bench/.venv"
RESULTS="${RESULTS:-bench/results}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cohort-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

say() { printf '\n== %s\n' "$*" >&2; }

say "building the release binary"
cargo build --release

if [ ! -f "$DATA/model.json" ]; then
    say "generating retail data, scale $SCALE, into $DATA"
    "$COHORT" datagen --profile retail --scale "$SCALE" --seed "$SEED" --out "$DATA"
fi
if [ ! -f "$WIDE/model.json" ]; then
    say "generating the wide model into $WIDE"
    "$COHORT" datagen --profile wide --seed "$SEED" --out "$WIDE"
fi

if [ ! -x /usr/bin/time ]; then
    say "installing GNU time (Debian package time)"
    if [ "$(id -u)" -eq 0 ]; then apt-get install -y time >&2; else sudo apt-get install -y time >&2; fi
fi

if ! "$VENV/bin/python" -c 'import duckdb' 2>/dev/null; then
    say "installing DuckDB for Python into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet duckdb
fi
DUCKDB_VERSION="$("$VENV/bin/python" -c 'import duckdb; print(duckdb.__version__)')"

# json_field FILE KEY: one top-level field of a JSON file.
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

limit_args=()
if [ -n "$MEMORY_LIMIT" ]; then limit_args=(--memory-limit "$MEMORY_LIMIT"); fi

ROWS="$WORK/rows.tsv"
: > "$ROWS"
NOTES="$WORK/notes.txt"
: > "$NOTES"

# run_cohort NAME SEGMENT RUN: one timed cohort run; prints "seconds pool_bytes members plan
# rows_scanned rss_kib" (or nothing when it failed, with a note).
run_cohort() {
    local name=$1 segment=$2 run=$3 report="$WORK/$1.report.$3.json"
    if /usr/bin/time -f '%M' -o "$WORK/$name.rss" \
        "$COHORT" segment run --model "$DATA/model.json" --segment "$segment" --as-of "$AS_OF" \
        --partitions "$THREADS" ${limit_args[@]+"${limit_args[@]}"} --report "$report" > "$WORK/$name.cohort.keys" 2> "$WORK/$name.cohort.err"; then
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["elapsed_seconds"], r["peak_memory_bytes"], r["members"], r["plan_mode"], r["rows_scanned"])' "$report" \
            | tr '\n' ' '
        tail -n 1 "$WORK/$name.rss"
    else
        echo "$name: cohort failed (exit $?): $(tail -n 3 "$WORK/$name.cohort.err")" | tee -a "$NOTES" >&2
    fi
}

# run_duckdb NAME SQL: one timed DuckDB run; prints "seconds members rss_bytes".
run_duckdb() {
    local name=$1 sql=$2
    if "$VENV/bin/python" bench/duckdb_run.py --data "$DATA" --sql "$sql" --threads "$THREADS" \
        > "$WORK/$name.duck.json" 2> "$WORK/$name.duck.err"; then
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["elapsed_seconds"], r["members"], r["peak_rss_bytes"])' "$WORK/$name.duck.json"
    else
        echo "$name: duckdb failed: $(tail -n 3 "$WORK/$name.duck.err")" | tee -a "$NOTES" >&2
    fi
}

# median of the numbers on standard input
median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.stdin.read().split()]; print(statistics.median(v) if v else "nan")'; }

for segment in "$DATA"/segments/*.json; do
    name="$(basename "$segment" .json)"
    sql="bench/sql/retail/$name.sql"
    say "segment $name"
    if [ ! -f "$sql" ]; then
        echo "$name: no $sql, skipped" | tee -a "$NOTES" >&2
        continue
    fi

    # A warm-up run of each (untimed: the first process to touch its memory pays the VM for
    # backing it), then REPEAT timed runs of each, taking turns; the medians are reported.
    run_cohort "$name" "$segment" warmup > /dev/null
    run_duckdb "$name" "$sql" > /dev/null
    : > "$WORK/$name.cohort.runs"
    : > "$WORK/$name.duck.runs"
    for run in $(seq 1 "$REPEAT"); do
        run_cohort "$name" "$segment" "$run" >> "$WORK/$name.cohort.runs"
        run_duckdb "$name" "$sql" >> "$WORK/$name.duck.runs"
    done
    if [ -s "$WORK/$name.cohort.runs" ]; then
        cohort_s="$(cut -d' ' -f1 "$WORK/$name.cohort.runs" | median)"
        pool_bytes="$(cut -d' ' -f2 "$WORK/$name.cohort.runs" | median | cut -d. -f1)"
        cohort_rss_kib="$(cut -d' ' -f6 "$WORK/$name.cohort.runs" | median | cut -d. -f1)"
        read -r _ _ cohort_members plan_mode rows_scanned _ < "$WORK/$name.cohort.runs"
        echo "cohort: $cohort_members members; $(cut -d' ' -f1 "$WORK/$name.cohort.runs" | tr '\n' ' ')s" >&2
    else
        cohort_s=nan; pool_bytes=0; cohort_members=-1; plan_mode=failed; rows_scanned=0; cohort_rss_kib=0
    fi
    if [ -s "$WORK/$name.duck.runs" ]; then
        duck_s="$(cut -d' ' -f1 "$WORK/$name.duck.runs" | median)"
        duck_rss_bytes="$(cut -d' ' -f3 "$WORK/$name.duck.runs" | median | cut -d. -f1)"
        read -r _ duck_members _ < "$WORK/$name.duck.runs"
        echo "duckdb: $duck_members members; $(cut -d' ' -f1 "$WORK/$name.duck.runs" | tr '\n' ' ')s" >&2
    else
        duck_s=nan; duck_members=-2; duck_rss_bytes=0
    fi

    if [ "$cohort_members" != "$duck_members" ] && [ "$cohort_members" -ge 0 ] && [ "$duck_members" -ge 0 ]; then
        "$VENV/bin/python" bench/duckdb_run.py --data "$DATA" --sql "$sql" --threads "$THREADS" \
            --keys-out "$WORK/$name.duck.keys" > /dev/null
        LC_ALL=C sort -o "$WORK/$name.cohort.sorted" "$WORK/$name.cohort.keys"
        LC_ALL=C sort -o "$WORK/$name.duck.sorted" "$WORK/$name.duck.keys"
        only_cohort="$(LC_ALL=C comm -23 "$WORK/$name.cohort.sorted" "$WORK/$name.duck.sorted" | head -n 5 | tr '\n' ' ')"
        only_duck="$(LC_ALL=C comm -13 "$WORK/$name.cohort.sorted" "$WORK/$name.duck.sorted" | head -n 5 | tr '\n' ' ')"
        echo "$name: MEMBERS DIFFER: cohort $cohort_members, duckdb $duck_members; only in cohort: ${only_cohort:-none}; only in duckdb: ${only_duck:-none}" \
            | tee -a "$NOTES" >&2
    fi

    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$cohort_s" "$duck_s" "$cohort_rss_kib" "$pool_bytes" \
        "$duck_rss_bytes" "$cohort_members" "$duck_members" "$plan_mode" "$rows_scanned" >> "$ROWS"
done

say "wide model: cohort segment validate (6,000 objects, ~10,000 relationships, 20 related predicates)"
WIDE_OUT="$WORK/wide.txt"
: > "$WIDE_OUT"
# A warm-up run, then REPEAT measured runs, each printed.
for run in warmup $(seq 1 "$REPEAT"); do
    if /usr/bin/time -f 'wall %e s, peak RSS %M KiB' -o "$WORK/wide.time" \
        "$COHORT" segment validate --model "$WIDE/model.json" --segment "$WIDE/segments/twenty_related.json" \
        > "$WORK/wide.run" 2>&1; then
        :
    else
        echo "wide: validate failed (exit $?)" | tee -a "$NOTES" >&2
    fi
    { echo "run $run:"; sed 's/^/  /' "$WORK/wide.run"; sed 's/^/  /' "$WORK/wide.time"; } >> "$WIDE_OUT"
done
cat "$WIDE_OUT" >&2

mkdir -p "$RESULTS"
python3 - "$ROWS" "$NOTES" "$WIDE_OUT" "$RESULTS/executor.md" "$SCALE" "$THREADS" "$DUCKDB_VERSION" "${MEMORY_LIMIT:-none}" "$REPEAT" "$RESULTS/executor.json" <<'PY'
import json
import math
import re
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone

rows_path, notes_path, wide_path, md_path, scale, threads, duckdb_version, memory_limit, repeat, json_path = sys.argv[1:11]
MiB = 1024 * 1024
rows = []
for line in open(rows_path):
    name, cs, ds, rss_kib, pool, drss, cm, dm, plan, scanned = line.rstrip("\n").split("\t")
    rows.append(dict(name=name, cohort_s=float(cs), duck_s=float(ds), cohort_rss=int(rss_kib) * 1024,
                     pool=int(pool), duck_rss=int(drss), cm=int(cm), dm=int(dm), plan=plan, scanned=int(scanned)))

header = ["segment", "cohort s", "duckdb s", "ratio (cohort/duckdb)", "cohort peak RSS MiB",
          "cohort pool peak MiB", "duckdb peak RSS MiB", "members cohort", "members duckdb", ""]
table = []
ratios = []
mismatches = []
for r in rows:
    ok = r["cm"] >= 0 and r["dm"] >= 0
    ratio = r["cohort_s"] / r["duck_s"] if ok and r["duck_s"] > 0 and not math.isnan(r["cohort_s"]) else float("nan")
    if not math.isnan(ratio):
        ratios.append(ratio)
    flag = ""
    if not ok:
        flag = "FAILED"
    elif r["cm"] != r["dm"]:
        flag = "MISMATCH"
        mismatches.append(r["name"])
    table.append([r["name"], f"{r['cohort_s']:.3f}", f"{r['duck_s']:.3f}", f"{ratio:.2f}",
                  f"{r['cohort_rss'] / MiB:.0f}", f"{r['pool'] / MiB:.0f}", f"{r['duck_rss'] / MiB:.0f}",
                  str(r["cm"]), str(r["dm"]), flag])

median = statistics.median(ratios) if ratios else float("nan")
holds = (not math.isnan(median)) and median <= 1.0
verdict = (f"median ratio {median:.2f}: the target \"Cohort no slower than DuckDB on the median segment\" "
           + ("HOLDS" if holds else "DOES NOT HOLD"))

widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(header)]
def line(cells):
    return " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
print()
print(line(header))
print("-+-".join("-" * w for w in widths))
for row in table:
    print(line(row))
print()
print(verdict)
if mismatches:
    print("member counts differ (a bug in one of the two) for: " + ", ".join(mismatches))
notes = open(notes_path).read().strip()
if notes:
    print(notes)

try:
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
except OSError:
    cpu = "?"
with open(md_path, "w") as md:
    md.write("# Executor benchmark: Cohort vs DuckDB\n\n")
    md.write(f"- run: {datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}, `bench/executor.sh`, "
             f"SCALE={scale} (retail, seed 7), as-of 2026-11-01T00:00:00Z\n")
    md.write(f"- machine: {platform.machine()}, {cpu} cores; threads: {threads} each; DuckDB {duckdb_version}; "
             f"cohort --memory-limit: {memory_limit}\n")
    md.write(f"- each engine: one warm-up run, then {repeat} timed runs taking turns with the other; every number is the median of those runs\n")
    md.write("- cohort s / pool peak: the run report (`elapsed_seconds`, `peak_memory_bytes`); peak RSS: "
             "`/usr/bin/time -f %M` of the whole process; duckdb s: the query only; duckdb RSS includes Python\n\n")
    md.write("| " + " | ".join(h or "check" for h in header) + " |\n")
    md.write("|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|\n")
    for row in table:
        md.write("| " + " | ".join(row) + " |\n")
    md.write(f"\n{verdict}.\n")
    if mismatches:
        md.write("\nMember counts differ for: " + ", ".join(mismatches) + "\n")
    if notes:
        md.write("\n```\n" + notes + "\n```\n")
    md.write("\n## Wide model: `cohort segment validate` on twenty_related\n\n```\n")
    md.write(open(wide_path).read().strip() + "\n```\n")

# The wide model's measured runs (not the warm-up): load, compile and wall time, medians.
wide = {"load_ms": [], "compile_ms": [], "wall_s": []}
for block in open(wide_path).read().split("run ")[1:]:
    if block.startswith("warmup"):
        continue
    for key, pattern in (("load_ms", r"sources in ([0-9.]+) ms"), ("compile_ms", r"DataFusion plans? in ([0-9.]+) ms"),
                         ("wall_s", r"wall ([0-9.]+) s")):
        m = re.search(pattern, block)
        if m:
            wide[key].append(float(m.group(1)))
nan_to_none = lambda x: None if isinstance(x, float) and math.isnan(x) else x
with open(json_path, "w") as out:
    json.dump({
        "scale": int(scale), "threads": int(threads), "repeat": int(repeat), "duckdb_version": duckdb_version,
        "segments": [{"name": r["name"], "cohort_s": nan_to_none(r["cohort_s"]), "duckdb_s": nan_to_none(r["duck_s"]),
                      "cohort_members": r["cm"], "duckdb_members": r["dm"]} for r in rows],
        "median_ratio": nan_to_none(median), "holds": holds, "mismatches": mismatches,
        "failed": [r["name"] for r in rows if r["cm"] < 0 or r["dm"] < 0],
        "cohort_total_s": sum(r["cohort_s"] for r in rows if not math.isnan(r["cohort_s"])),
        "duckdb_total_s": sum(r["duck_s"] for r in rows if not math.isnan(r["duck_s"])),
        "wide": {k: (statistics.median(v) if v else None) for k, v in wide.items()},
    }, out, indent=1)
print(f"\nwritten to {md_path} and {json_path}")
PY
