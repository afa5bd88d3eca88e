"""The fake Vault (tests/servers/vault.py) checked with hvac, a real Vault
client: if hvac is happy with it, patrol's Vault store is tested against
something that answers like Vault.  Run with /usr/bin/python3 -m pytest
(Debian's python3-hvac)."""
import pytest

hvac = pytest.importorskip("hvac")
from hvac import exceptions  # noqa: E402

import harness  # noqa: E402

ROOT = "hvs.patrol-test-root-token"
CAS_MISMATCH = "check-and-set parameter did not match the current version"


@pytest.fixture
def vault(start_server):
    return start_server("vault")


@pytest.fixture
def client(vault, ca):
    """hvac client factory: client(token=ROOT, namespace=None)."""
    made = []

    def make(token=ROOT, namespace=None):
        c = hvac.Client(url=vault.url, token=token, namespace=namespace, verify=ca.ca_pem,
                        session=harness.control_session(ca.ca_pem))
        made.append(c)
        return c
    yield make
    for c in made:
        c.adapter.close()


def raw_get(vault, path, token=ROOT, namespace=None):
    headers = {"X-Vault-Token": token}
    if namespace:
        headers["X-Vault-Namespace"] = namespace
    return vault.http.get(f"{vault.url}/v1/{path}", headers=headers, timeout=10)


# ------------------------------------------------------------------ auth

def test_approle_login_gives_a_leased_token(vault, client):
    creds = vault.ctl("POST", "/_test/approle", {"role_name": "patrol", "token_ttl": 1200})
    c = client(token=None)
    auth = c.auth.approle.login(role_id=creds["role_id"], secret_id=creds["secret_id"])["auth"]
    assert auth["lease_duration"] == 1200 and auth["renewable"] is True
    assert auth["client_token"].startswith("hvs.") and "patrol-rw" in auth["policies"]
    assert c.token == auth["client_token"] and c.is_authenticated()
    me = c.auth.token.lookup_self()["data"]
    assert 1190 <= me["ttl"] <= 1200 and me["path"] == "auth/approle/login"
    c.secrets.kv.v2.create_or_update_secret("onplana/x", {"token": "t"})


def test_approle_rejects_a_wrong_secret_id(vault, client):
    creds = vault.ctl("POST", "/_test/approle", {})
    with pytest.raises(exceptions.InvalidRequest) as e:
        client(token=None).auth.approle.login(role_id=creds["role_id"], secret_id="nope")
    assert e.value.errors == ["invalid role or secret ID"]
    with pytest.raises(exceptions.InvalidRequest):
        client(token=None).auth.approle.login(role_id="unknown", secret_id=creds["secret_id"])


def test_kubernetes_login(vault, client):
    vault.ctl("POST", "/_test/kubernetes", {"role": "patrol", "jwt": "eyJ.sa.jwt", "token_ttl": 60})
    c = client(token=None)
    auth = c.auth.kubernetes.login(role="patrol", jwt="eyJ.sa.jwt")["auth"]
    assert auth["lease_duration"] == 60 and c.is_authenticated()
    with pytest.raises(exceptions.Forbidden):
        client(token=None).auth.kubernetes.login(role="patrol", jwt="eyJ.other")
    with pytest.raises(exceptions.InvalidRequest) as e:
        client(token=None).auth.kubernetes.login(role="nobody", jwt="eyJ.sa.jwt")
    assert e.value.errors == ['invalid role name "nobody"']


def test_login_tokens_expire_on_the_service_clock_and_can_be_revoked(vault, client):
    creds = vault.ctl("POST", "/_test/approle", {"token_ttl": 60})
    c = client(token=None)
    c.auth.approle.login(role_id=creds["role_id"], secret_id=creds["secret_id"])
    c.secrets.kv.v2.create_or_update_secret("a", {"k": "v"})
    vault.advance_clock(61)
    with pytest.raises(exceptions.Forbidden) as e:
        c.secrets.kv.v2.read_secret_version("a")
    assert e.value.errors == ["permission denied"]
    c.auth.approle.login(role_id=creds["role_id"], secret_id=creds["secret_id"])
    assert c.secrets.kv.v2.read_secret_version("a")["data"]["data"] == {"k": "v"}
    assert vault.ctl("POST", "/_test/revoke", {"source": "login"})["revoked"] == 2
    with pytest.raises(exceptions.Forbidden):
        c.secrets.kv.v2.read_secret_version("a")
    assert client().secrets.kv.v2.read_secret_version("a")      # the root token stays


def test_read_only_policy_denies_writes(vault, client):
    ro = vault.ctl("POST", "/_test/tokens", {"policies": ["patrol-ro"]})["token"]
    client().secrets.kv.v2.create_or_update_secret("onplana/x", {"token": "t"})
    c = client(token=ro)
    assert c.secrets.kv.v2.read_secret_version("onplana/x")["data"]["data"] == {"token": "t"}
    with pytest.raises(exceptions.Forbidden) as e:
        c.secrets.kv.v2.create_or_update_secret("onplana/x", {"token": "u"})
    assert e.value.errors == ["permission denied"]


def test_policy_rules_create_versus_update(vault, client):
    vault.ctl("POST", "/_test/policies", {"name": "create-only", "rules": [
        {"path": "secret/data/onplana/*", "capabilities": ["create", "read"]}]})
    tok = vault.ctl("POST", "/_test/tokens", {"policies": ["create-only"]})["token"]
    c = client(token=tok)
    c.secrets.kv.v2.create_or_update_secret("onplana/new", {"k": "1"})
    with pytest.raises(exceptions.Forbidden):                  # exists now: needs update
        c.secrets.kv.v2.create_or_update_secret("onplana/new", {"k": "2"})
    with pytest.raises(exceptions.Forbidden):                  # outside the rule's path
        c.secrets.kv.v2.create_or_update_secret("other", {"k": "1"})


def test_missing_or_unknown_token_is_permission_denied(vault):
    for token in ("", "hvs.unknown"):
        r = raw_get(vault, "secret/data/x", token=token)
        assert r.status_code == 403 and r.json() == {"errors": ["permission denied"]}


# ------------------------------------------------------------------ KV v2

def test_kv2_write_with_cas_and_versions(client):
    kv = client().secrets.kv.v2
    w1 = kv.create_or_update_secret("onplana/ci", {"token": "a"}, cas=0)["data"]
    assert w1["version"] == 1 and w1["destroyed"] is False and w1["deletion_time"] == ""
    assert kv.create_or_update_secret("onplana/ci", {"token": "b"}, cas=1)["data"]["version"] == 2
    assert kv.read_secret_version("onplana/ci")["data"]["data"] == {"token": "b"}
    old = kv.read_secret_version("onplana/ci", version=1)["data"]
    assert old["data"] == {"token": "a"} and old["metadata"]["version"] == 1


def test_kv2_cas_mismatch_is_invalid_request(client):
    kv = client().secrets.kv.v2
    kv.create_or_update_secret("onplana/ci", {"token": "a"})
    for cas in (0, 5):
        with pytest.raises(exceptions.InvalidRequest) as e:
            kv.create_or_update_secret("onplana/ci", {"token": "b"}, cas=cas)
        assert e.value.errors == [CAS_MISMATCH]
    assert kv.read_secret_version("onplana/ci")["data"]["metadata"]["version"] == 1


def test_kv2_cas_required(vault, client):
    kv = client().secrets.kv.v2
    kv.configure(cas_required=True)
    with pytest.raises(exceptions.InvalidRequest) as e:
        kv.create_or_update_secret("x", {"k": "v"})
    assert e.value.errors == ["check-and-set parameter required for this call"]
    kv.create_or_update_secret("x", {"k": "v"}, cas=0)
    vault.ctl("POST", "/_test/mounts", {"path": "strict", "version": 2, "cas_required": True})
    with pytest.raises(exceptions.InvalidRequest):
        kv.create_or_update_secret("x", {"k": "v"}, mount_point="strict")


def test_kv2_missing_secret_and_version(vault, client):
    kv = client().secrets.kv.v2
    with pytest.raises(exceptions.InvalidPath):
        kv.read_secret_version("nope")
    r = raw_get(vault, "secret/data/nope")
    assert r.status_code == 404 and r.json() == {"errors": []}
    kv.create_or_update_secret("x", {"k": "v"})
    assert raw_get(vault, "secret/data/x?version=7").status_code == 404


def test_kv2_soft_delete_undelete_destroy(vault, client):
    kv = client().secrets.kv.v2
    kv.create_or_update_secret("x", {"k": "1"})
    kv.create_or_update_secret("x", {"k": "2"})
    kv.delete_latest_version_of_secret("x")
    r = raw_get(vault, "secret/data/x")
    body = r.json()
    assert r.status_code == 404 and body["data"]["data"] is None
    assert body["data"]["metadata"]["version"] == 2 and body["data"]["metadata"]["deletion_time"]
    # A deleted version still counts for check-and-set.
    with pytest.raises(exceptions.InvalidRequest):
        kv.create_or_update_secret("x", {"k": "3"}, cas=1)
    kv.undelete_secret_versions("x", [2])
    assert kv.read_secret_version("x")["data"]["data"] == {"k": "2"}
    kv.destroy_secret_versions("x", [1])
    r = raw_get(vault, "secret/data/x?version=1")
    assert r.status_code == 404 and r.json()["data"]["metadata"]["destroyed"] is True
    assert kv.create_or_update_secret("x", {"k": "3"}, cas=2)["data"]["version"] == 3


def test_kv2_max_versions(client):
    kv = client().secrets.kv.v2
    kv.update_metadata("x", max_versions=2)
    for i in range(4):
        kv.create_or_update_secret("x", {"i": str(i)})
    meta = kv.read_secret_metadata("x")["data"]
    assert meta["current_version"] == 4 and sorted(meta["versions"]) == ["3", "4"]
    assert meta["oldest_version"] == 3


def test_kv2_custom_metadata(vault, client):
    c = client()
    kv = c.secrets.kv.v2
    c.adapter.post("/v1/secret/metadata/onplana/ci",
                   json={"custom_metadata": {"managed_by": "patrol", "token_id": "pat_1"}})
    meta = kv.read_secret_metadata("onplana/ci")["data"]
    assert meta["custom_metadata"] == {"managed_by": "patrol", "token_id": "pat_1"}
    assert meta["current_version"] == 0 and meta["versions"] == {}
    with pytest.raises(exceptions.InvalidPath):               # metadata only: no data yet
        kv.read_secret_version("onplana/ci")
    # cas 0 still creates: no version exists.
    kv.create_or_update_secret("onplana/ci", {"token": "t"}, cas=0)
    read = kv.read_secret_version("onplana/ci")["data"]["metadata"]
    assert read["custom_metadata"]["token_id"] == "pat_1"
    # POST replaces the whole map, PATCH merges (null removes).
    c.adapter.post("/v1/secret/metadata/onplana/ci", json={"custom_metadata": {"owner": "x"}})
    assert kv.read_secret_metadata("onplana/ci")["data"]["custom_metadata"] == {"owner": "x"}
    r = vault.http.patch(f"{vault.url}/v1/secret/metadata/onplana/ci", timeout=10,
                         headers={"X-Vault-Token": ROOT, "Content-Type": "application/merge-patch+json"},
                         json={"custom_metadata": {"owner": None, "a": "b"}})
    assert r.status_code == 204
    assert kv.read_secret_metadata("onplana/ci")["data"]["custom_metadata"] == {"a": "b"}
    # Other settings survive a custom_metadata-only write.
    kv.update_metadata("onplana/ci", max_versions=3)
    c.adapter.post("/v1/secret/metadata/onplana/ci", json={"custom_metadata": {"a": "c"}})
    assert kv.read_secret_metadata("onplana/ci")["data"]["max_versions"] == 3


def test_kv2_custom_metadata_validation(client):
    c = client()
    with pytest.raises(exceptions.InvalidRequest) as e:
        c.adapter.post("/v1/secret/metadata/x", json={"custom_metadata": {"k": "v" * 513}})
    assert "custom_metadata validation failed" in e.value.errors[0]
    assert e.value.errors[0].startswith("1 error occurred:\n\t* ")


def test_kv2_list_and_v1_style_paths(vault, client):
    kv = client().secrets.kv.v2
    kv.create_or_update_secret("onplana/a", {"k": "v"})
    kv.create_or_update_secret("onplana/deep/b", {"k": "v"})
    assert kv.list_secrets("onplana")["data"]["keys"] == ["a", "deep/"]
    r = raw_get(vault, "secret/onplana/a")                    # a KV v1 path on a v2 mount
    assert r.status_code == 404 and "Invalid path for a versioned K/V" in r.json()["warnings"][0]


def test_unknown_mount(vault):
    r = raw_get(vault, "nosuch/data/x")
    assert r.status_code == 404
    assert r.json() == {"errors": ['no handler for route "nosuch/data/x". route entry not found.']}


# ------------------------------------------------------------------ KV v1

def test_kv1(vault, client):
    vault.ctl("POST", "/_test/mounts", {"path": "kv1", "version": 1})
    kv = client().secrets.kv.v1
    kv.create_or_update_secret("onplana/ci", {"token": "a", "token_id": "pat_1"}, mount_point="kv1")
    got = kv.read_secret("onplana/ci", mount_point="kv1")
    assert got["data"] == {"token": "a", "token_id": "pat_1"} and got["lease_duration"] == 2764800
    kv.create_or_update_secret("onplana/ci", {"token": "b"}, mount_point="kv1")
    assert kv.read_secret("onplana/ci", mount_point="kv1")["data"] == {"token": "b"}
    assert kv.list_secrets("onplana", mount_point="kv1")["data"]["keys"] == ["ci"]
    kv.delete_secret("onplana/ci", mount_point="kv1")
    with pytest.raises(exceptions.InvalidPath):
        kv.read_secret("onplana/ci", mount_point="kv1")
    assert vault.ctl("GET", "/_test/kv?mount=kv1&path=onplana/ci", ok=(404,)) == {"errors": ["no such secret"]}


# ------------------------------------------------------------------ namespaces

def test_namespaces_are_isolated(vault, client):
    vault.ctl("POST", "/_test/mounts", {"namespace": "team-a", "path": "secret", "version": 2})
    vault.ctl("POST", "/_test/approle", {"namespace": "team-a", "role_id": "r-a", "secret_id": "s-a"})
    root = client()
    root.secrets.kv.v2.create_or_update_secret("onplana/ci", {"token": "root-ns"})
    a = client(token=None, namespace="team-a")
    a.auth.approle.login(role_id="r-a", secret_id="s-a")
    with pytest.raises(exceptions.InvalidPath):
        a.secrets.kv.v2.read_secret_version("onplana/ci")
    a.secrets.kv.v2.create_or_update_secret("onplana/ci", {"token": "team-a"})
    assert a.secrets.kv.v2.read_secret_version("onplana/ci")["data"]["data"] == {"token": "team-a"}
    assert root.secrets.kv.v2.read_secret_version("onplana/ci")["data"]["data"] == {"token": "root-ns"}
    # The same secret through a namespace prefix in the path instead of the header.
    r = raw_get(vault, "team-a/secret/data/onplana/ci")
    assert r.json()["data"]["data"] == {"token": "team-a"}
    # A team-a token does not reach the root namespace, nor does the root
    # namespace's AppRole log in there.
    with pytest.raises(exceptions.Forbidden):
        client(token=a.token).secrets.kv.v2.read_secret_version("onplana/ci")
    with pytest.raises(exceptions.InvalidRequest):
        client(token=None).auth.approle.login(role_id="r-a", secret_id="s-a")
    assert vault.ctl("GET", "/_test/kv?namespace=team-a&path=onplana/ci")["current_version"] == 1


def test_unknown_namespace(vault):
    r = raw_get(vault, "secret/data/x", namespace="nope")
    assert r.status_code == 404 and "no handler for route" in r.json()["errors"][0]


# ------------------------------------------------------------------ plumbing

def test_faults_answer_with_vault_errors(vault, client):
    vault.faults({"path": "/v1/secret/data/.*", "action": "status", "status": 503, "times": 1})
    r = raw_get(vault, "secret/data/x")
    assert r.status_code == 503 and r.json() == {"errors": ["Vault is sealed"]}
    vault.faults({"path": "/v1/secret/data/.*", "action": "retry_after", "retry_after": 2, "times": 1})
    r = raw_get(vault, "secret/data/x")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert r.json() == {"errors": ["rate limit quota exceeded"]}


def test_log_notes_the_credential_kind_never_its_value(vault, client):
    creds = vault.ctl("POST", "/_test/approle", {})
    c = client(token=None)
    c.auth.approle.login(role_id=creds["role_id"], secret_id=creds["secret_id"])
    c.secrets.kv.v2.create_or_update_secret("x", {"k": "v"})
    log = vault.log()
    assert [e["auth"] for e in log] == ["login:approle", "token:login"]
    assert c.token not in str(log) and creds["secret_id"] not in str(log)


def test_secrets_lists_every_credential_and_stored_token(vault, client):
    creds = vault.ctl("POST", "/_test/approle", {})
    vault.ctl("POST", "/_test/kubernetes", {"jwt": "eyJ.jwt"})
    c = client(token=None)
    c.auth.approle.login(role_id=creds["role_id"], secret_id=creds["secret_id"])
    c.secrets.kv.v2.create_or_update_secret("onplana/ci", {"token": "onp_pat_stored"})
    values = {v for _, v in vault.secrets()}
    assert {ROOT, creds["secret_id"], "eyJ.jwt", c.token, "onp_pat_stored"} <= values


def test_reset_restores_the_initial_state(vault, client):
    vault.ctl("POST", "/_test/mounts", {"path": "kv1", "version": 1})
    client().secrets.kv.v2.create_or_update_secret("x", {"k": "v"})
    vault.reset()
    with pytest.raises(exceptions.InvalidPath):
        client().secrets.kv.v2.read_secret_version("x")
    assert raw_get(vault, "kv1/x").status_code == 404
    assert client().is_authenticated()
