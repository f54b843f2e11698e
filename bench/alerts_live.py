"""Live alert latency: a real `cohort serve`, a real HTTP receiver, real failing jobs.

For each trial a fresh tenant fails five jobs in a row (its model no longer has a field its
segment reads: the job fails at once, not retried). The latency is the webhook's arrival at
the receiver minus the fifth job's `finished_at` (its failure's commit), both on this
machine's clock. Prints a Markdown table of the distribution; --json also writes it as JSON.
"""
import argparse, json, os, sys, threading, time

from cohort_bench import ADMIN, AS_OF, call, final, fresh_tenant, serve, tenant_alerts_only
from cohort_bench import receiver as start_receiver


def parse_time(text):
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--json", help="also write the distribution to this file")
    a = ap.parse_args()
    root, model, segment = fresh_tenant(a.cohort, a.work, 200)
    broken = json.loads(json.dumps(model))
    broken["objects"][0]["fields"] = [f for f in broken["objects"][0]["fields"] if f["name"] != "email_opt_in"]

    arrivals = {}
    done = threading.Condition()

    def on_post(path, payload, at):
        tenant = payload["alerts"][0]["labels"].get("tenant")
        if payload["status"] == "firing" and tenant:
            with done:
                arrivals.setdefault(tenant, at)
                done.notify_all()

    receiver = start_receiver(on_post)
    config = tenant_alerts_only(a.work)
    server, base = serve(a.cohort, a.work, COHORT_CONFIG=config)
    try:
        call(base, ADMIN, "POST", "/v1/receivers", {"id": "bench", "url": "http://127.0.0.1:%d/hook" % receiver.server_port})
        latencies = []
        for i in range(a.trials):
            t = "bench%04d" % i
            token = call(base, ADMIN, "POST", "/v1/tenants", {"id": t, "region": "r%d" % (i % 4), "data_root": root, "jobs_per_minute": 600000})["token"]
            call(base, token, "PUT", "/v1/tenants/%s/model" % t, model)
            call(base, token, "PUT", "/v1/tenants/%s/segments/lapsed_buyers" % t, {"definition": segment})
            call(base, token, "PUT", "/v1/tenants/%s/model" % t, broken)
            last = None
            for _ in range(5):
                run = call(base, token, "POST", "/v1/tenants/%s/segments/lapsed_buyers/runs" % t, {"as_of": AS_OF})
                view = final(base, token, t, run["id"])
                assert view["status"] == "failed", view
                last = view
            committed = parse_time(last["finished_at"])
            with done:
                done.wait_for(lambda: t in arrivals, timeout=30)
            if t not in arrivals:
                print("trial %s: no webhook within 30 s" % t, file=sys.stderr)
                continue
            latencies.append(arrivals[t] - committed)
    finally:
        server.terminate()
        server.wait(timeout=60)
        receiver.shutdown()
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"trials": a.trials, "alerted": len(latencies), "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99),
                       "max_ms": latencies[-1] * 1000}, f, indent=1)
    print("| trials | p50 | p90 | p99 | max |")
    print("|---:|---:|---:|---:|---:|")
    print("| %d of %d | %.1f ms | %.1f ms | %.1f ms | %.1f ms |" % (len(latencies), a.trials, q(0.5), q(0.9), q(0.99), latencies[-1] * 1000))


if __name__ == "__main__":
    main()
