"""The slowest units of a cargo `--timings` report (cargo-timing.html): name, version, target
and seconds, slowest first, with the total of all units' times (more than the wall clock when
units build side by side).

    python3 bench/cargo_timings.py target/cargo-timings/cargo-timing.html [N]
"""
import json
import re
import sys

html = open(sys.argv[1]).read()
top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
match = re.search(r"const UNIT_DATA = (\[.*?\]);\n", html, re.S)
if not match:
    sys.exit(f"{sys.argv[1]}: no UNIT_DATA in this timings report")
units = json.loads(match.group(1))
total = sum(u["duration"] for u in units)
print(f"{len(units)} units, {total:,.0f} s of unit time in all; the slowest {top}:")
for u in sorted(units, key=lambda u: -u["duration"])[:top]:
    target = u.get("target", "").strip() or "lib"
    print(f"{u['duration']:8.1f} s  {u['name']} {u['version']} {target}")
