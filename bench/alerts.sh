#!/usr/bin/env bash
# Alerting benchmark, two parts:
#  1. Replay throughput: a generated stream of job outcomes (EVENTS, default 5,000,000; 40%
#     failures over 2,000 tenants in 8 regions, bursts included) through `cohort alerts replay
#     --stats`, pinned to one core: events per second of the evaluator alone and of the whole
#     replay (loading the file, parsing JSON, sorting, evaluating; only writing the transitions
#     is outside the clock). A warm-up run and three measured runs, all reported. Target: over 2 million events per second on
#     one core.
#  2. Live latency (bench/alerts_live.py): a release `cohort serve` and an HTTP receiver on
#     loopback; TRIALS tenants each fail five jobs; for each, the time from the fifth failure's
#     commit (the job's finished_at in the store) to the webhook's arrival. Target: p99 under 1 s.
#  3. The peer, side by side (bench/alerts_peer.py): Prometheus and Alertmanager (Debian packages
#     `prometheus`, `prometheus-alertmanager`, installed when missing) with their default
#     settings, scraping the service's own /metrics and alerting on
#     `sum by (tenant) (increase(cohort_job_failures_total[10m])) >= 5`; one receiver times
#     Cohort's webhook and Alertmanager's for the same PEER_TRIALS tenants' fifth failures.
#     About 15 minutes whatever the trials (a 10-minute wait is part of it; see the script).
# Writes $RESULTS/alerts.md (RESULTS: default bench/results) and the numbers in
# $RESULTS/alerts.json.
#
#     bench/alerts.sh                     # EVENTS=5000000 TRIALS=100 PEER_TRIALS=20
#     EVENTS=500000 TRIALS=20 PEER_TRIALS=4 bench/alerts.sh
#     PEER=0 bench/alerts.sh              # without the Prometheus peer
# Environment also: PEER_UNPRIMED (2), PEER_STAGGER (seconds between bursts, 7),
# PROM_SCRAPE_INTERVAL and PROM_EVALUATION_INTERVAL (unset: Prometheus's built-in 1m; Debian's
# sample /etc/prometheus/prometheus.yml sets 15s).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EVENTS="${EVENTS:-5000000}"
TRIALS="${TRIALS:-100}"
PEER="${PEER:-1}"
PEER_TRIALS="${PEER_TRIALS:-20}"
PEER_UNPRIMED="${PEER_UNPRIMED:-2}"
PEER_STAGGER="${PEER_STAGGER:-7}"
RESULTS="${RESULTS:-bench/results}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
COHORT="$TARGET_DIR/release/cohort"
WORK="bench/data/alerts"
mkdir -p "$RESULTS" "$WORK"
say() { printf '\n== %s\n' "$*" >&2; }

say "building the release binary"
cargo build --release --bin cohort

say "generating $EVENTS outcomes"
python3 bench/alerts_events.py "$EVENTS" "$WORK/events.jsonl"

say "replaying on one core: a warm-up run, then three measured runs"
# The warm-up is printed too. On a fresh VM the first process to touch a few GB of memory pays
# for the host backing it (its load step takes seconds); the measured runs reuse those pages.
sync
cat "$WORK/events.jsonl" >/dev/null
STATS=""
for run in warm-up 1 2 3; do
    LINE="$(taskset -c 0 "$COHORT" alerts replay --events "$WORK/events.jsonl" --stats 2>&1 >"$WORK/transitions.jsonl")"
    echo "run $run: $LINE"
    STATS="$STATS
run $run: $LINE"
done
STATS="${STATS#?}"
TRANSITIONS=$(wc -l <"$WORK/transitions.jsonl")

say "live: $TRIALS tenants, five failures each"
rm -f "$WORK/live.json" "$WORK/peer.json"
LIVE="$(python3 bench/alerts_live.py --cohort "$COHORT" --work "$WORK/live" --trials "$TRIALS" --json "$WORK/live.json")"
echo "$LIVE"

PEER_TABLE=""
PEER_STATUS=0
if [ "$PEER" != 0 ]; then
    if ! command -v prometheus >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then
        say "installing Prometheus and Alertmanager (Debian packages prometheus, prometheus-alertmanager)"
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
        $SUDO apt-get install -y prometheus prometheus-alertmanager >&2
        # Where systemd runs, the packages start their own services on :9090, :9093 and :9100;
        # this benchmark runs its own instances on free loopback ports, so stop those.
        if [ -d /run/systemd/system ]; then
            $SUDO systemctl disable --now prometheus prometheus-alertmanager prometheus-node-exporter >&2 || true
        fi
    fi
    say "peer: Prometheus + Alertmanager beside Cohort, $PEER_TRIALS tenants (about 15 minutes)"
    peer_args=(--trials "$PEER_TRIALS" --unprimed "$PEER_UNPRIMED" --stagger "$PEER_STAGGER")
    [ -n "${PROM_SCRAPE_INTERVAL:-}" ] && peer_args+=(--scrape-interval "$PROM_SCRAPE_INTERVAL")
    [ -n "${PROM_EVALUATION_INTERVAL:-}" ] && peer_args+=(--evaluation-interval "$PROM_EVALUATION_INTERVAL")
    # A failing peer run is reported, and makes this script fail, after the rest is written.
    PEER_TABLE="$(python3 bench/alerts_peer.py --cohort "$COHORT" --work "$WORK/peer" "${peer_args[@]}" --json "$WORK/peer.json")" \
        || { PEER_STATUS=$?; PEER_TABLE="The peer run failed (exit $PEER_STATUS); its logs are in $WORK/peer."; }
    echo "$PEER_TABLE"
fi

{
    echo "# Alerting benchmark"
    echo
    echo "Machine: $(nproc) cores, $(uname -m); release build; $(date -u +%Y-%m-%d)."
    echo
    echo "## Replay throughput (one core: \`taskset -c 0 cohort alerts replay --stats\`)"
    echo
    echo "$EVENTS generated outcomes (40% failures, 2,000 tenants, 8 regions), $TRANSITIONS transitions."
    echo
    echo '```'
    echo "$STATS"
    echo '```'
    echo
    echo "## Live: fifth failure's commit to the webhook's arrival"
    echo
    echo "$TRIALS tenants one after another (\`bench/alerts_live.py\`), Cohort alone."
    echo
    echo "$LIVE"
    if [ -n "$PEER_TABLE" ]; then
        echo
        echo "## Live, side by side: Cohort and Prometheus + Alertmanager (\`bench/alerts_peer.py\`)"
        echo
        echo "$PEER_TABLE"
    fi
} > "$RESULTS/alerts.md"

# The numbers for bench/run-all: replay throughput (medians of the measured runs), live, peer.
python3 - "$STATS" "$EVENTS" "$WORK/live.json" "$WORK/peer.json" "$RESULTS/alerts.json" <<'PY'
import json, os, re, statistics, sys
stats, events, live, peer, out = sys.argv[1:6]
evaluate, whole = [], []
for line in stats.splitlines():
    if line.startswith("run warm-up"):
        continue
    m = re.search(r"\(([0-9]+) events/s\); whole replay ([0-9]+) events/s", line)
    if m:
        evaluate.append(int(m.group(1)))
        whole.append(int(m.group(2)))
load = lambda p: json.load(open(p)) if os.path.exists(p) else None
json.dump({"events": int(events),
           "replay": {"runs": len(whole), "evaluate_events_per_second": statistics.median(evaluate) if evaluate else None,
                      "whole_events_per_second": statistics.median(whole) if whole else None},
           "live": load(live), "peer": load(peer)}, open(out, "w"), indent=1)
PY
say "wrote $RESULTS/alerts.md and $RESULTS/alerts.json"
exit "$PEER_STATUS"
