"""The peer of `cohort triage` in the triage benchmark: the same grouping written the common way,
with regular expressions in the manner of Sentry's message grouping (UUIDs, URLs, paths, hex,
numbers and quoted values replaced), then grouped by class and normalized message in a dict.
`python3 bench/triage_peer.py FAILURES.jsonl FROM_MS TO_MS` prints its timing."""

import json
import re
import sys
import time

PATTERNS = [
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ][\d:.]+Z?\b"), "<time>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b\w+://\S+"), "<url>"),
    (re.compile(r"(?<![\w])(?:\.{0,2}/)?[\w.-]+(?:/[\w.-]+)+/?"), "<path>"),
    (re.compile(r"(['\"`])[^'\"`]*\1"), r"\1<v>\1"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<id>"),
    (re.compile(r"\b\w*\d\w*\b"), "<n>"),
]


def normalize(message):
    for pattern, placeholder in PATTERNS:
        message = pattern.sub(placeholder, message)
    return message


def main():
    path, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    t0 = time.perf_counter()
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    read = time.perf_counter() - t0
    t1 = time.perf_counter()
    groups = {}
    for r in rows:
        if not (start <= r["at"] < end):
            continue
        key = r["class"] + ": " + normalize(r["message"])
        g = groups.setdefault(key, {"count": 0, "tenants": set(), "regions": set(), "first": r["at"], "last": r["at"], "recovered": 0})
        g["count"] += 1
        g["tenants"].add(r["tenant"])
        g["regions"].add(r["region"])
        g["first"] = min(g["first"], r["at"])
        g["last"] = max(g["last"], r["at"])
        g["recovered"] += r["recovered"]
    ordered = sorted(groups.items(), key=lambda kv: -kv[1]["count"])
    report = time.perf_counter() - t1
    in_window = sum(g["count"] for _, g in ordered)
    print(f"{len(rows)} failure records read in {read:.3f} s; report over {in_window} made in {report:.3f} s; {len(ordered)} signatures", file=sys.stderr)


main()
