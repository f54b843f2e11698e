#!/usr/bin/env python3
"""Records a trace of real segment runs for `cohort estimator eval` (bench/estimator.sh).

Starts `cohort serve` on a loopback port with the estimator's grants off and a generous fixed
grant, so each run's peak is what it needs, not what a tight grant squeezed it to. Registers
datagen tenants of several profiles and sizes with all their segments, then, step by step,
grows each tenant's data the way real tenants' data moves (a few percent most days, now and
then a backfill that doubles it or a purge that shrinks it), regenerates it with datagen and
runs every segment once. The service records every run's features and outcome in its store;
`cohort estimator trace` writes them out at the end. Standard library only.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

AS_OF = "2026-11-01T00:00:00Z"

# (name, profile, first scale, largest scale)
TENANTS = [
    ("retail-xs", "retail", 1_500, 12_000),
    ("retail-s", "retail", 6_000, 40_000),
    ("retail-m", "retail", 25_000, 120_000),
    ("retail-l", "retail", 80_000, 250_000),
    ("b2b-xs", "b2b", 200, 2_000),
    ("b2b-s", "b2b", 1_000, 8_000),
    ("b2b-m", "b2b", 4_000, 25_000),
    ("b2b-l", "b2b", 12_000, 60_000),
]


def request(method, url, token, body=None, timeout=120):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def must(status, body, ok, what):
    if status not in ok:
        sys.exit(f"{what}: HTTP {status}: {body}")
    return body


def next_scale(rng, scale, first, largest):
    """One step of a tenant's data: mostly steady growth, sometimes a jump or a purge."""
    roll = rng.random()
    if roll < 0.07:
        factor = rng.uniform(1.4, 2.0)  # a backfill, a new source
    elif roll < 0.12:
        factor = rng.uniform(0.75, 0.95)  # a retention purge
    elif roll < 0.30:
        factor = 1.0  # nothing new
    else:
        factor = 1.0 + rng.uniform(0.0, 0.08)
    return int(min(max(scale * factor, first // 2), largest))


def datagen(cohort, profile, scale, seed, out):
    subprocess.run(
        [cohort, "datagen", "--profile", profile, "--scale", str(scale), "--seed", str(seed), "--out", out],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cohort", required=True, help="the cohort binary")
    p.add_argument("--work", required=True, help="a folder for the tenants' data and the service's store (emptied)")
    p.add_argument("--runs", type=int, default=2200, help="stop after the step that reaches this many runs")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", required=True, help="where to write the trace (JSON lines)")
    args = p.parse_args()

    rng = random.Random(args.seed)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    service_dir = os.path.join(args.work, "service")
    env = dict(os.environ)
    env.update({
        "COHORT_ESTIMATOR": "false",  # record natural peaks: a generous fixed grant
        "COHORT_MIN_GRANT": "3GiB",
        "COHORT_GRANT_PER_SOURCE_BYTE": "0",
        "COHORT_MEMORY_BUDGET": "12GiB",
        "COHORT_WORKERS": "2",
        "COHORT_LOG": "warn",
    })
    server = subprocess.Popen(
        [args.cohort, "serve", "--listen", "127.0.0.1:0", "--data-dir", service_dir],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        if "listening on" not in line:
            sys.exit(f"cohort serve did not start: {line!r}")
        base = line.strip().rsplit(" ", 1)[-1]
        admin = open(os.path.join(service_dir, "admin-token")).read().strip()

        tenants = []
        for i, (name, profile, first, largest) in enumerate(TENANTS):
            root = os.path.join(args.work, name)
            datagen(args.cohort, profile, first, 100 + i, root)
            body = must(*request("POST", f"{base}/v1/tenants", admin,
                                 {"id": name, "region": "bench", "data_root": os.path.abspath(root), "jobs_per_minute": 600000}),
                        (201,), f"creating {name}")
            token = body["token"]
            model = json.load(open(os.path.join(root, "model.json")))
            must(*request("PUT", f"{base}/v1/tenants/{name}/model", token, model), (200,), f"model of {name}")
            segments = sorted(f[:-5] for f in os.listdir(os.path.join(root, "segments")) if f.endswith(".json"))
            for seg in segments:
                definition = json.load(open(os.path.join(root, "segments", f"{seg}.json")))
                must(*request("PUT", f"{base}/v1/tenants/{name}/segments/{seg}", token, {"definition": definition}),
                     (200, 201), f"segment {name}/{seg}")
            tenants.append({"name": name, "profile": profile, "scale": first, "first": first, "largest": largest,
                            "seed": 100 + i, "root": root, "token": token, "segments": segments})
        per_step = sum(len(t["segments"]) for t in tenants)
        print(f"{len(tenants)} tenants, {per_step} segments: {per_step} runs a step", flush=True)

        runs = failed = step = 0
        started = time.monotonic()
        while runs < args.runs:
            step += 1
            if step > 1:
                for t in tenants:
                    scale = next_scale(rng, t["scale"], t["first"], t["largest"])
                    if scale != t["scale"]:
                        t["scale"] = scale
                        datagen(args.cohort, t["profile"], scale, t["seed"], t["root"])
            jobs = []
            for t in tenants:
                for seg in t["segments"]:
                    body = must(*request("POST", f"{base}/v1/tenants/{t['name']}/segments/{seg}/runs", t["token"], {"as_of": AS_OF}),
                                (201, 202), f"run of {t['name']}/{seg}")
                    jobs.append((t, body["id"]))
            for t, job in jobs:
                url = f"{base}/v1/tenants/{t['name']}/runs/{job}"
                _, view = request("GET", url, t["token"])
                while view["status"] not in ("succeeded", "failed", "cancelled"):
                    _, view = request("GET", f"{url}?wait_seconds=30&while_status={view['status']}", t["token"])
                runs += 1
                if view["status"] != "succeeded":
                    failed += 1
                    print(f"  {t['name']}: {job} {view['status']}: {view.get('error_message')}", flush=True)
            scales = " ".join(f"{t['name']}={t['scale']}" for t in tenants)
            print(f"step {step}: {runs} runs ({failed} failed) in {time.monotonic() - started:.0f}s; {scales}", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)

    with open(args.out, "w") as out:
        subprocess.run([args.cohort, "estimator", "trace", "--data-dir", service_dir], check=True, stdout=out)
    print(f"trace of {runs} runs written to {args.out}", flush=True)


if __name__ == "__main__":
    main()
