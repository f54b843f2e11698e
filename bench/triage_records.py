"""Failure records for the triage benchmark: `python3 bench/triage_records.py N OUT.jsonl END_MS`
writes N failed attempts in the day before END_MS and N more over the seven days before that
(the history that decides what is new), as `cohort triage --failures` reads them. With
`--sqlite DB`, writes the same failures into a service store instead (tenants, jobs, attempts).

The messages are the shapes the executor and the service really produce, with the varying parts
(ids, paths, numbers, UUIDs, quoted names, times) drawn at random, over 5,000 tenants in six
regions; a tenth of the out-of-memory failures carry a data finding."""

import json
import random
import sqlite3
import sys

DAY = 86_400_000
rng = random.Random(11)

OBJECTS = ["individual", "order", "order_line", "product", "email_event", "web_visit", "account", "contact", "opportunity"]
FIELDS = ["amount", "status", "email", "country", "ordered_at", "tier", "points", "kind", "stage"]
TYPES = ["string", "int", "float", "bool", "date", "timestamp"]


def message():
    """(class, message) drawn from the failure shapes."""
    o, f = rng.choice(OBJECTS), rng.choice(FIELDS)
    t = f"t{rng.randrange(5000):05d}"
    r = rng.random()
    if r < 0.30:
        return "resources_exhausted", (
            f"memory limit of {rng.randrange(1, 64) << 20} bytes was not enough: Failed to allocate additional "
            f"{rng.uniform(0.1, 90):.1f} MB for {rng.choice(['HashJoinInput', 'GroupedHashAggregateStream', 'ExternalSorter'])}[{rng.randrange(8)}] "
            f"with {rng.randrange(1 << 20)} bytes already allocated"
        )
    if r < 0.50:
        return "source_unavailable", (
            f"source {o!r} unreadable: cannot read /data/{t}/{o}/part-{rng.randrange(10000):05d}.parquet: "
            + rng.choice(["No such file or directory (os error 2)", "Connection reset by peer (os error 104)", "Input/output error (os error 5)"])
        ).replace("'", '"')
    if r < 0.60:
        return "source_unavailable", f'source "{o}" unreadable: no parquet files at "{t}/{o}/"'
    if r < 0.70:
        return "timeout", f"ran past its deadline of {rng.uniform(1, 3600):.3f} s and was stopped"
    if r < 0.80:
        return "schema_mismatch", (
            f'schema mismatch: objects[{rng.randrange(40)}].fields[{rng.randrange(30)}]: "{f}" is declared '
            f'{rng.choice(TYPES)} but the source holds {rng.choice(TYPES)}'
        )
    if r < 0.88:
        return "schema_mismatch", (
            f'schema mismatch: objects[{rng.randrange(40)}].fields[{rng.randrange(30)}]: "{f}" is declared on "{o}" '
            f"but its source has no such column"
        )
    if r < 0.95:
        return "invalid", f'invalid segment: filter.and[{rng.randrange(6)}].field: "{f}" is not a field of "{o}"'
    if r < 0.99:
        return "execution", (
            f"execution failed: request {rng.getrandbits(128):032x} to s3://bucket-{rng.randrange(50)}/{t}/{o}.parquet "
            f"timed out after {rng.randrange(100, 30000)}ms"
        )
    return "internal", f"internal error (a bug in Cohort): run run_{rng.getrandbits(64):016x} lost its plan"


def records(n, start, end):
    for i in range(n):
        cls, msg = message()
        tenant = rng.randrange(5000)
        data = []
        if cls == "resources_exhausted" and rng.random() < 0.1:
            data = [{"kind": rng.choice(["duplicate_keys", "key_skew"]), "object": rng.choice(OBJECTS), "field": "individual_id",
                     "share": round(rng.uniform(0.3, 0.95), 3), "sampled": 200000}]
        yield {
            "at": rng.randrange(start, end),
            "tenant": f"t{tenant:05d}",
            "region": f"region-{tenant % 6}",
            "segment": f"s{rng.randrange(20)}",
            "job": f"job_{start:x}_{i:07d}",
            "attempt": rng.randrange(1, 4),
            "class": cls,
            "message": msg,
            "recovered": (recovered := rng.random() < 0.6),
            "job_failed": not recovered,
            "grant": rng.randrange(1, 64) << 20,
            "data": data,
        }


def main():
    n, out, end = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    window = list(records(n, end - DAY, end))
    history = list(records(n, end - 8 * DAY, end - DAY))
    if len(sys.argv) > 5 and sys.argv[4] == "--sqlite":
        db = sqlite3.connect(sys.argv[5])
        db.executemany(
            "INSERT OR IGNORE INTO tenants (id, region, data_root, max_concurrent_jobs, memory_quota_bytes, jobs_per_minute, share, created_at) "
            "VALUES (?, ?, '/nonexistent', 4, 0, 600, 1.0, 0)",
            [(f"t{t:05d}", f"region-{t % 6}") for t in range(5000)],
        )
        rows = window + history
        db.executemany(
            "INSERT INTO jobs (id, tenant_id, segment_id, status, trigger_kind, as_of, grant_bytes, attempts, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, 'api', 0, ?, 1, ?, ?)",
            [(r["job"], r["tenant"], r["segment"], "succeeded" if r["recovered"] else "failed", r["grant"], r["at"] * 1000, r["at"] * 1000) for r in rows],
        )
        db.executemany(
            "INSERT INTO attempts (job_id, attempt, started_at, finished_at, outcome, error_class, error_message, grant_bytes, data_quality) "
            "VALUES (?, ?, ?, ?, 'failed', ?, ?, ?, ?)",
            [(r["job"], r["attempt"], r["at"] * 1000 - 1000, r["at"] * 1000, r["class"], r["message"], r["grant"], json.dumps(r["data"]) if r["data"] else None) for r in rows],
        )
        db.commit()
        return
    with open(out, "w") as f:
        for r in window + history:
            f.write(json.dumps(r) + "\n")


main()
