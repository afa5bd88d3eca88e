"""End-to-end: patrol --rotate-now into the fake Vault, checked against the fake
Onplana and read back by a consumer with python3-hvac."""
import json

import hvac
import pytest

import harness

SCOPES = ["projects.read", "tasks.read"]


class Setup:
    """One account, one Vault store (AppRole), integrations built per test."""

    def __init__(self, patrol, onplana, vault, ca):
        self.patrol, self.onplana, self.vault, self.ca = patrol, onplana, vault, ca
        self.acct = onplana.add_account(client_id="cli_wh", org="org_acme",
                                        scopes_held=SCOPES + ["reports.read"])
        self.role = vault.ctl("POST", "/_test/approle", {"role_name": "patrol",
                                                          "policies": ["patrol-rw"]})
        self.store = dict(name="vault", type="vault", url=vault.url, mount="secret", kv_version=2,
                          ca_file=ca.ca_pem,
                          auth=dict(method="approle", role_id=self.role["role_id"],
                                    secret_id_file="vault-secret-id"))
        patrol.write_file("vault-secret-id", self.role["secret_id"])

    def integration(self, name="ci-reader", **kw):
        d = dict(name=name, account="svc", scopes=SCOPES, store="vault",
                 secret=f"onplana/{name}")
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

    def kv(self, path, mount="secret", namespace=""):
        r = self.vault.http.get(f"{self.vault.url}/_test/kv",
                                params=dict(namespace=namespace, mount=mount, path=path))
        return r.json() if r.status_code == 200 else None

    def hvac_client(self, namespace=None):
        c = hvac.Client(url=self.vault.url, verify=self.ca.ca_pem, namespace=namespace)
        c.auth.approle.login(role_id=self.role["role_id"], secret_id=self.role["secret_id"])
        return c

    def active_tokens(self, name):
        return [t for t in self.onplana.tokens(account="cli_wh")
                if t["state"] == "active" and t["name"].startswith(name + "-")]

    def secrets(self):
        return [self.role["secret_id"]]


@pytest.fixture
def vault(start_server):
    return start_server("vault")


@pytest.fixture
def env(patrol, onplana, vault, ca):
    return Setup(patrol, onplana, vault, ca)


def rotate(env, *names, ok=True):
    r = env.patrol.run("--rotate-now", *names)
    if ok:
        assert r.rc == 0, r
    return r


def test_first_rotation_creates_the_secret_and_a_scoped_token(env, no_leaks):
    env.configure([env.integration()])
    r = rotate(env)
    assert "ci-reader: rotated" in r.stdout
    active = env.active_tokens("ci-reader")
    assert len(active) == 1
    tok = active[0]
    assert sorted(tok["scopes"]) == sorted(SCOPES)
    assert tok["projectIds"] == []
    # ttl 30d, as configured
    assert abs(harness.parse_rfc3339(tok["expiresAt"]) - (env.onplana.now() + 30 * 86400)) < 120
    # the consumer's view, through hvac
    data = env.hvac_client().secrets.kv.v2.read_secret_version(
        path="onplana/ci-reader", mount_point="secret")["data"]["data"]
    assert data["token"] == tok["token"]
    assert data["token_id"] == tok["id"]
    assert data["managed_by"] == "patrol"
    assert data["expires_at"] == tok["expiresAt"]
    assert sorted(data["scopes"]) == sorted(SCOPES)
    audit = env.patrol.audit()
    assert [a["event"] for a in audit] == ["rotated"]
    assert audit[0]["new_token_id"] == tok["id"] and audit[0]["version"] == "1"
    no_leaks(secrets=env.secrets())


def test_second_rotation_revokes_the_old_token(env, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    first = env.active_tokens("ci-reader")[0]
    r = rotate(env, "ci-reader")
    assert f"rotated {first['id']} ->" in r.stdout
    assert env.onplana.token(first["id"])["state"] == "revoked"
    active = env.active_tokens("ci-reader")
    assert len(active) == 1 and active[0]["id"] != first["id"]
    kv = env.kv("onplana/ci-reader")
    assert kv["current_version"] == 2
    assert kv["versions"]["2"]["data"]["token"] == active[0]["token"]
    # records say so
    st = env.patrol.state()["integrations"]["ci-reader"]
    assert st["token_id"] == active[0]["id"] and st["last_result"] == "rotated"
    assert "in_flight" not in st
    events = env.patrol.audit()
    assert events[-1]["event"] == "rotated" and events[-1]["old_token_id"] == first["id"]
    assert events[-1]["version"] == "2"
    no_leaks(secrets=env.secrets())


def test_raw_format_keeps_metadata_in_custom_metadata(env, no_leaks):
    env.configure([env.integration(format="raw")])
    rotate(env)
    tok = env.active_tokens("ci-reader")[0]
    kv = env.kv("onplana/ci-reader")
    assert kv["versions"]["1"]["data"] == {"token": tok["token"]}
    cm = kv["custom_metadata"]
    assert cm["managed_by"] == "patrol" and cm["token_id"] == tok["id"]
    assert cm["scopes"] == ",".join(SCOPES) and cm["expires_at"] == tok["expiresAt"]
    rotate(env)   # a managed raw secret is recognised and rotated again
    assert env.onplana.token(tok["id"])["state"] == "revoked"
    no_leaks(secrets=env.secrets())


def test_kv_version_1(env, vault, no_leaks):
    vault.ctl("POST", "/_test/mounts", {"path": "kv1", "version": 1})
    store = dict(env.store, mount="kv1", kv_version=1)
    env.configure([env.integration()], store=store)
    rotate(env)
    rotate(env)
    kv = env.kv("onplana/ci-reader", mount="kv1")
    active = env.active_tokens("ci-reader")
    assert len(active) == 1
    assert kv["data"]["token"] == active[0]["token"]
    c = env.hvac_client()
    assert c.secrets.kv.v1.read_secret(path="onplana/ci-reader", mount_point="kv1")["data"]["token_id"] == active[0]["id"]
    no_leaks(secrets=env.secrets())


def test_unmanaged_secret_is_refused_without_adopt(env, vault, no_leaks):
    hand = env.onplana.add_token("cli_wh", name="hand-made", scopes=SCOPES)
    vault.ctl("POST", "/_test/kv", {"path": "onplana/ci-reader", "data": {"token": hand["token"]}})
    env.configure([env.integration()])
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    assert "not managed by patrol" in r.stdout + r.stderr and "adopt = true" in r.stdout + r.stderr
    assert env.kv("onplana/ci-reader")["current_version"] == 1
    assert env.active_tokens("ci-reader") == []
    assert env.onplana.token(hand["id"])["state"] == "active"
    no_leaks(secrets=env.secrets())


def test_adopt_takes_over_and_revokes_the_hand_made_token(env, vault, no_leaks):
    hand = env.onplana.add_token("cli_wh", name="hand-made", scopes=SCOPES)
    vault.ctl("POST", "/_test/kv", {"path": "onplana/ci-reader", "data": {"token": hand["token"]}})
    env.configure([env.integration(adopt=True)])
    r = rotate(env)
    assert f"rotated {hand['id']} ->" in r.stdout
    assert env.onplana.token(hand["id"])["state"] == "revoked"
    events = [a["event"] for a in env.patrol.audit()]
    assert events == ["adopted", "rotated"]
    assert env.kv("onplana/ci-reader")["current_version"] == 2
    no_leaks(secrets=env.secrets())


def test_dry_run_changes_nothing(env, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    before_tokens = env.onplana.tokens(account="cli_wh")
    before_kv = env.kv("onplana/ci-reader")
    before_state = env.patrol.state()
    r = env.patrol.run("--rotate-now", "--dry-run")
    assert r.rc == 0, r
    assert "would create a token" in r.stdout and "would revoke" in r.stdout
    assert env.onplana.tokens(account="cli_wh") == before_tokens
    assert env.kv("onplana/ci-reader") == before_kv
    assert env.patrol.state() == before_state
    no_leaks(secrets=env.secrets())


def test_json_output_and_status(env, no_leaks):
    env.configure([env.integration(), env.integration("other", scopes=["reports.read"])])
    r = env.patrol.run("--rotate-now", "--json")
    assert r.rc == 0, r
    doc = r.json()
    assert [x["integration"] for x in doc["results"]] == ["ci-reader", "other"]
    for x in doc["results"]:
        assert x["result"] == "rotated" and x["version"] == "1" and x["error"] is None
        assert x["new_token_id"].startswith("pat_") and x["store"] == "vault"
    st = env.patrol.run("--status", "--json")
    assert st.rc == 0, st
    ints = {i["name"]: i for i in st.json()["integrations"]}
    assert ints["ci-reader"]["token_id"] == doc["results"][0]["new_token_id"]
    assert ints["ci-reader"]["last_result"] == "rotated" and ints["ci-reader"]["pending"] is None
    # next rotation = expiry - renew_before (7d)
    nxt = harness.parse_rfc3339(ints["ci-reader"]["next_rotation"])
    exp = harness.parse_rfc3339(ints["ci-reader"]["expires_at"])
    assert 7 * 86400 - 3600 <= exp - nxt <= 7 * 86400   # renew_before, less a splay of at most 1h
    table = env.patrol.run("--status")
    assert table.rc == 0 and "ci-reader" in table.stdout and "rotated" in table.stdout
    no_leaks(secrets=env.secrets())


def test_unknown_integration_name_is_usage_error(env):
    env.configure([env.integration()])
    r = env.patrol.run("--rotate-now", "ci-raeder")
    assert r.rc == 64, r
    assert 'did you mean "ci-reader"' in r.stderr


def test_transient_faults_still_give_exactly_one_new_token(env, vault, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    old = env.active_tokens("ci-reader")[0]
    env.onplana.faults({"method": "POST", "path": "/oauth/token", "action": "status", "status": 503, "times": 1},
                       {"method": "GET", "path": "/api/v1/me", "action": "retry_after", "status": 429,
                        "retry_after": 1, "times": 1})
    vault.faults({"method": "GET", "path": "/v1/secret/data/.*", "action": "status", "status": 502, "times": 1},
                 {"method": "POST", "path": "/v1/auth/approle/login", "action": "drop", "times": 1})
    rotate(env)
    active = env.active_tokens("ci-reader")
    assert len(active) == 1 and active[0]["id"] != old["id"]
    assert env.kv("onplana/ci-reader")["versions"]["2"]["data"]["token"] == active[0]["token"]
    no_leaks(secrets=env.secrets())


def test_store_refusing_writes_keeps_old_token_and_revokes_new(env, vault, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    old = env.active_tokens("ci-reader")[0]
    vault.faults({"method": "POST", "path": "/v1/secret/data/onplana/ci-reader", "action": "status",
                  "status": 403, "times": -1})
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    assert "vault: write onplana/ci-reader: 403" in r.stdout + r.stderr
    assert env.onplana.token(old["id"])["state"] == "active"
    assert env.kv("onplana/ci-reader")["versions"]["1"]["data"]["token"] == old["token"]
    assert env.kv("onplana/ci-reader")["current_version"] == 1
    assert env.active_tokens("ci-reader") == [env.onplana.token(old["id"])]
    failed = [a for a in env.patrol.audit() if a["event"] == "failed"]
    assert failed and "403" in failed[-1]["error"]
    assert env.patrol.state()["integrations"]["ci-reader"]["last_result"] == "failed"
    no_leaks(secrets=env.secrets())


def test_lost_create_answer_leaves_no_orphan(env, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    old = env.active_tokens("ci-reader")[0]
    env.onplana.faults({"method": "POST", "path": "/api/v1/tokens", "action": "lose_response", "times": 1})
    r = rotate(env, ok=False)
    # the create was performed but its answer lost: patrol finds it by name and revokes it,
    # then (transient) tries again within oneshot_timeout and succeeds
    active = env.active_tokens("ci-reader")
    assert len(active) == 1, (active, r)
    assert r.rc == 0, r
    assert active[0]["id"] != old["id"]
    made = [t for t in env.onplana.tokens(account="cli_wh") if t["name"].startswith("ci-reader-")]
    assert len(made) == 3      # first rotation, the lost one (revoked), the new one
    assert sum(t["state"] == "revoked" for t in made) == 2
    no_leaks(secrets=env.secrets())


def test_wrong_ca_fails_cleanly(env, ca, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    old = env.active_tokens("ci-reader")[0]
    store = dict(env.store, ca_file=ca.wrong_ca)
    env.configure([env.integration()], store=store, oneshot_timeout="2s")
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    assert "vault" in r.stdout and ("certificate" in r.stdout.lower() or "ssl" in r.stdout.lower()), r
    assert env.active_tokens("ci-reader") == [env.onplana.token(old["id"])]
    no_leaks(secrets=env.secrets())


def test_namespace_and_token_auth(env, vault, no_leaks):
    vault.ctl("POST", "/_test/namespaces", {"path": "team-a"})
    vault.ctl("POST", "/_test/mounts", {"namespace": "team-a", "path": "secret", "version": 2})
    tok = vault.ctl("POST", "/_test/tokens", {"namespace": "team-a", "policies": ["patrol-rw"]})["token"]
    env.patrol.write_file("vault-token", tok)
    store = dict(env.store, namespace="team-a", auth=dict(method="token", token_file="vault-token"))
    env.configure([env.integration()], store=store)
    rotate(env)
    assert env.kv("onplana/ci-reader", namespace="team-a")["current_version"] == 1
    assert env.kv("onplana/ci-reader") is None
    no_leaks(secrets=env.secrets() + [tok])


def test_kubernetes_auth(env, vault, no_leaks):
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlLXRlc3Q"
    vault.ctl("POST", "/_test/kubernetes", {"role": "patrol", "jwt": jwt, "policies": ["patrol-rw"]})
    env.patrol.write_file("sa-token", jwt)
    store = dict(env.store, auth=dict(method="kubernetes", role="patrol", jwt_file="sa-token"))
    env.configure([env.integration()], store=store)
    rotate(env)
    assert env.kv("onplana/ci-reader")["current_version"] == 1
    no_leaks(secrets=env.secrets() + [jwt])


def test_dry_run_json_is_one_document_with_planned_results(env, no_leaks):
    env.configure([env.integration()])
    rotate(env)
    old = env.active_tokens("ci-reader")[0]
    r = env.patrol.run("--rotate-now", "--dry-run", "--json")
    assert r.rc == 0, r
    doc = r.json()                       # stdout is exactly one JSON document
    assert [x["result"] for x in doc["results"]] == ["planned"]
    assert doc["results"][0]["old_token_id"] == old["id"]
    assert "would create a token" in r.stderr       # the plan still shows, on stderr
    assert env.active_tokens("ci-reader") == [env.onplana.token(old["id"])]
    no_leaks(secrets=env.secrets())
