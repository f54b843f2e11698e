#!/usr/bin/env python3
"""Runs one hand-written segment query in DuckDB over a tenant's Parquet files and times it.

Usage (from the bench venv, see bench/README.md):
    bench/.venv/bin/python bench/duckdb_run.py --data bench/data/retail-100000 \
        --sql bench/sql/retail/lapsed_buyers.sql [--threads 2] [--keys-out FILE]

Every sub-folder of --data holding *.parquet files becomes a view of the same name
(read_parquet('DATA/<object>/*.parquet')), so the SQL files name objects directly.
The query must return the member keys (one column). Only the query is timed, as
SELECT count(*) FROM (<query>); with --keys-out the keys are then written, sorted by bytes,
one per line (untimed), to compare with `cohort segment run`.

Prints one JSON line: {"elapsed_seconds", "members", "peak_rss_bytes"} (peak RSS of this
process, DuckDB and the Python interpreter together, from getrusage).
"""

import argparse
import json
import os
import resource
import sys
import time

import duckdb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the tenant folder (one sub-folder of Parquet files per object)")
    parser.add_argument("--sql", required=True, help="the segment as a SQL query returning the member keys")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keys-out", help="also write the member keys here, sorted by bytes (untimed)")
    args = parser.parse_args()

    with open(args.sql, encoding="utf-8") as f:
        query = f.read().strip().rstrip(";")

    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {int(args.threads)}")
    con.execute("SET TimeZone = 'UTC'")
    data = os.path.abspath(args.data)
    for name in sorted(os.listdir(data)):
        folder = os.path.join(data, name)
        if os.path.isdir(folder) and any(n.endswith(".parquet") for n in os.listdir(folder)):
            pattern = os.path.join(folder, "*.parquet").replace("'", "''")
            con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet(\'{pattern}\')')

    started = time.perf_counter()
    (members,) = con.execute(f"SELECT count(*) FROM ({query}) AS members").fetchone()
    elapsed = time.perf_counter() - started

    if args.keys_out:
        keys = [str(row[0]) for row in con.execute(query).fetchall() if row[0] is not None]
        keys.sort(key=lambda k: k.encode("utf-8"))
        with open(args.keys_out, "w", encoding="utf-8") as out:
            for key in keys:
                out.write(key + "\n")

    peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"elapsed_seconds": elapsed, "members": members, "peak_rss_bytes": peak_rss_bytes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
