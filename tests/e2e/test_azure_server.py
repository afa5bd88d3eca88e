"""The fake Azure (tests/servers/azure.py) checked against Debian's Azure SDK for Python:
Key Vault secrets through azure.keyvault.secrets.SecretClient, tokens from the fake Entra
endpoint (ClientSecretCredential and a plain client-assertion credential), IMDS and App
Service through ManagedIdentityCredential, and the raw REST shapes patrol relies on."""
import datetime
import pathlib
import re
import sys
import time

import pytest
import requests

import harness

# harness puts tests/servers first on sys.path, where the fake azure.py would shadow the
# SDK's `azure` namespace package: import the SDK without it.
_path = sys.path[:]
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != harness.SERVERS.resolve()]
try:
    from azure.core.credentials import AccessToken
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.identity import ClientSecretCredential, ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient
    from azure.keyvault.secrets._shared import http_challenge_cache
finally:
    sys.path[:] = _path

VERSION_RE = re.compile(r"[0-9a-f]{32}")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class AzureServer(harness.FakeServer):
    """The fake Azure with helpers for its control endpoints (see azure.py)."""

    def info(self):
        return self.ctl("GET", "/_test/info")

    @property
    def vault_url(self):
        """https://localhost:<port>: the SDK wants a host name; the cert covers it."""
        return f"https://localhost:{self.port}"

    @property
    def plain_url(self):
        return self.info()["plain_url"]

    @property
    def tenant(self):
        return self.info()["tenant"]

    def configure(self, **config):
        return self.ctl("POST", "/_test/config", config)["config"]

    def add_app(self, client_id="app-patrol", **extra):
        return self.ctl("POST", "/_test/apps", dict(client_id=client_id, **extra))["apps"][0]

    def federated_token(self, client_id, **extra):
        return self.ctl("POST", "/_test/federated", dict(client_id=client_id, **extra))["token"]

    def add_identity(self, client_id=None, **extra):
        return self.ctl("POST", "/_test/identities", dict(client_id=client_id, **extra))["identities"][0]

    def deny(self, principal, *ops):
        self.ctl("POST", "/_test/access", {"principal": principal, "deny": list(ops)})

    def vault(self):
        return self.ctl("GET", "/_test/vault")["secrets"]

    def seed(self, name, value, **extra):
        return self.ctl("POST", f"/_test/vault/{name}", dict(value=value, **extra))

    def soft_delete(self, name):
        self.ctl("POST", f"/_test/vault/{name}/delete")

    def issued(self):
        return self.ctl("GET", "/_test/tokens")["tokens"]

    def entra_token(self, form, tenant=None):
        """POST the token endpoint; the requests.Response."""
        return self.http.post(f"{self.url}/{tenant or self.tenant}/oauth2/v2.0/token", data=form,
                              timeout=30)


class AssertionCredential:
    """A workload-identity style credential: client credentials with a federated
    assertion, against the fake's token endpoint (what patrol does)."""

    def __init__(self, srv, client_id, assertion, tenant=None):
        self.srv, self.client_id, self.assertion = srv, client_id, assertion
        self.tenant = tenant or srv.tenant
        self.calls = []

    def get_token(self, *scopes, **kwargs):
        self.calls.append((scopes, kwargs.get("tenant_id")))
        r = self.srv.entra_token({"grant_type": "client_credentials", "client_id": self.client_id,
                                  "scope": scopes[0], "client_assertion_type": ASSERTION_TYPE,
                                  "client_assertion": self.assertion},
                                 tenant=kwargs.get("tenant_id") or self.tenant)
        r.raise_for_status()
        j = r.json()
        return AccessToken(j["access_token"], int(time.time()) + int(j["expires_in"]))


@pytest.fixture
def azure(start_server):
    http_challenge_cache.clear()         # the SDK caches challenges per host, across tests
    return start_server("azure", cls=AzureServer)


@pytest.fixture
def app(azure):
    return azure.add_app("app-patrol")


def secret_client(azure, credential):
    return SecretClient(azure.vault_url, credential, verify_challenge_resource=False,
                        connection_verify=azure.ca.ca_pem)


def secret_credential(azure, app):
    return ClientSecretCredential(azure.tenant, app["client_id"], app["client_secret"],
                                  authority=f"https://localhost:{azure.port}",
                                  instance_discovery=False, connection_verify=azure.ca.ca_pem)


def kv(azure, method, path, token=None, api="7.4", **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return azure.http.request(method, f"{azure.url}{path}?api-version={api}", headers=headers,
                              timeout=30, **kw)


def client_secret_token(azure, app, scope="https://vault.azure.net/.default"):
    r = azure.entra_token({"grant_type": "client_credentials", "client_id": app["client_id"],
                           "client_secret": app["client_secret"], "scope": scope})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


# ------------------------------------------------------------------ Key Vault with the SDK

def test_sdk_set_get_versions_and_attributes(azure, app):
    c = secret_client(azure, secret_credential(azure, app))
    exp = int(time.time()) + 30 * harness.DAY
    s1 = c.set_secret("onplana-ci", '{"token":"x"}', content_type="application/json",
                      tags={"managed_by": "patrol"},
                      expires_on=datetime.datetime.fromtimestamp(exp, datetime.timezone.utc))
    assert VERSION_RE.fullmatch(s1.properties.version)
    assert s1.properties.content_type == "application/json"
    assert s1.properties.tags == {"managed_by": "patrol"}
    assert int(s1.properties.expires_on.timestamp()) == exp
    assert s1.properties.enabled is True and s1.properties.recovery_level == "Recoverable+Purgeable"
    assert s1.properties.created_on and s1.properties.updated_on
    s2 = c.set_secret("onplana-ci", "second")
    assert s2.properties.version != s1.properties.version and VERSION_RE.fullmatch(s2.properties.version)
    assert s2.properties.tags is None and s2.properties.content_type is None, "tags belong to a version"
    assert c.get_secret("onplana-ci").value == "second"
    old = c.get_secret("onplana-ci", s1.properties.version)
    assert old.value == '{"token":"x"}' and old.properties.tags == {"managed_by": "patrol"}
    versions = {p.version for p in c.list_properties_of_secret_versions("onplana-ci")}
    assert versions == {s1.properties.version, s2.properties.version}
    assert [p.name for p in c.list_properties_of_secrets()] == ["onplana-ci"]
    assert {t["kind"] for t in azure.issued()} == {"client_secret"}


def test_sdk_missing_secret_and_version(azure, app):
    c = secret_client(azure, secret_credential(azure, app))
    with pytest.raises(ResourceNotFoundError) as e:
        c.get_secret("nope")
    assert e.value.error.code == "SecretNotFound"
    c.set_secret("there", "v")
    with pytest.raises(ResourceNotFoundError):
        c.get_secret("there", "0" * 32)


def test_sdk_soft_delete_conflict_and_recover(azure, app):
    c = secret_client(azure, secret_credential(azure, app))
    c.set_secret("gone", "v1")
    c.begin_delete_secret("gone").wait()
    with pytest.raises(ResourceNotFoundError):
        c.get_secret("gone")
    with pytest.raises(HttpResponseError) as e:
        c.set_secret("gone", "v2")
    assert e.value.status_code == 409
    assert e.value.error.code == "Conflict"
    assert e.value.error.innererror["code"] == "ObjectIsDeletedButRecoverable"
    assert c.get_deleted_secret("gone").recovery_id.endswith("/deletedsecrets/gone")
    c.begin_recover_deleted_secret("gone").wait()
    assert c.get_secret("gone").value == "v1"
    # The control endpoint puts a secret in the same state.
    azure.soft_delete("gone")
    with pytest.raises(HttpResponseError) as e:
        c.set_secret("gone", "v3")
    assert e.value.status_code == 409
    c.purge_deleted_secret("gone")
    assert c.set_secret("gone", "v4").value == "v4"


def test_sdk_with_client_assertion(azure, app):
    fed = azure.federated_token(app["client_id"])
    cred = AssertionCredential(azure, app["client_id"], fed)
    c = secret_client(azure, cred)
    assert c.set_secret("wi", "value").value == "value"
    assert cred.calls == [(("https://vault.azure.net/.default",), azure.tenant)], \
        "the challenge names the tenant and resource"
    assert {t["kind"] for t in azure.issued()} == {"client_assertion"}


def test_sdk_with_imds_and_app_service(azure, monkeypatch):
    azure.add_identity()                         # system-assigned
    ua = azure.add_identity("ua-client")
    info = azure.info()
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", info["plain_url"])
    for cred in (ManagedIdentityCredential(), ManagedIdentityCredential(client_id="ua-client")):
        secret_client(azure, cred).set_secret("mi", "imds")
    monkeypatch.delenv("AZURE_POD_IDENTITY_AUTHORITY_HOST")
    monkeypatch.setenv("IDENTITY_ENDPOINT", info["plain_url"] + "/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", info["identity_header"])
    c = secret_client(azure, ManagedIdentityCredential(client_id="ua-client"))
    assert c.get_secret("mi").value == "imds"
    issued = azure.issued()
    assert [t["kind"] for t in issued] == ["imds", "imds", "app_service"]
    assert issued[-1]["principal"] == ua["principal"]


# ------------------------------------------------------------------ Key Vault REST shapes

def test_challenge_without_token(azure):
    r = kv(azure, "GET", "/secrets/x")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "Unauthorized"
    want = (f'Bearer authorization="https://127.0.0.1:{azure.port}/{azure.tenant}", '
            'resource="https://vault.azure.net"')
    assert r.headers["WWW-Authenticate"] == want
    azure.configure(challenge_authority="https://login.evil.example/t", challenge_scope=True,
                    challenge_resource="https://vault.evil.example")
    r = kv(azure, "PUT", "/secrets/x", json={"value": "v"})
    assert r.headers["WWW-Authenticate"] == (
        'Bearer authorization="https://login.evil.example/t", resource="https://vault.evil.example", '
        'scope="https://vault.evil.example/.default"')
    assert azure.vault() == {}, "nothing written without a token"
    assert azure.log()[-1]["auth"] == "none"


def test_bearer_tokens_are_checked(azure, app):
    tok = client_secret_token(azure, app)
    assert kv(azure, "PUT", "/secrets/a", tok, json={"value": "v"}).status_code == 200
    r = kv(azure, "GET", "/secrets/a", "eyJ0eXAiOiJKV1QifQ.unknown")
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    other = client_secret_token(azure, app, scope="https://storage.azure.com/.default")
    r = kv(azure, "GET", "/secrets/a", other)
    assert r.status_code == 401 and "audience" in r.json()["error"]["message"]
    azure.advance_clock(3600)
    r = kv(azure, "GET", "/secrets/a", tok)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    azure.set_clock(0)
    assert kv(azure, "GET", "/secrets/a", tok).status_code == 200
    azure.ctl("DELETE", "/_test/tokens")
    assert kv(azure, "GET", "/secrets/a", tok).status_code == 401


def test_api_version_names_and_bodies(azure, app):
    tok = client_secret_token(azure, app)
    r = kv(azure, "GET", "/secrets/a", tok, api="2099-01-01")
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter"
    assert kv(azure, "PUT", "/secrets/bad_name", tok, json={"value": "v"}).status_code == 400
    assert kv(azure, "PUT", "/secrets/a", tok, json={"nope": 1}).status_code == 400
    assert kv(azure, "PUT", "/secrets/a", tok,
              json={"value": "v", "attributes": {"exp": "soon"}}).status_code == 400
    r = kv(azure, "PUT", "/secrets/a", tok, json={"value": "v", "attributes": {"exp": 2000000000},
                                                  "tags": {"k": "v"}})
    j = r.json()
    assert r.status_code == 200 and j["attributes"]["exp"] == 2000000000
    assert j["id"] == f"https://127.0.0.1:{azure.port}/secrets/a/{j['id'].rsplit('/', 1)[1]}"
    assert set(j["attributes"]) >= {"enabled", "created", "updated", "recoveryLevel"}
    r = kv(azure, "GET", "/secrets/missing", tok)
    assert r.status_code == 404 and r.json()["error"]["code"] == "SecretNotFound"


def test_disabled_secret_and_access_denied(azure, app):
    tok = client_secret_token(azure, app)
    ver = kv(azure, "PUT", "/secrets/d", tok, json={"value": "v", "attributes": {"enabled": False}}) \
        .json()["id"].rsplit("/", 1)[1]
    r = kv(azure, "GET", f"/secrets/d/{ver}", tok)
    assert r.status_code == 403 and r.json()["error"]["innererror"]["code"] == "SecretDisabled"
    azure.deny(app["client_id"], "set")
    r = kv(azure, "PUT", "/secrets/d", tok, json={"value": "v"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "Forbidden"


def test_faults_use_key_vault_error_bodies(azure, app):
    tok = client_secret_token(azure, app)
    azure.faults({"method": "PUT", "path": r"/secrets/.*", "action": "retry_after", "retry_after": 2})
    r = kv(azure, "PUT", "/secrets/f", tok, json={"value": "v"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert r.json()["error"]["code"] == "Throttled"
    assert azure.vault() == {}, "a 429 performs nothing"
    assert kv(azure, "PUT", "/secrets/f", tok, json={"value": "v"}).status_code == 200


def test_seed_and_secrets_listing(azure):
    b = azure.seed("seeded", '{"token":"onp_pat_seededvalue0123456789","managed_by":"patrol"}',
                   contentType="application/json", tags={"x": "y"})
    assert VERSION_RE.fullmatch(b["id"].rsplit("/", 1)[1])
    assert azure.vault()["seeded"]["versions"][0]["tags"] == {"x": "y"}
    values = [v for _, v in azure.secrets()]
    assert "onp_pat_seededvalue0123456789" in values, "leak checks look for the token itself"
    azure.reset()
    assert azure.vault() == {}


# ------------------------------------------------------------------ Entra token endpoint

def test_token_endpoint_client_secret(azure, app):
    base = {"grant_type": "client_credentials", "client_id": app["client_id"],
            "scope": "https://vault.azure.net/.default"}
    r = azure.entra_token(dict(base, client_secret=app["client_secret"]))
    j = r.json()
    assert r.status_code == 200 and j["token_type"] == "Bearer" and j["expires_in"] == 3600
    assert j["ext_expires_in"] == 3600 and j["access_token"]
    r = azure.entra_token(dict(base, client_secret="wrong"))
    j = r.json()
    assert r.status_code == 401 and j["error"] == "invalid_client"
    assert j["error_description"].startswith("AADSTS7000215: ") and "\r\nTrace ID:" in j["error_description"]
    assert j["error_codes"] == [7000215]
    r = azure.entra_token(dict(base, client_secret=app["client_secret"]), tenant="other-tenant")
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    r = azure.entra_token(dict(base, client_secret=app["client_secret"], scope="https://vault.azure.net"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = azure.entra_token(base)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert azure.entra_token(dict(base, grant_type="password")).json()["error"] == "unsupported_grant_type"


def test_token_endpoint_client_assertion(azure, app):
    fed = azure.federated_token(app["client_id"])
    base = {"grant_type": "client_credentials", "client_id": app["client_id"],
            "scope": "https://vault.azure.net/.default", "client_assertion_type": ASSERTION_TYPE}
    assert azure.entra_token(dict(base, client_assertion=fed)).status_code == 200
    r = azure.entra_token(dict(base, client_assertion="eyJhbGciOiJSUzI1NiJ9.forged"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = azure.entra_token(dict(base, client_assertion=fed, client_assertion_type="jwt"))
    assert r.status_code == 400
    other = azure.add_app("other-app")
    r = azure.entra_token(dict(base, client_id=other["client_id"], client_assertion=fed))
    assert r.status_code == 401, "a federated token is bound to its app"
    old = azure.federated_token(app["client_id"], expires_at=azure.now() - 1)
    assert azure.entra_token(dict(base, client_assertion=old)).status_code == 400
    assert azure.log()[-1]["auth"] == "client_assertion"


def test_token_endpoint_faults_answer_oauth_errors(azure, app):
    azure.faults({"path": r"/[^/]+/oauth2/v2\.0/token", "action": "status", "status": 503})
    r = azure.entra_token({"grant_type": "client_credentials"})
    assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"


# ------------------------------------------------------------------ IMDS and App Service

def test_imds(azure):
    plain = azure.plain_url
    assert plain.startswith("http://127.0.0.1:")
    s = requests.Session()
    s.trust_env = False
    url = plain + "/metadata/identity/oauth2/token"
    q = {"api-version": "2018-02-01", "resource": "https://vault.azure.net"}
    r = s.get(url, params=q, headers={"Metadata": "true"}, timeout=10)
    assert r.status_code == 400 and r.json()["error_description"] == "Identity not found"
    sys_id = azure.add_identity()
    r = s.get(url, params=q, timeout=10)
    assert r.status_code == 400 and "metadata header" in r.json()["error_description"]
    r = s.get(url, params=q, headers={"Metadata": "true"}, timeout=10)
    j = r.json()
    assert r.status_code == 200 and j["client_id"] == sys_id["client_id"]
    assert j["expires_in"] == "3600" and int(j["expires_on"]) - int(j["not_before"]) == 3600
    assert j["resource"] == "https://vault.azure.net" and j["token_type"] == "Bearer"
    r = s.get(url, params=dict(q, client_id="ua-x"), headers={"Metadata": "true"}, timeout=10)
    assert r.status_code == 400
    azure.add_identity("ua-x")
    r = s.get(url, params=dict(q, client_id="ua-x"), headers={"Metadata": "true"}, timeout=10)
    assert r.status_code == 200 and r.json()["client_id"] == "ua-x"
    tok = r.json()["access_token"]
    assert kv(azure, "PUT", "/secrets/from-imds", tok, json={"value": "v"}).status_code == 200


def test_app_service(azure):
    azure.add_identity()
    info = azure.info()
    s = requests.Session()
    s.trust_env = False
    url = info["plain_url"] + "/msi/token"
    q = {"api-version": "2019-08-01", "resource": "https://vault.azure.net"}
    r = s.get(url, params=q, timeout=10)
    assert r.status_code == 401
    r = s.get(url, params=q, headers={"X-IDENTITY-HEADER": "wrong"}, timeout=10)
    assert r.status_code == 401
    r = s.get(url, params=q, headers={"X-IDENTITY-HEADER": info["identity_header"]}, timeout=10)
    j = r.json()
    assert r.status_code == 200 and int(j["expires_on"]) > time.time() and "expires_in" not in j
    assert (info["identity_header"], ) in [(v,) for _, v in azure.secrets()]
