"""What the live benchmarks share: the admin token, the API call, a datagen tenant, a release
`cohort serve` on a free loopback port, waiting for a job's final state (long polls), and a
webhook receiver."""
import http.server, json, os, shutil, subprocess, threading, time, urllib.request

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
    # The benchmarks' receivers listen on loopback.
    env = dict(os.environ, COHORT_ADMIN_TOKEN=ADMIN, COHORT_LOG="warn", COHORT_WEBHOOK_ALLOW_LOOPBACK="true", **env)
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


def receiver(on_post):
    """Starts an HTTP receiver on a free loopback port; each POST calls on_post(path, payload,
    arrival time) and is answered 200. Returns the server (its port: server.server_port)."""

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            at = time.time()
            on_post(self.path, json.loads(body), at)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def tenant_alerts_only(work):
    """A config file in `work` raising the region and global failure rules out of reach, so
    only tenant alerts fire. Returns its path."""
    config = os.path.join(work, "cohort.toml")
    with open(config, "w") as f:
        f.write("[alerts.failures.region]\nthreshold = 1000000\n[alerts.failures.global]\nthreshold = 1000000\n")
    return config
