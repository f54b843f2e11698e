"""Job outcomes for the alert replay benchmarks: N outcomes, about 50 a second from 2026-03-01,
40% failures over 2,000 tenants in 8 regions (a tenth of them from 20 hot tenants), seed 7;
the same N gives the same file.

    python3 bench/alerts_events.py N OUT.jsonl
"""
import datetime
import random
import sys

n, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(7)
t = datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc).timestamp() * 1000
with open(out, "w") as f:
    for i in range(n):
        t += rng.expovariate(1 / 20)  # about 50 outcomes a second
        tenant = rng.randrange(2000) if rng.random() < 0.9 else rng.randrange(20)  # some tenants are hot
        failed = rng.random() < 0.4
        stamp = datetime.datetime.fromtimestamp(int(t) / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        f.write('{"at": "%s", "tenant": "t%d", "region": "r%d", "job": "j%d", "outcome": "%s"}\n'
                % (stamp, tenant, tenant % 8, i, "failed" if failed else "succeeded"))
