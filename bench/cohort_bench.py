"""What the live benchmarks share: the admin token, the API call, a datagen tenant, a release
`cohort serve` on a free loopback port, and waiting for a job's final state (long polls)."""
import json, os, shutil, subprocess, threading, urllib.request

AS_OF = "2026-11-01T00:00:00Z"
ADMIN = "bench-admin-token-0123456789"


def call(base, token, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        text = r.read()
        return json.loads(text) if text else None


def fresh_tenant(cohort, work, scale):
    """Empties `work`, generates a retail tenant in it: (its real path, model, lapsed_buyers)."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    root = os.path.join(work, "tenant")
    subprocess.run([cohort, "datagen", "--profile", "retail", "--scale", str(scale), "--seed", "3", "--out", root],
                   check=True, stderr=subprocess.DEVNULL)
    root = os.path.realpath(root)
    model = json.load(open(os.path.join(root, "model.json")))
    segment = json.load(open(os.path.join(root, "segments", "lapsed_buyers.json")))
    return root, model, segment


def serve(cohort, work, **env):
    """Starts `cohort serve` with its data in `work`: (process, base URL). Its log goes to
    work/serve.log; its standard output is drained after the line that says where it listens."""
    env = dict(os.environ, COHORT_ADMIN_TOKEN=ADMIN, COHORT_LOG="warn", **env)
    server = subprocess.Popen([cohort, "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(work, "data"), "--workers", "2"],
                              stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serve.log"), "w"), env=env, text=True)
    base = None
    for line in server.stdout:
        if line.startswith("cohort listening on "):
            base = line.split()[-1]
            break
    if base is None:
        server.wait()
        raise SystemExit("cohort serve stopped before listening; see %s" % os.path.join(work, "serve.log"))
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    return server, base


def final(base, token, tenant, job):
    """The job's view once it is succeeded, failed or cancelled."""
    view = call(base, token, "GET", "/v1/tenants/%s/runs/%s" % (tenant, job))
    while view["status"] not in ("succeeded", "failed", "cancelled"):
        view = call(base, token, "GET", "/v1/tenants/%s/runs/%s?wait_seconds=30&while_status=%s" % (tenant, job, view["status"]))
    return view
