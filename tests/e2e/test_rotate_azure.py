"""End-to-end: patrol --rotate-now into the fake Azure Key Vault, checked against the fake
Onplana and read back by a consumer with azure.keyvault.secrets.SecretClient."""
import json
import re

import pytest

import harness
from test_azure_server import AzureServer, secret_client, secret_credential

SCOPES = ["projects.read", "tasks.read"]
VERSION_RE = re.compile(r"[0-9a-f]{32}")


class Setup:
    """One account, one Azure store (client secret), integrations built per test."""

    def __init__(self, patrol, onplana, azure, ca):
        self.patrol, self.onplana, self.azure, self.ca = patrol, onplana, azure, ca
        self.acct = onplana.add_account(client_id="cli_wh", org="org_acme",
                                        scopes_held=SCOPES + ["reports.read"])
        self.app = azure.add_app("app-patrol")
        self.tenant = azure.tenant
        patrol.write_file("azure-secret", self.app["client_secret"])
        self.store = dict(name="azure", type="azure", url=azure.url, ca_file=ca.ca_pem,
                          authority_url=azure.url,
                          auth=dict(method="client_secret", tenant_id=self.tenant,
                                    client_id=self.app["client_id"],
                                    client_secret_file="azure-secret"))
        self.extra_secrets = [self.app["client_secret"]]

    def integration(self, name="ci-reader", **kw):
        d = dict(name=name, account="svc", scopes=SCOPES, store="azure", secret=name)
        d.update(kw)
        return d

    def configure(self, integrations, store=None, **top):
        cfg = dict(policy=dict(ttl="30d", renew_before="7d", retry_min="1s", retry_max="2s"),
                   oneshot_timeout="20s",
                   onplana=self.patrol.onplana_config(self.onplana),
                   accounts=[self.patrol.account("svc", self.acct)],
                   stores=[store or self.store], integrations=integrations)
        cfg.update(top)
        self.patrol.write_config(cfg)

    def consumer(self):
        """What an application reading the secret sees (the Azure SDK)."""
        return secret_client(self.azure, secret_credential(self.azure, self.app))

    def versions(self, name="ci-reader"):
        s = self.azure.vault().get(name)
        return s["versions"] if s else []

    def active_tokens(self, name):
        return [t for t in self.onplana.tokens(account="cli_wh")
                if t["state"] == "active" and t["name"].startswith(name + "-")]


@pytest.fixture
def azure(start_server):
    return start_server("azure", cls=AzureServer)


@pytest.fixture
def env(patrol, onplana, azure, ca):
    return Setup(patrol, onplana, azure, ca)


def rotate(env, *names, ok=True, run_env=None):
    r = env.patrol.run("--rotate-now", *names, env=run_env)
    if ok:
        assert r.rc == 0, r
    return r


def out(r):
    return r.stdout + r.stderr


def test_json_creates_the_secret_with_expiry_and_marker(env, no_leaks):
    env.configure([env.integration()])
    r = rotate(env)
    assert "ci-reader: rotated" in r.stdout
    tok = env.active_tokens("ci-reader")[0]
    s = env.consumer().get_secret("ci-reader")
    value = json.loads(s.value)
    assert value["token"] == tok["token"] and value["token_id"] == tok["id"]
    assert value["managed_by"] == "patrol" and value["expires_at"] == tok["expiresAt"]
    assert sorted(value["scopes"]) == sorted(SCOPES)
    assert s.properties.content_type == "application/json"
    assert s.properties.tags == {"managed_by": "patrol"}
    assert int(s.properties.expires_on.timestamp()) == int(harness.parse_rfc3339(tok["expiresAt"]))
    audit = env.patrol.audit()
    assert [a["event"] for a in audit] == ["rotated"]
    assert audit[0]["version"] == s.properties.version and VERSION_RE.fullmatch(audit[0]["version"])
    puts = env.azure.requests_to("PUT", r"/secrets/ci-reader")
    assert len(puts) == 1 and "api-version=7.4" in puts[0]["query"]
    no_leaks(secrets=env.extra_secrets)


def test_second_rotation_adds_a_version_and_revokes_the_old_token(env, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    first = env.active_tokens("ci-reader")[0]
    r = rotate(env, "ci-reader")
    assert f"rotated {first['id']} ->" in r.stdout
    assert env.onplana.token(first["id"])["state"] == "revoked"
    new = env.active_tokens("ci-reader")
    assert len(new) == 1 and len(env.versions()) == 2
    assert json.loads(env.consumer().get_secret("ci-reader").value)["token"] == new[0]["token"]
    assert env.patrol.audit()[-1]["version"] == env.versions()[-1]["id"].rsplit("/", 1)[1]
    no_leaks(secrets=env.extra_secrets)


def test_raw_format_keeps_metadata_in_tags(env, azure, no_leaks):
    env.configure([env.integration(format="raw")])
    rotate(env)
    tok = env.active_tokens("ci-reader")[0]
    s = env.consumer().get_secret("ci-reader")
    assert s.value == tok["token"] and s.properties.content_type is None
    tags = s.properties.tags
    assert tags["managed_by"] == "patrol" and tags["token_id"] == tok["id"]
    assert tags["expires_at"] == tok["expiresAt"] and tags["scopes"] == ",".join(SCOPES)
    assert harness.parse_rfc3339(tags["rotated_at"]) > 0
    rotate(env)    # a managed raw secret is recognised and rotated again
    assert env.onplana.token(tok["id"])["state"] == "revoked"
    no_leaks(secrets=env.extra_secrets)


def test_foreign_tags_are_carried_forward(env, azure, no_leaks):
    hand = env.onplana.add_token("cli_wh", name="hand-made", scopes=SCOPES)
    azure.seed("ci-reader", hand["token"], tags={"owner": "team-a", "token_id": "stale"})
    env.configure([env.integration(format="raw", adopt=True)])
    rotate(env)
    tags = env.consumer().get_secret("ci-reader").properties.tags
    assert tags["owner"] == "team-a" and tags["token_id"] == env.active_tokens("ci-reader")[0]["id"]
    no_leaks(secrets=env.extra_secrets)


def test_unmanaged_secret_is_refused_without_adopt(env, azure, no_leaks):
    hand = env.onplana.add_token("cli_wh", name="hand-made", scopes=SCOPES)
    azure.seed("ci-reader", hand["token"])
    env.configure([env.integration()])
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    assert "adopt = true" in out(r)
    assert len(env.versions()) == 1 and env.active_tokens("ci-reader") == []
    assert env.onplana.token(hand["id"])["state"] == "active"
    no_leaks(secrets=env.extra_secrets)


def test_adopt_takes_over_a_json_secret(env, azure, no_leaks):
    hand = env.onplana.add_token("cli_wh", name="hand-made", scopes=SCOPES)
    azure.seed("ci-reader", json.dumps({"token": hand["token"], "note": "by hand"}))
    env.configure([env.integration(adopt=True)])
    r = rotate(env)
    assert f"rotated {hand['id']} ->" in r.stdout
    assert env.onplana.token(hand["id"])["state"] == "revoked"
    assert [a["event"] for a in env.patrol.audit()] == ["adopted", "rotated"]
    assert len(env.versions()) == 2
    no_leaks(secrets=env.extra_secrets)


def test_429_and_5xx_are_retried(env, azure, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    old = env.active_tokens("ci-reader")[0]
    azure.faults({"method": "PUT", "path": "/secrets/ci-reader", "action": "retry_after",
                  "retry_after": 1, "times": 1},
                 {"method": "GET", "path": "/secrets/ci-reader.*", "action": "status", "status": 503,
                  "times": 1},
                 {"method": "POST", "path": r"/[^/]+/oauth2/v2\.0/token", "action": "status",
                  "status": 500, "times": 1})
    r = rotate(env)
    active = env.active_tokens("ci-reader")
    assert len(active) == 1 and active[0]["id"] != old["id"]
    assert json.loads(env.consumer().get_secret("ci-reader").value)["token"] == active[0]["token"]
    assert len(env.versions()) == 2, "the throttled PUT was not performed, the retry was"
    assert [e["status"] for e in azure.requests_to("PUT", "/secrets/ci-reader")][-2:] == [429, 200]
    assert r.duration >= 1, "Retry-After honoured"
    no_leaks(secrets=env.extra_secrets)


def test_forbidden_write_keeps_the_old_token(env, azure, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    old = env.active_tokens("ci-reader")[0]
    azure.deny(env.app["client_id"], "set")
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    assert "azure: write ci-reader: 403 Forbidden: The user, group or application" in out(r)
    assert env.onplana.token(old["id"])["state"] == "active"
    assert env.active_tokens("ci-reader") == [env.onplana.token(old["id"])]
    assert len(env.versions()) == 1
    no_leaks(secrets=env.extra_secrets)


def test_soft_deleted_secret_is_reported(env, azure, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    azure.soft_delete("ci-reader")
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    assert "azure: write ci-reader: 409" in out(r) and "recover or purge it" in out(r)
    assert len(env.active_tokens("ci-reader")) == 1, "the new token was revoked"
    no_leaks(secrets=env.extra_secrets)


def test_bad_client_secret_fails_cleanly(env, no_leaks):
    env.patrol.write_file("azure-secret", "not-the-secret-at-all")
    env.configure([env.integration()])
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    assert "token (client_secret): 401 invalid_client: AADSTS7000215: Invalid client secret" in out(r)
    assert "Trace ID" not in out(r)
    assert env.versions() == [] and env.active_tokens("ci-reader") == []
    no_leaks(secrets=env.extra_secrets + ["not-the-secret-at-all"])


def test_workload_identity_reads_the_token_file_at_use(env, azure, no_leaks):
    fed = azure.federated_token(env.app["client_id"])
    env.patrol.write_file("federated-token", fed)
    store = dict(env.store, auth=dict(method="workload_identity", token_file="federated-token"))
    env.configure([env.integration()], store=store)
    run_env = {"AZURE_TENANT_ID": env.tenant, "AZURE_CLIENT_ID": env.app["client_id"]}
    rotate(env, run_env=run_env)
    # the projected token rotates under patrol: the next run uses the new one
    fed2 = azure.federated_token(env.app["client_id"])
    env.patrol.write_file("federated-token", fed2)
    rotate(env, run_env=run_env)
    assert [t["kind"] for t in azure.issued()] == ["client_assertion"] * 2
    assert len(env.versions()) == 2
    no_leaks(secrets=env.extra_secrets + [fed, fed2])


def test_managed_identity_imds(env, azure, no_leaks):
    ident = azure.add_identity("ua-patrol")
    store = dict(env.store, imds_endpoint=azure.plain_url,
                 auth=dict(method="managed_identity", client_id="ua-patrol"))
    env.configure([env.integration()], store=store)
    rotate(env)
    assert [t["principal"] for t in azure.issued()] == [ident["principal"]]
    imds = azure.requests_to("GET", "/metadata/identity/oauth2/token")
    assert len(imds) == 1 and "api-version=2018-02-01" in imds[0]["query"]
    assert "client_id=ua-patrol" in imds[0]["query"]
    assert len(env.versions()) == 1
    no_leaks(secrets=env.extra_secrets)


def test_managed_identity_app_service(env, azure, no_leaks):
    azure.add_identity()
    info = azure.info()
    store = dict(env.store, auth=dict(method="managed_identity"))
    env.configure([env.integration()], store=store)
    rotate(env, run_env={"IDENTITY_ENDPOINT": info["plain_url"] + "/msi/token",
                         "IDENTITY_HEADER": info["identity_header"]})
    assert [t["kind"] for t in azure.issued()] == ["app_service"]
    assert len(env.versions()) == 1
    no_leaks(secrets=env.extra_secrets + [info["identity_header"]])


def test_matching_challenge_refreshes_the_token_once(env, azure, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    challenge = (f'Bearer authorization="{azure.url}/{env.tenant}", '
                 'resource="https://vault.azure.net"')
    azure.faults({"method": "GET", "path": "/secrets/ci-reader", "action": "status", "status": 401,
                  "headers": {"WWW-Authenticate": challenge}, "times": 1})
    since = azure.log()[-1]["seq"]
    rotate(env)
    tokens = [e for e in azure.log(since) if e["path"].endswith("/oauth2/v2.0/token")]
    assert len(tokens) == 2, "one token, then one refresh after the challenge"
    assert len(env.versions()) == 2
    no_leaks(secrets=env.extra_secrets)


def test_mismatching_challenge_is_refused(env, azure, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    old = env.active_tokens("ci-reader")[0]
    challenge = ('Bearer authorization="https://login.evil.example/tenant", '
                 'resource="https://vault.azure.net"')
    azure.faults({"path": "/secrets/.*", "action": "status", "status": 401,
                  "headers": {"WWW-Authenticate": challenge}, "times": -1})
    since = azure.log()[-1]["seq"]
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    assert "challenge names authority login.evil.example" in out(r) and "not followed" in out(r)
    tokens = [e for e in azure.log(since) if e["path"].endswith("/oauth2/v2.0/token")]
    assert len(tokens) == 1, "no refresh for a challenge that is not ours"
    assert env.onplana.token(old["id"])["state"] == "active"
    assert env.active_tokens("ci-reader") == [env.onplana.token(old["id"])]
    no_leaks(secrets=env.extra_secrets)


def test_challenge_for_another_resource_is_refused(env, azure, no_leaks):
    # patrol is configured for another resource: Key Vault rejects the audience, and its
    # challenge names a resource that is not the configured one
    store = dict(env.store, resource="https://vault.example.org")
    env.configure([env.integration()], store=store)
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    assert "challenge names resource https://vault.azure.net, not the configured " \
           "https://vault.example.org" in out(r)
    assert env.versions() == [] and env.active_tokens("ci-reader") == []
    no_leaks(secrets=env.extra_secrets)


def test_workload_identity_follows_azure_authority_host(env, azure, no_leaks):
    fed = azure.federated_token(env.app["client_id"])
    env.patrol.write_file("federated-token", fed)
    store = {k: v for k, v in env.store.items() if k != "authority_url"}
    store["auth"] = dict(method="workload_identity", tenant_id=env.tenant,
                         client_id=env.app["client_id"], token_file="federated-token")
    env.configure([env.integration()], store=store)
    # what the AKS webhook injects; no authority_url is configured
    rotate(env, run_env={"AZURE_AUTHORITY_HOST": azure.url + "/"})
    assert [t["kind"] for t in azure.issued()] == ["client_assertion"]
    assert len(env.versions()) == 1
    no_leaks(secrets=env.extra_secrets + [fed])
