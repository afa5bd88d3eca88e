#!/usr/bin/python3
"""patrol's benchmark (`make bench`): --rotate-now over 100, 1,000 and 5,000
integrations spread over Vault, AWS and Azure, against the local fake servers,
beside the floor (the same number of bare keep-alive HTTPS requests to the same
servers with the same parallelism); then the daemon idle with 10,000.

    /usr/bin/python3 tests/bench/bench.py --builddir BUILD [--sizes 100,1000,5000]
        [--parallel 8] [--idle 10000] [--idle-seconds 30] [--tools BUILD/tests/bench]

Each size is rotated twice: the first run creates the secrets, the second (the
one reported) rotates existing secrets, as after an incident.  Timing of patrol
comes from wait4() in tests/bench/runstat.c: wall, user+system CPU, peak RSS of
the whole process.  Requests are counted from the servers' /_test/log.  The
floor (tests/bench/floor.c) sends as many GET /_test/clock to each server as
patrol sent it requests, over keep-alive TLS connections, max_parallel threads.
A second table splits the CPU seconds of each run between patrol (or the
floor's client) and the fake servers (from /proc/PID/stat): on a machine
where they share the cores, that bounds how close to the floor patrol can get.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
SRCDIR = HERE.parent.parent
sys.path.insert(0, str(SRCDIR / "tests" / "e2e"))

SCOPES = ["projects.read", "tasks.read"]
ACCOUNTS = 4
AWS_KEY_ID = "AKIABENCHPATROL00001"
AWS_SECRET = "bench/aws/secret-access-key-0123456789abcdef"


class Bench:
    def __init__(self, harness, work, parallel, tools):
        self.h, self.work, self.parallel, self.tools = harness, work, parallel, tools
        self.ca = harness.CA(work / "ca")
        self.servers = {}
        # The same fake servers as the tests, with their cheaper checks (common.py --bench):
        # the floor below is measured against them too.
        self.server_args = ["--bench"]

    def start(self):
        from test_aws_server import AwsServer
        from test_azure_server import AzureServer
        classes = {"aws": AwsServer, "azure": AzureServer, "onplana": self.h.OnplanaServer}
        for name in ("onplana", "vault", "aws", "azure"):
            cls = classes.get(name, self.h.FakeServer)
            self.servers[name] = cls.start(name, self.ca, self.work / "servers", *self.server_args)

    def stop(self):
        for s in self.servers.values():
            s.stop()

    def seed(self, p):
        onp, vault, aws, azure = (self.servers[k] for k in ("onplana", "vault", "aws", "azure"))
        accounts = []
        for i in range(ACCOUNTS):
            a = onp.add_account(client_id=f"cli_bench{i}", org="org_acme", scopes_held=SCOPES)
            accounts.append(p.account(f"svc{i}", a))
        role = vault.ctl("POST", "/_test/approle", {"role_name": "patrol", "policies": ["patrol-rw"]})
        p.write_file("vault-secret-id", role["secret_id"])
        aws.add_user(access_key_id=AWS_KEY_ID, secret_access_key=AWS_SECRET, name="patrol")
        p.write_file("aws-secret-key", AWS_SECRET)
        app = azure.add_app("app-patrol")
        p.write_file("azure-secret", app["client_secret"])
        ca = self.ca.ca_pem
        stores = [
            dict(name="vault", type="vault", url=vault.url, mount="secret", kv_version=2, ca_file=ca,
                 auth=dict(method="approle", role_id=role["role_id"], secret_id_file="vault-secret-id")),
            dict(name="aws", type="aws", region="eu-west-1", endpoint=aws.url, sts_endpoint=aws.url,
                 ca_file=ca, auth=dict(method="static", access_key_id=AWS_KEY_ID,
                                       secret_access_key_file="aws-secret-key")),
            dict(name="azure", type="azure", url=azure.url, authority_url=azure.url, ca_file=ca,
                 auth=dict(method="client_secret", tenant_id=azure.tenant, client_id=app["client_id"],
                           client_secret_file="azure-secret")),
        ]
        return accounts, stores

    def configure(self, p, n, accounts, stores, **top):
        ints = []
        for i in range(n):
            store = stores[i % 3]["name"]
            name = f"int-{i:05d}"
            ints.append(dict(name=name, account=accounts[i % len(accounts)]["name"], scopes=SCOPES,
                             store=store, secret=name if store == "azure" else f"onplana/{name}"))
        cfg = dict(max_parallel=self.parallel, oneshot_timeout="5m",
                   policy=dict(ttl="30d", renew_before="7d", retry_min="1s", retry_max="10s"),
                   onplana=p.onplana_config(self.servers["onplana"]),
                   accounts=accounts, stores=stores, integrations=ints)
        cfg.update(top)
        p.write_config(cfg)

    def clear_logs(self):
        for s in self.servers.values():
            s.clear_log()

    def counts(self):
        return {k: len(s.log()) for k, s in self.servers.items()}

    def run_patrol(self, p, *args):
        cmd = [str(self.tools / "runstat")] + p.command(args)
        proc = subprocess.run(cmd, cwd=str(p.dir), env=p.env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, errors="replace")
        stat = [ln for ln in proc.stderr.splitlines() if ln.startswith("runstat: ")]
        if proc.returncode != 0 or not stat:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"bench: patrol {' '.join(args)} exited {proc.returncode}")
        wall, cpu, rss, _ = stat[-1].split()[1:]
        return dict(wall=float(wall), cpu=float(cpu), rss_kib=int(rss))

    def run_floor(self, counts):
        """The floor's wall time and its client's CPU seconds."""
        cmd = [str(self.tools / "runstat"), str(self.tools / "floor"), self.ca.ca_pem, str(self.parallel)]
        for k, n in counts.items():
            if n:
                cmd += [self.servers[k].url + "/_test/clock", str(n)]
        p = subprocess.run(cmd, check=True, capture_output=True, text=True)
        stat = [ln for ln in p.stderr.splitlines() if ln.startswith("runstat: ")]
        return float(p.stdout.split(": ")[1].split(" s")[0]), float(stat[-1].split()[2])

    def servers_cpu(self):
        """CPU seconds (user + system) the fake servers have used so far."""
        total = 0
        for s in self.servers.values():
            f = pathlib.Path(f"/proc/{s.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        return total / os.sysconf("SC_CLK_TCK")


def rotate_size(b, n, reps):
    p = b.h.Patrol(b.work / f"patrol-{n}", b.ca)
    accounts, stores = b.seed(p)
    b.configure(p, n, accounts, stores)
    b.run_patrol(p, "-q", "--rotate-now")           # creates the secrets
    best = None
    for _ in range(reps):
        b.clear_logs()
        c0 = b.servers_cpu()
        m = b.run_patrol(p, "-q", "--rotate-now")
        c1 = b.servers_cpu()
        m["counts"] = b.counts()
        m["requests"] = sum(m["counts"].values())
        m["floor"], m["floor_client_cpu"] = b.run_floor(m["counts"])
        m["servers_cpu"], m["floor_servers_cpu"] = c1 - c0, b.servers_cpu() - c1
        if best is None or m["wall"] < best["wall"]:
            best = m
    best["n"] = n
    return best


def idle_state(p, n):
    """Records in which nothing is due for 20 days."""
    now = time.time()
    ents = {}
    for i in range(n):
        ents[f"int-{i:05d}"] = {"token_id": f"pat_bench{i:05d}", "expires_at": rfc(now + 27 * 86400),
                                "version": "1", "next_rotation": rfc(now + 20 * 86400 + i),
                                "last_rotation": rfc(now), "last_result": "rotated", "failures": 0}
    p.state_dir.mkdir(mode=0o700, exist_ok=True)
    (p.state_dir / "state.json").write_text(json.dumps({"version": 1, "integrations": ents}))
    os.chmod(p.state_dir / "state.json", 0o600)


def rfc(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def proc_status(pid):
    st = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        st[k] = v.strip()
    return st


def wakeups(pid):
    """Voluntary context switches of every thread: each is one sleep ended."""
    total = 0
    for t in pathlib.Path(f"/proc/{pid}/task").iterdir():
        total += int(proc_status_path(t / "status").get("voluntary_ctxt_switches", 0))
    return total


def proc_status_path(path):
    st = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition(":")
        st[k] = v.strip()
    return st


def idle_daemon(b, n, seconds):
    p = b.h.Patrol(b.work / f"idle-{n}", b.ca)
    accounts, stores = b.seed(p)
    b.configure(p, n, accounts, stores)
    idle_state(p, n)
    b.clear_logs()
    d = p.spawn()
    try:
        if not d.wait_for(lambda: "started with" in d.stderr(), timeout=60):
            raise SystemExit("bench: the daemon did not start:\n" + d.stderr()[-2000:])
        time.sleep(2)           # settle: start-up work is done
        w0, t0 = wakeups(d.pid), time.monotonic()
        time.sleep(seconds)
        w1, t1 = wakeups(d.pid), time.monotonic()
        st = proc_status(d.pid)
        reqs = sum(b.counts().values())
    finally:
        rc = d.stop()
    if rc != 0:
        raise SystemExit(f"bench: the daemon exited {rc}:\n" + d.stderr()[-2000:])
    return dict(n=n, rss_kib=int(st["VmRSS"].split()[0]), hwm_kib=int(st["VmHWM"].split()[0]),
                wakeups=w1 - w0, seconds=t1 - t0, per_hour=(w1 - w0) * 3600 / (t1 - t0),
                requests=reqs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--tools", help="where floor and runstat are (default BUILDDIR/tests/bench)")
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    builddir = pathlib.Path(args.builddir).resolve()
    os.environ["PATROL_BUILDDIR"] = str(builddir)
    os.environ.setdefault("PATROL_SRCDIR", str(SRCDIR))
    import harness
    tools = pathlib.Path(args.tools or builddir / "tests" / "bench")
    work = pathlib.Path(tempfile.mkdtemp(prefix="patrol-bench-", dir=os.environ.get("BENCH_DIR")))
    os.chmod(work, 0o700)
    b = Bench(harness, work, args.parallel, tools)
    rows = []
    try:
        b.start()
        print(f"patrol --rotate-now, max_parallel = {args.parallel}, {os.cpu_count()} CPUs; "
              f"integrations spread over vault, aws, azure")
        print(f"{'integrations':>12} {'wall s':>8} {'floor s':>8} {'x floor':>8} {'CPU ms/rot':>11} "
              f"{'peak RSS MiB':>13} {'req/rot':>8}")
        for n in (int(x) for x in args.sizes.split(",") if x):
            m = rotate_size(b, n, args.reps)
            rows.append(m)
            print(f"{n:>12} {m['wall']:>8.2f} {m['floor']:>8.2f} {m['wall'] / m['floor']:>8.2f} "
                  f"{1000 * m['cpu'] / n:>11.3f} {m['rss_kib'] / 1024:>13.1f} "
                  f"{m['requests'] / n:>8.2f}", flush=True)
        # Both runs are bound by the CPUs they share with the servers: the
        # CPU seconds of each side tell how close to the floor patrol can get.
        print("where the CPU goes (seconds; patrol or the floor's client, and the fake servers):")
        print(f"{'integrations':>12} {'patrol':>8} {'servers':>8} {'floor client':>13} {'servers':>8} "
              f"{'patrol ms/req':>14} {'client ms/req':>14}")
        for m in rows:
            print(f"{m['n']:>12} {m['cpu']:>8.2f} {m['servers_cpu']:>8.2f} {m['floor_client_cpu']:>13.2f} "
                  f"{m['floor_servers_cpu']:>8.2f} {1000 * m['cpu'] / m['requests']:>14.3f} "
                  f"{1000 * m['floor_client_cpu'] / m['requests']:>14.3f}", flush=True)
        if args.idle:
            m = idle_daemon(b, args.idle, args.idle_seconds)
            rows.append(m)
            print(f"daemon idle with {m['n']} integrations: RSS {m['rss_kib'] / 1024:.1f} MiB "
                  f"(peak {m['hwm_kib'] / 1024:.1f} MiB), {m['wakeups']} wake-ups in "
                  f"{m['seconds']:.0f} s = {m['per_hour']:.0f}/hour, {m['requests']} requests")
    finally:
        b.stop()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)])
        else:
            print(f"work folder: {work}")
    json.dump(rows, open(os.environ.get("BENCH_JSON", os.devnull), "w"), indent=1)


if __name__ == "__main__":
    main()
