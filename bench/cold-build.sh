#!/usr/bin/env bash
# A cold build, as a newcomer's first one: a fresh clone of COMMIT (default HEAD) with an empty
# target directory, then `cargo build --release --timings` (PROFILE=test: `cargo test
# --workspace --no-run` instead), timed by the wall clock. Run it on an idle machine: it
# measures the machine as much as the code. The crate registry is not cleared (downloads are
# not part of the figure).
#
#     bench/cold-build.sh                     # HEAD, release
#     COMMIT=4522b1c bench/cold-build.sh      # another commit
#     PROFILE=test bench/cold-build.sh        # the tests' build
#
# Appends a row (commit, profile, seconds, units compiled, date, NOTE) to
# $RESULTS/cold-build.tsv (RESULTS: default bench/results), rewrites $RESULTS/cold-build.md
# from all its rows, and writes the 20 slowest units of cargo's timings report to
# $RESULTS/cold-build-<commit>-<profile>.txt. KEEP_TARGET=DIR keeps the target directory
# there afterwards (for builds that follow from it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
COMMIT="$(git rev-parse --short "${COMMIT:-HEAD}")"
PROFILE="${PROFILE:-release}"
RESULTS="${RESULTS:-bench/results}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cohort-cold-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"

git clone --quiet "$ROOT" "$WORK/cohort"
git -C "$WORK/cohort" checkout --quiet "$COMMIT"
case "$PROFILE" in
    release) build=(cargo build --release --timings) ;;
    test) build=(cargo test --workspace --no-run --timings) ;;
    *) echo "PROFILE must be release or test, not $PROFILE" >&2; exit 2 ;;
esac
echo "cold $PROFILE build of $COMMIT in $WORK/cohort: ${build[*]}" >&2
start=$(date +%s)
(cd "$WORK/cohort" && env -u CARGO_TARGET_DIR CARGO_TARGET_DIR="$WORK/cohort/target" "${build[@]}") 2> "$WORK/build.log" || {
    tail -n 30 "$WORK/build.log" >&2
    exit 1
}
seconds=$(( $(date +%s) - start ))
units=$(grep -c '^ *Compiling ' "$WORK/build.log" || true)
echo "cold $PROFILE build of $COMMIT: $seconds s, $units units compiled" >&2
python3 bench/cargo_timings.py "$WORK/cohort/target/cargo-timings/cargo-timing.html" > "$RESULTS/cold-build-$COMMIT-$PROFILE.txt"

if [ -n "${KEEP_TARGET:-}" ]; then
    rm -rf "$KEEP_TARGET"
    mv "$WORK/cohort/target" "$KEEP_TARGET"
fi

TSV="$RESULTS/cold-build.tsv"
[ -f "$TSV" ] || printf 'commit\tprofile\tseconds\tunits\tdate\tnote\n' > "$TSV"
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$COMMIT" "$PROFILE" "$seconds" "$units" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${NOTE:-}" >> "$TSV"
python3 - "$TSV" "$RESULTS/cold-build.md" <<'PY'
import csv, os, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
out = ["# Cold builds", "",
       f"`bench/cold-build.sh`: a fresh clone, an empty target directory, one build timed by the wall clock; {os.uname().machine}, {os.cpu_count()} cores.", "",
       "| commit | build | minutes | seconds | units compiled | date | note |", "|---|---|---:|---:|---:|---|---|"]
for r in rows:
    build = "`cargo build --release`" if r["profile"] == "release" else "`cargo test --workspace --no-run`"
    s = int(r["seconds"])
    out.append(f"| {r['commit']} | {build} | {s / 60:.1f} | {s:,} | {r['units']} | {r['date']} | {r['note']} |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
cat "$RESULTS/cold-build.md"
