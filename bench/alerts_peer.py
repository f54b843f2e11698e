"""Alert latency side by side: Cohort's own failure alert, and Prometheus + Alertmanager with
their default settings alerting on Cohort's own `/metrics`, timed by one webhook receiver over
the same failures.

One release `cohort serve` (SQLite), one Prometheus scraping its `/metrics`, one Alertmanager,
one HTTP receiver with two paths: Cohort's webhook posts to /cohort, Alertmanager's to
/alertmanager. Prometheus evaluates the issue's rule, grouped by tenant so that each tenant
alerts on its own:

    sum by (tenant) (increase(cohort_job_failures_total[10m])) >= 5

Settings are the built-in defaults of both (Prometheus: scrape_interval 1m, scrape_timeout 10s,
evaluation_interval 1m; Alertmanager: group_wait 30s, group_interval 5m, repeat_interval 4h).
Only these are configured: the scrape target, the rule file, the Alertmanager address, and
Alertmanager's one route and receiver with `group_by: [tenant]` (a routing choice, not a
timing one: without it Alertmanager puts every tenant's alert in one group, and an alert that
joins a group already notified waits for group_interval, 5 minutes). Cohort runs with its
defaults too, except that its region and global failure rules are raised out of reach, as in
bench/alerts_live.py: 20 tenants failing in four regions would otherwise fire region alerts
that inhibit the tenant ones, and Prometheus has only the tenant rule.

Each primed trial tenant fails one job, then, more than 10 minutes later (so Cohort's window
no longer holds it), five jobs in a row. The first failure makes sure Prometheus has scraped
the tenant's series before its burst: Cohort shows `cohort_job_failures_total` at 0 for every
error class of a tenant from its creation on, but `increase()` cannot see the increments that
create a series, so five failures of a tenant created within the same scrape interval are
invisible to Prometheus. A few unprimed tenants (created, then five failures at once) show
that case. Bursts are staggered so they fall at every phase of the scrape
and evaluation cycles, and overlap in time.

The latency is the first firing notification's arrival at the receiver minus the fifth
failure's commit (the job's `finished_at` from the API), on this machine's clock. For
Alertmanager it is split at the alert's `startsAt` (the Prometheus evaluation that found it).
Prints a Markdown table; --json writes the numbers.
"""
import argparse, json, os, re, socket, subprocess, sys, threading, time, urllib.parse, urllib.request

from cohort_bench import ADMIN, AS_OF, call, final, fresh_tenant, serve, tenant_alerts_only
from cohort_bench import receiver as start_receiver

RULE = "sum by (tenant) (increase(cohort_job_failures_total[10m])) >= 5"
WINDOW_SECONDS = 600


def parse_time(text):
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def wait_ready(url, what, process, log, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit("%s stopped (exit %s); see %s" % (what, process.returncode, log))
        try:
            get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("%s not ready within %d s; see %s" % (what, seconds, log))


def quantiles(values):
    """Nearest-rank quantiles in milliseconds, as bench/alerts_live.py takes them."""
    v = sorted(values)
    if not v:
        return {"n": 0}
    q = lambda p: v[min(len(v) - 1, int(p * len(v)))] * 1000
    return {"n": len(v), "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": v[-1] * 1000, "min_ms": v[0] * 1000}


def fmt_ms(ms):
    return "%.1f s" % (ms / 1000) if ms >= 10000 else "%.1f ms" % ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--trials", type=int, default=20, help="primed tenants, each five failures (default 20)")
    ap.add_argument("--unprimed", type=int, default=2, help="tenants failing five jobs with no earlier failure (default 2)")
    ap.add_argument("--stagger", type=float, default=7.0, help="seconds between two tenants' bursts (default 7)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds after the fifth failure to wait for a notification")
    ap.add_argument("--prometheus", default="/usr/bin/prometheus")
    ap.add_argument("--alertmanager", default="/usr/bin/prometheus-alertmanager")
    ap.add_argument("--scrape-interval", default="", help="set Prometheus's global scrape_interval (default: not set, the built-in 1m)")
    ap.add_argument("--evaluation-interval", default="", help="set Prometheus's global evaluation_interval (default: not set, the built-in 1m)")
    ap.add_argument("--json", help="also write the numbers to this file")
    a = ap.parse_args()
    if a.trials + a.unprimed > 50:
        # Beyond the default top 50, tenants are summed into tenant="other" and move in and
        # out of it as they rank, which Prometheus would read as counter resets.
        raise SystemExit("at most 50 tenants in all (Cohort's per-tenant series are its top 50)")
    log = lambda *m: print(time.strftime("%H:%M:%S"), *m, file=sys.stderr, flush=True)

    root, model, segment = fresh_tenant(a.cohort, a.work, 200)
    broken = json.loads(json.dumps(model))
    broken["objects"][0]["fields"] = [f for f in broken["objects"][0]["fields"] if f["name"] != "email_opt_in"]

    # The receiver: first firing notification per (source, tenant), and Alertmanager's startsAt.
    arrivals = {"cohort": {}, "alertmanager": {}}
    starts = {}
    notifications = {"cohort": 0, "alertmanager": 0}
    lock = threading.Lock()

    def on_post(path, payload, at):
        source = path.strip("/")
        with lock:
            if source in arrivals:
                notifications[source] += 1
                for alert in payload.get("alerts", []):
                    labels = alert.get("labels", {})
                    tenant = labels.get("tenant")
                    if alert.get("status") != "firing" or not tenant:
                        continue
                    if source == "cohort" and (labels.get("alertname") != "CohortJobFailures" or labels.get("scope") != "tenant"):
                        continue
                    if tenant not in arrivals[source]:
                        arrivals[source][tenant] = at
                        if source == "alertmanager":
                            starts[tenant] = parse_time(alert["startsAt"])

    receiver = start_receiver(on_post)
    hook = "http://127.0.0.1:%d" % receiver.server_port

    config = tenant_alerts_only(a.work)
    processes = []
    server, base = serve(a.cohort, a.work, COHORT_CONFIG=config)
    processes.append(server)
    try:
        call(base, ADMIN, "POST", "/v1/receivers", {"id": "bench", "url": hook + "/cohort"})

        # Alertmanager: defaults but for the one route and its webhook.
        am_dir = os.path.join(a.work, "alertmanager")
        os.makedirs(am_dir)
        am_port = free_port()
        with open(os.path.join(am_dir, "alertmanager.yml"), "w") as f:
            f.write("# Every timing setting left at Alertmanager's built-in default.\n"
                    "route:\n  receiver: bench\n  group_by: [tenant]\n"
                    "receivers:\n- name: bench\n  webhook_configs:\n  - url: %s/alertmanager\n" % hook)
        am_log = os.path.join(am_dir, "alertmanager.log")
        am = subprocess.Popen([a.alertmanager, "--config.file=" + os.path.join(am_dir, "alertmanager.yml"),
                               "--storage.path=" + os.path.join(am_dir, "data"),
                               "--web.listen-address=127.0.0.1:%d" % am_port, "--cluster.listen-address="],
                              stdout=subprocess.DEVNULL, stderr=open(am_log, "w"))
        processes.append(am)
        am_url = "http://127.0.0.1:%d" % am_port
        wait_ready(am_url + "/-/ready", "alertmanager", am, am_log)

        # Prometheus: no global section (the built-in intervals) unless asked.
        prom_dir = os.path.join(a.work, "prometheus")
        os.makedirs(prom_dir)
        prom_port = free_port()
        with open(os.path.join(prom_dir, "rules.yml"), "w") as f:
            f.write("groups:\n- name: cohort\n  rules:\n  - alert: CohortTenantFailures\n    expr: %s\n" % RULE)
        glob = ""
        if a.scrape_interval or a.evaluation_interval:
            glob = "global:\n" + ("  scrape_interval: %s\n" % a.scrape_interval if a.scrape_interval else "") \
                + ("  evaluation_interval: %s\n" % a.evaluation_interval if a.evaluation_interval else "")
        with open(os.path.join(prom_dir, "prometheus.yml"), "w") as f:
            f.write(glob + "rule_files: [rules.yml]\n"
                    "alerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['127.0.0.1:%d']\n"
                    "scrape_configs:\n- job_name: cohort\n  static_configs:\n  - targets: ['%s']\n"
                    % (am_port, urllib.parse.urlparse(base).netloc))
        prom_log = os.path.join(prom_dir, "prometheus.log")
        prom = subprocess.Popen([a.prometheus, "--config.file=" + os.path.join(prom_dir, "prometheus.yml"),
                                 "--storage.tsdb.path=" + os.path.join(prom_dir, "data"),
                                 "--web.listen-address=127.0.0.1:%d" % prom_port],
                                stdout=subprocess.DEVNULL, stderr=open(prom_log, "w"))
        processes.append(prom)
        prom_url = "http://127.0.0.1:%d" % prom_port
        wait_ready(prom_url + "/-/ready", "prometheus", prom, prom_log)

        # The settings in force, as each reports them (defaults filled in).
        effective = json.loads(get(prom_url + "/api/v1/status/config"))["data"]["yaml"]
        setting = lambda text, key, default="?": (re.search(r"\b%s: (\S+)" % key, text) or [None, default])[1]
        # Alertmanager's status leaves unset route timings out; its dispatcher then uses these
        # (DefaultRouteOpts in dispatch/route.go).
        am_effective = json.loads(get(am_url + "/api/v2/status"))["config"]["original"]
        settings = {
            "prometheus_version": subprocess.run([a.prometheus, "--version"], capture_output=True, text=True).stdout.split("\n")[0],
            "alertmanager_version": subprocess.run([a.alertmanager, "--version"], capture_output=True, text=True).stdout.split("\n")[0],
            "scrape_interval": setting(effective, "scrape_interval"),
            "scrape_timeout": setting(effective, "scrape_timeout"),
            "evaluation_interval": setting(effective, "evaluation_interval"),
            "group_by": "[tenant]",
            "group_wait": setting(am_effective, "group_wait", "30s"),
            "group_interval": setting(am_effective, "group_interval", "5m"),
            "repeat_interval": setting(am_effective, "repeat_interval", "4h"),
            "rule": RULE,
        }
        log("prometheus %s, alertmanager %s: scrape_interval %s, evaluation_interval %s, group_wait %s, group_interval %s"
            % (prom_url, am_url, settings["scrape_interval"], settings["evaluation_interval"], settings["group_wait"], settings["group_interval"]))

        tokens = {}

        def tenant(t, i):
            token = call(base, ADMIN, "POST", "/v1/tenants", {"id": t, "region": "r%d" % (i % 4), "data_root": root, "jobs_per_minute": 600000})["token"]
            call(base, token, "PUT", "/v1/tenants/%s/model" % t, model)
            call(base, token, "PUT", "/v1/tenants/%s/segments/lapsed_buyers" % t, {"definition": segment})
            call(base, token, "PUT", "/v1/tenants/%s/model" % t, broken)
            tokens[t] = token

        def fail(t, n):
            """n failed jobs in a row; the last one's commit time."""
            last = None
            for _ in range(n):
                run = call(base, tokens[t], "POST", "/v1/tenants/%s/segments/lapsed_buyers/runs" % t, {"as_of": AS_OF})
                last = final(base, tokens[t], t, run["id"])
                if last["status"] != "failed":
                    raise SystemExit("tenant %s: a job meant to fail ended %s" % (t, last["status"]))
            return parse_time(last["finished_at"])

        def sleep_until(at):
            while True:
                left = at - time.time()
                if left <= 0:
                    return
                time.sleep(min(left, 30))

        unprimed = ["u%02d" % i for i in range(a.unprimed)]
        primed = ["p%03d" % i for i in range(a.trials)]
        for i, t in enumerate(unprimed + primed):
            tenant(t, i)
        committed = {}
        started = time.time()

        # Unprimed tenants first: their wait for a notification fits in the primed ones' wait.
        for i, t in enumerate(unprimed):
            if i:
                time.sleep(a.stagger)
            committed[t] = fail(t, 5)
            log("unprimed %s: five failures" % t)
        for t in primed:
            fail(t, 1)
        primed_at = time.time()
        text = get(base + "/metrics").decode()
        missing = [t for t in primed if 'cohort_job_failures_total{tenant="%s"' % t not in text]
        if missing:
            raise SystemExit("/metrics has no cohort_job_failures_total series for %s" % ", ".join(missing[:5]))
        bursts_at = primed_at + WINDOW_SECONDS + 5
        log("%d tenants failed one job each; their bursts start at %s, after Cohort's 10-minute window"
            % (len(primed), time.strftime("%H:%M:%S", time.localtime(bursts_at))))
        sleep_until(bursts_at - 60)
        seen = json.loads(get(prom_url + "/api/v1/query?" + urllib.parse.urlencode(
            {"query": 'count(cohort_job_failures_total{tenant=~"p.*"})'})))["data"]["result"]
        seen = int(seen[0]["value"][1]) if seen else 0
        if seen < len(primed):
            log("warning: Prometheus has series of only %d of %d primed tenants" % (seen, len(primed)))
        for i, t in enumerate(primed):
            sleep_until(bursts_at + i * a.stagger)
            committed[t] = fail(t, 5)
        log("all bursts done; waiting for notifications (at most %.0f s)" % a.timeout)
        deadline = max(committed.values()) + a.timeout
        everyone = unprimed + primed
        while time.time() < deadline:
            with lock:
                if all(t in arrivals["cohort"] for t in everyone) and all(t in arrivals["alertmanager"] for t in primed):
                    break
            time.sleep(0.5)
        wall = time.time() - started
    finally:
        for p in reversed(processes):
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        receiver.shutdown()

    with lock:
        lat = lambda source, ts: [arrivals[source][t] - committed[t] for t in ts if t in arrivals[source]]
        cohort = quantiles(lat("cohort", primed))
        peer = quantiles(lat("alertmanager", primed))
        detect = quantiles([starts[t] - committed[t] for t in primed if t in starts])
        notify = quantiles([arrivals["alertmanager"][t] - starts[t] for t in primed if t in starts])
        result = {
            "settings": settings,
            "trials": len(primed), "stagger_seconds": a.stagger, "timeout_seconds": a.timeout, "wall_seconds": wall,
            "cohort": cohort, "alertmanager": peer,
            "alertmanager_detect": detect, "alertmanager_notify": notify,
            "unprimed": {"trials": len(unprimed), "cohort_alerted": len(lat("cohort", unprimed)),
                         "alertmanager_alerted": len(lat("alertmanager", unprimed)),
                         "cohort": quantiles(lat("cohort", unprimed))},
            "notifications": dict(notifications),
        }
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)

    def row(name, q, of):
        if not q["n"]:
            return "| %s | 0 of %d | - | - | - | - |" % (name, of)
        return "| %s | %d of %d | %s | %s | %s | %s |" % (name, q["n"], of, fmt_ms(q["p50_ms"]), fmt_ms(q["p90_ms"]), fmt_ms(q["p99_ms"]), fmt_ms(q["max_ms"]))

    s = settings
    # "prometheus, version 2.42.0+ds (branch: …)" → "Prometheus 2.42.0+ds"
    short = lambda v: " ".join(w.capitalize() if i == 0 else w for i, w in enumerate(v.replace(",", "").split()[::2][:2]))
    print("%s and %s (Debian packages); Prometheus scrape_interval %s, scrape_timeout %s, evaluation_interval %s; Alertmanager "
          "group_by [tenant], group_wait %s, group_interval %s, repeat_interval %s. Rule: `%s`. Cohort: its "
          "defaults (tenant rule 5 failures in 10m, alert_settle_ms 50), region and global rules raised out of reach."
          % (short(s["prometheus_version"]), short(s["alertmanager_version"]), s["scrape_interval"], s["scrape_timeout"], s["evaluation_interval"],
             s["group_wait"], s["group_interval"], s["repeat_interval"], s["rule"]))
    print()
    print("%d tenants, each one failure, then after Cohort's 10-minute window five failures in a row; bursts %.0f s apart; "
          "latency from the fifth failure's commit to the first firing notification at the receiver (one receiver for both)."
          % (len(primed), a.stagger))
    print()
    print("| notifier | alerted | p50 | p90 | p99 | max |")
    print("|---|---:|---:|---:|---:|---:|")
    print(row("Cohort (its own webhook)", cohort, len(primed)))
    print(row("Prometheus + Alertmanager", peer, len(primed)))
    print(row("  of which: to Prometheus's startsAt (scrape + evaluation)", detect, len(primed)))
    print(row("  of which: startsAt to arrival (Alertmanager's group_wait, delivery)", notify, len(primed)))
    print()
    if unprimed:
        print("Unprimed tenants (created, then five failures at once, before a scrape saw their series): Cohort alerted for %d of %d "
              "(p50 %s), Prometheus + Alertmanager for %d of %d within %.0f s."
              % (result["unprimed"]["cohort_alerted"], len(unprimed),
                 fmt_ms(result["unprimed"]["cohort"].get("p50_ms", float("nan"))),
                 result["unprimed"]["alertmanager_alerted"], len(unprimed), a.timeout))
        print()
    print("Quantiles are nearest-rank: with %d trials p99 is the largest. Wall time %.0f s." % (len(primed), wall))


if __name__ == "__main__":
    main()
