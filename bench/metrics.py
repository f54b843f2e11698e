"""Scrape cost of /metrics with 5,000 tenants: a real release `cohort serve` (SQLite), TENANTS
tenants created through the API, each with a model, a segment and one finished job (so every
tenant has job metrics in the service), then SCRAPES scrapes of /metrics, timed from this
process. Run twice in one go: per-tenant series bounded to the default top 50 (plus `other`
per region), and unbounded (every tenant its own series) as the peer. Prints a Markdown table;
--json also writes the numbers.
"""
import argparse, concurrent.futures, json, os, statistics, time, urllib.request

from cohort_bench import ADMIN, AS_OF, call, final, fresh_tenant, serve


def scrape(base):
    t = time.perf_counter()
    with urllib.request.urlopen(base + "/metrics", timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t, len(body)


def run(cohort, work, tenants, scrapes, top):
    root, model, segment = fresh_tenant(cohort, work, 100)
    server, base = serve(cohort, work, COHORT_METRICS_TOP_TENANTS=str(top))
    try:
        regions = ["us-east", "eu-west", "ap-south", "sa-east"]

        def setup(i):
            tid = "t%05d" % i
            created = call(base, ADMIN, "POST", "/v1/tenants",
                           {"id": tid, "region": regions[i % 4], "data_root": root, "jobs_per_minute": 600000})
            token = created["token"]
            call(base, token, "PUT", "/v1/tenants/%s/model" % tid, model)
            call(base, token, "PUT", "/v1/tenants/%s/segments/lapsed_buyers" % tid, {"definition": segment})
            job = call(base, token, "POST", "/v1/tenants/%s/segments/lapsed_buyers/runs" % tid, {"as_of": AS_OF})
            return tid, token, job["id"]

        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            jobs = list(pool.map(setup, range(tenants)))
        # Every job finished (long polls, no sleeps).
        def wait(job):
            tid, token, jid = job
            return final(base, token, tid, jid)["status"]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(wait, jobs))
        setup_s = time.time() - t0
        scrape(base)  # warm
        times, sizes = [], []
        for _ in range(scrapes):
            dt, n = scrape(base)
            times.append(dt)
            sizes.append(n)
        with urllib.request.urlopen(base + "/metrics", timeout=60) as r:
            text = r.read().decode()
        series = sum(1 for l in text.splitlines() if l and not l.startswith("#"))
        tenant_labels = len({l.split('tenant="')[1].split('"')[0] for l in text.splitlines() if 'tenant="' in l})
        times.sort()
        q = lambda p: times[min(len(times) - 1, int(round(p * (len(times) - 1))))]
        return {"top": top, "succeeded": outcomes.count("succeeded"), "setup_s": setup_s, "bytes": max(sizes), "series": series,
                "tenant_labels": tenant_labels, "p50": q(0.5), "p99": q(0.99), "max": times[-1], "mean": statistics.mean(times)}
    finally:
        server.terminate()
        server.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--tenants", type=int, default=5000)
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--json", help="also write the numbers to this file")
    a = ap.parse_args()
    rows = [run(a.cohort, os.path.join(a.work, "top50"), a.tenants, a.scrapes, 50),
            run(a.cohort, os.path.join(a.work, "all"), a.tenants, a.scrapes, a.tenants)]
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"tenants": a.tenants, "scrapes": a.scrapes, "bounded": rows[0], "unbounded": rows[1]}, f, indent=1)
    print("| per-tenant series | tenants | jobs succeeded | scrape size | samples | tenant label values | p50 | p99 | max |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        label = "top %d + other (default)" % r["top"] if r["top"] < a.tenants else "every tenant (peer, unbounded)"
        print("| %s | %d | %d | %.1f KiB | %d | %d | %.1f ms | %.1f ms | %.1f ms |" % (
            label, a.tenants, r["succeeded"], r["bytes"] / 1024, r["series"], r["tenant_labels"],
            r["p50"] * 1e3, r["p99"] * 1e3, r["max"] * 1e3))
    print()
    print("Setup (tenants created, one job each, all finished): %.0f s and %.0f s." % (rows[0]["setup_s"], rows[1]["setup_s"]))


if __name__ == "__main__":
    main()
