#!/usr/bin/python3
"""Rotate etc/patrol.conf.example's integrations into local fake services.

Starts the fake Onplana and secret stores from tests/servers (TLS with a CA
made now), seeds them with the example's accounts and store credentials,
writes a copy of the example whose URLs point at them, then runs
`patrol --rotate-now` and `patrol --status`, and reads the new token back as
a consumer would (hvac / boto3 / azure SDK).  Token values are never printed.
"""
import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "e2e"))
harness = None      # imported once PATROL_BUILDDIR is known

EXAMPLE = HERE.parent / "etc" / "patrol.conf.example"


def read_secret_file(name):
    return (EXAMPLE.parent / name).read_text().strip()


def seed_onplana(onplana):
    for cid, secret in (("cli_8f2c", "svc-warehouse.secret"), ("cli_41d7", "svc-billing.secret")):
        onplana.add_account(client_id=cid, org="org_acme", client_secret=read_secret_file(secret),
                            scopes_held=["projects.read", "tasks.read", "reports.read",
                                         "invoices.read", "time_entries.read"])


def seed_vault(vault, text):
    ns = re.search(r'namespace = "([^"]+)"', text).group(1)
    role_id = re.search(r'role_id = "([^"]+)"', text).group(1)
    vault.ctl("POST", "/_test/namespaces", {"path": ns})
    vault.ctl("POST", "/_test/mounts", {"namespace": ns, "path": "secret", "version": 2})
    vault.ctl("POST", "/_test/approle", {"namespace": ns, "role_name": "patrol", "role_id": role_id,
                                          "secret_id": read_secret_file("vault-secret-id"),
                                          "policies": ["patrol-rw"]})
    return ns


def local_config(text, work, servers, ca):
    """The example, pointed at the local servers."""
    onplana, vault = servers["onplana"], servers["vault"]
    text = re.sub(r'state_dir\s*=\s*"[^"]*";', f'state_dir = "{work}/state";', text)
    text = re.sub(r'metrics_file\s*=\s*"[^"]*";', f'metrics_file = "{work}/patrol.prom";', text)
    text = text.replace('url     = "https://api.onplana.com";',
                        f'url = "{onplana.url}"; ca_file = "{ca.ca_pem}";')
    text = text.replace('url = "https://vault.internal:8200";', f'url = "{vault.url}"; ca_file = "{ca.ca_pem}";')
    text = re.sub(r'on_rotate = \[[^\]]*\];', 'on_rotate = [ "/bin/echo", "reloading the consumer" ];', text)
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--builddir", default="build/demo")
    args = ap.parse_args()
    global harness
    os.environ["PATROL_BUILDDIR"] = str(pathlib.Path(args.builddir).resolve())
    import harness as h
    harness = h
    work = pathlib.Path(tempfile.mkdtemp(prefix="patrol-demo-"))
    os.chmod(work, 0o700)
    ca = harness.CA(work / "ca")
    servers = {}
    try:
        for name in ("onplana", "vault"):
            cls = harness.SERVER_CLASSES.get(name, harness.FakeServer)
            servers[name] = cls.start(name, ca, work / "servers")
        seed_onplana(servers["onplana"])
        text = EXAMPLE.read_text()
        seed_vault(servers["vault"], text)
        p = harness.Patrol(work / "patrol", ca)
        for f in ("svc-warehouse.secret", "svc-billing.secret", "vault-secret-id"):
            p.write_file(f, read_secret_file(f))
        p.write_config(local_config(text, p.dir, servers, ca))
        names = ["warehouse-ingest-prod"]
        steps = [("--check-config",), ("--rotate-now", *names), ("--rotate-now", *names), ("--status",)]
        rc = 0
        for argv in steps:
            print(f"\n$ patrol -c {p.config_path} {' '.join(argv)}", flush=True)
            r = p.run(*argv)
            sys.stdout.write(r.stdout)
            sys.stdout.write(r.stderr)
            rc = rc or r.rc
        print(f"\nState and audit log: {p.state_dir}")
        import hvac
        ns = re.search(r'namespace = "([^"]+)"', text).group(1)
        c = hvac.Client(url=servers["vault"].url, verify=ca.ca_pem, namespace=ns)
        c.auth.approle.login(role_id=re.search(r'role_id = "([^"]+)"', text).group(1),
                             secret_id=read_secret_file("vault-secret-id"))
        data = c.secrets.kv.v2.read_secret_version(path="onplana/warehouse-ingest-prod",
                                                   mount_point="secret")["data"]["data"]
        tok = servers["onplana"].token(data["token_id"])
        print(f"A consumer reading Vault ({ns}) secret/onplana/warehouse-ingest-prod with hvac gets "
              f"token {data['token_id']} ({tok['prefix']}...), {tok['state']} at Onplana, "
              f"expires {data['expires_at']}.")
        ok = tok["state"] == "active" and tok["token"] == data["token"]
        print("demo: ok" if ok and rc == 0 else "demo: FAILED")
        return 0 if ok and rc == 0 else 1
    finally:
        for s in servers.values():
            s.stop()


if __name__ == "__main__":
    sys.exit(main())
