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


AWS_KEY_ID = "AKIADEMOPATROL000001"
AWS_SECRET = "demo/aws/secret-access-key-0123456789abcdef"


def seed_aws(aws):
    aws.add_user(access_key_id=AWS_KEY_ID, secret_access_key=AWS_SECRET, name="patrol-demo")


def seed_azure(azure):
    azure.add_identity()        # the VM's system-assigned identity, reached over IMDS


def local_config(text, work, servers, ca):
    """The example, pointed at the local servers."""
    onplana, vault = servers["onplana"], servers["vault"]
    aws, azure = servers["aws"], servers["azure"]
    text = text.replace('region = "eu-west-1";',
                        f'region = "eu-west-1"; endpoint = "{aws.url}"; sts_endpoint = "{aws.url}";'
                        f' imds_endpoint = "{aws.plain_url}"; ca_file = "{ca.ca_pem}";')
    text = text.replace('url = "https://acme-kv.vault.azure.net";',
                        f'url = "{azure.url}"; imds_endpoint = "{azure.plain_url}";'
                        f' authority_url = "{azure.url}"; ca_file = "{ca.ca_pem}";')
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
        from test_aws_server import AwsServer
        from test_azure_server import AzureServer
        classes = {"aws": AwsServer, "azure": AzureServer}
        for name in ("onplana", "vault", "aws", "azure"):
            cls = classes.get(name) or harness.SERVER_CLASSES.get(name, harness.FakeServer)
            servers[name] = cls.start(name, ca, work / "servers")
        seed_onplana(servers["onplana"])
        text = EXAMPLE.read_text()
        seed_vault(servers["vault"], text)
        seed_aws(servers["aws"])
        seed_azure(servers["azure"])
        p = harness.Patrol(work / "patrol", ca)
        for f in ("svc-warehouse.secret", "svc-billing.secret", "vault-secret-id"):
            p.write_file(f, read_secret_file(f))
        p.write_config(local_config(text, p.dir, servers, ca))
        steps = [("--check-config",), ("--rotate-now",), ("--rotate-now",), ("--status",)]
        # the AWS store uses the SDKs' default chain: here, the environment
        aws_env = {"AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
        rc = 0
        for argv in steps:
            print(f"\n$ patrol -c {p.config_path} {' '.join(argv)}", flush=True)
            r = p.run(*argv, env=aws_env)
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
        import boto3
        sm = boto3.client("secretsmanager", region_name="eu-west-1", endpoint_url=servers["aws"].url,
                          verify=ca.ca_pem, aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET)
        got = sm.get_secret_value(SecretId="onplana/warehouse-reports")
        tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId="onplana/warehouse-reports")["Tags"]}
        atok = servers["onplana"].token(tags["token_id"])
        print(f"A consumer reading AWS Secrets Manager onplana/warehouse-reports (AWSCURRENT) with boto3 "
              f"gets token {tags['token_id']} ({atok['prefix']}...), {atok['state']} at Onplana.")
        ok = ok and atok["state"] == "active" and atok["token"] == got["SecretString"]
        az = servers["azure"].vault()["onplana-billing-export"]
        print(f"Azure Key Vault secret onplana-billing-export has {len(az['versions'])} versions; "
              f"the newest expires at {az['versions'][-1].get('attributes', {}).get('exp')}.")
        print("demo: ok" if ok and rc == 0 else "demo: FAILED")
        return 0 if ok and rc == 0 else 1
    finally:
        for s in servers.values():
            s.stop()


if __name__ == "__main__":
    sys.exit(main())
