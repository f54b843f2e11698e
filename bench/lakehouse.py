#!/usr/bin/env python3
"""Sources in object storage and in Iceberg tables against plain local Parquet: every retail
segment run by `cohort segment run` over the same rows, read (1) as Parquet from local disk,
(2) as the same Parquet files from an S3-compatible server (moto's, its own process on a
loopback port) and (3) as Iceberg tables PyIceberg wrote on local disk, taking turns. Run
through bench/lakehouse.sh.

The figure per segment is the median wall time of the whole command (listing, footers or
table metadata, and the run: what a job pays), and the median `elapsed_seconds` of its report
(the run alone); the ratios are S3 / local and Iceberg / Parquet. Members must be the same
from all three.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def start_moto():
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
        if m:
            return proc, m.group(1)
    raise SystemExit("moto_server ended before listening")


def upload(endpoint, bucket, prefix, folder):
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench-secret", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    files = sizes = 0
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, prefix + str(path.relative_to(folder)))
            files += 1
            sizes += path.stat().st_size
    return files, sizes


class RunFailed(Exception):
    pass


FAILED_RUNS = []


def run_retrying(*args):
    """A run; one that fails (moto's development server stalls now and then under concurrent
    range reads) is noted and run again, twice at most."""
    for attempt in range(3):
        try:
            return run(*args)
        except RunFailed as e:
            FAILED_RUNS.append(str(e).splitlines()[0][:300])
            print(f"   {e}", file=sys.stderr)
            if attempt == 2:
                raise SystemExit(str(e))


def run(cohort, model, segment, as_of, partitions, env, work, tag):
    report = Path(work) / f"{tag}.report.json"
    keys = Path(work) / f"{tag}.keys"
    started = time.perf_counter()
    with open(keys, "w") as out:
        done = subprocess.run(
            [cohort, "segment", "run", "--model", model, "--segment", segment, "--as-of", as_of, "--partitions", str(partitions), "--report", str(report)],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RunFailed(f"{tag}: cohort failed ({done.returncode}): {done.stderr[-2000:]}")
    r = json.loads(report.read_text())
    return wall, r["elapsed_seconds"], r["members"], keys.read_text()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cohort", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--results", required=True)
    p.add_argument("--scale", required=True)
    p.add_argument("--profile", default="release", help="which build of cohort was measured, for the results")
    args = p.parse_args()
    as_of = "2026-11-01T00:00:00Z"
    data = Path(args.data).resolve()
    # moto's development server stalls after some thousands of range reads (a request then
    # waits forever): each segment gets a fresh server with the files uploaded again.
    proc, endpoint = start_moto()
    try:
        with tempfile.TemporaryDirectory() as work:
            t0 = time.perf_counter()
            files, size = upload(endpoint, "cohort-bench", "retail/", data)
            upload_s = time.perf_counter() - t0
            proc.terminate()
            proc.wait()
            model = json.loads((data / "model.json").read_text())
            for o in model["objects"]:
                o["source"]["path"] = "s3://cohort-bench/retail/" + o["source"]["path"].lstrip("./")
            s3_model = Path(work) / "model-s3.json"
            s3_model.write_text(json.dumps(model))
            iceberg_dir = data.parent / f"{data.name}-iceberg"
            if not (iceberg_dir / "model.json").exists():
                t1 = time.perf_counter()
                script = Path(__file__).resolve().parent.parent / "executor/tests/lakehouse/write_tables.py"
                subprocess.run([sys.executable, str(script), "iceberg", str(data), str(iceberg_dir)], check=True)
                print(f"== Iceberg tables written in {time.perf_counter() - t1:.1f} s", file=sys.stderr)
            iceberg_model = iceberg_dir / "model.json"
            env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret", AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true")
            rows = []
            for segment in sorted((data / "segments").glob("*.json")):
                name = segment.stem
                print(f"== {name}", file=sys.stderr)
                proc, endpoint = start_moto()
                upload(endpoint, "cohort-bench", "retail/", data)
                env["AWS_ENDPOINT_URL"] = endpoint
                runs = {"local": [], "s3": [], "iceberg": []}
                answers = {}
                for turn in range(args.repeat + 1):
                    for side, m in (("local", str(data / "model.json")), ("s3", str(s3_model)), ("iceberg", str(iceberg_model))):
                        wall, elapsed, members, keys = run_retrying(args.cohort, m, str(segment), as_of, args.partitions, env, work, f"{name}.{side}.{turn}")
                        answers[side] = keys
                        if turn > 0:  # the first turn of each warms up
                            runs[side].append((wall, elapsed, members))
                proc.terminate()
                proc.wait()
                if answers["local"] != answers["s3"] or answers["local"] != answers["iceberg"]:
                    raise SystemExit(f"{name}: members differ between local Parquet, S3 and Iceberg")
                med = {side: (statistics.median(w for w, _, _ in v), statistics.median(e for _, e, _ in v)) for side, v in runs.items()}
                rows.append({
                    "segment": name,
                    "members": runs["local"][0][2],
                    "local_wall_seconds": med["local"][0],
                    "s3_wall_seconds": med["s3"][0],
                    "local_run_seconds": med["local"][1],
                    "s3_run_seconds": med["s3"][1],
                    "iceberg_wall_seconds": med["iceberg"][0],
                    "iceberg_run_seconds": med["iceberg"][1],
                })
                print(f"   local {med['local'][0]:.3f} s, S3 {med['s3'][0]:.3f} s, Iceberg {med['iceberg'][0]:.3f} s", file=sys.stderr)
    finally:
        proc.terminate()
    total_local = sum(r["local_wall_seconds"] for r in rows)
    total_s3 = sum(r["s3_wall_seconds"] for r in rows)
    total_iceberg = sum(r["iceberg_wall_seconds"] for r in rows)
    result = {
        "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scale": int(args.scale),
        "repeat": args.repeat,
        "files": files,
        "bytes": size,
        "upload_seconds": upload_s,
        "server": "moto_server (Python, in memory), loopback, a fresh one per segment",
        "binary": args.profile,
        "failed_runs": FAILED_RUNS,
        "segments": rows,
        "total_local_wall_seconds": total_local,
        "total_s3_wall_seconds": total_s3,
        "ratio_s3_to_local": total_s3 / total_local if total_local else None,
        "total_iceberg_wall_seconds": total_iceberg,
        "ratio_iceberg_to_parquet": total_iceberg / total_local if total_local else None,
    }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lakehouse.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Sources in object storage and Iceberg tables against local Parquet",
        "",
        f"- run: {result['run_at']}, `bench/lakehouse.sh`, retail SCALE={args.scale} (seed 7): {files} Parquet files, {size / 1e6:.1f} MB",
        f"- binary: {args.profile}",
        f"- S3: {result['server']}; uploaded in {upload_s:.1f} s. Iceberg: the same rows written by PyIceberg (two appends per table), local disk",
        f"- each segment: one warm-up run from each place, then {args.repeat} timed runs of each, taking turns; medians",
        "- wall: the whole `cohort segment run` (listing, footers, the run); run: its report's `elapsed_seconds`",
        "",
        "| segment | members | Parquet local, wall s | Parquet on S3, wall s | S3 / local | Iceberg local, wall s | Iceberg / Parquet | local run s | S3 run s | Iceberg run s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['segment']} | {r['members']:,} | {r['local_wall_seconds']:.3f} | {r['s3_wall_seconds']:.3f} | "
            f"{r['s3_wall_seconds'] / r['local_wall_seconds']:.2f} | {r['iceberg_wall_seconds']:.3f} | {r['iceberg_wall_seconds'] / r['local_wall_seconds']:.2f} | "
            f"{r['local_run_seconds']:.3f} | {r['s3_run_seconds']:.3f} | {r['iceberg_run_seconds']:.3f} |"
        )
    lines.append(f"| **all** | | {total_local:.3f} | {total_s3:.3f} | {result['ratio_s3_to_local']:.2f} | {total_iceberg:.3f} | {result['ratio_iceberg_to_parquet']:.2f} | | | |")
    lines += ["", "Members: the same from all three."]
    if FAILED_RUNS:
        lines += ["", f"Runs that failed and were run again ({len(FAILED_RUNS)}; not in the medians):", ""] + [f"- {f}" for f in FAILED_RUNS]
    (out / "lakehouse.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
