"""The fake Onplana server and the harness, checked against SPEC.md section 5."""
import re
import threading
import time

import pytest
import requests

import harness
from harness import DAY, rfc3339

ORG = "org_acme"
ID_RE = re.compile(r"pat_[0-9A-HJKMNP-TV-Z]{26}")
TOKEN_RE = re.compile(r"onp_pat_[A-Za-z0-9]{40}")


@pytest.fixture
def acct(onplana):
    return onplana.add_account("cli_wh", org=ORG, scopes_held=["projects.read", "tasks.read"])


@pytest.fixture
def api(onplana, acct):
    return onplana.api(acct)


def create(onplana, api, **over):
    body = {"name": "wh-20261128-0badf00d", "orgId": ORG, "scopes": ["projects.read"],
            "projectIds": [], "expiresAt": rfc3339(time.time() + 30 * DAY)}
    body.update(over)
    body = {k: v for k, v in body.items() if v is not ...}
    return api.post(onplana.url + "/api/v1/tokens", json=body, timeout=10)


def err(r):
    return r.json()["error"]["code"]


# ------------------------------------------------------------------ sessions

def test_session_ok_and_rfc6749_errors(onplana, acct):
    s = acct["client_secret"]
    r = requests.post(onplana.url + "/oauth/token", verify=onplana.ca.ca_pem,
                      data={"grant_type": "client_credentials", "client_id": "cli_wh",
                            "client_secret": s})
    assert r.status_code == 200
    j = r.json()
    assert j["token_type"] == "Bearer" and j["expires_in"] == 3600 and j["access_token"]
    assert r.headers["Cache-Control"] == "no-store"

    http = onplana.api()
    r = http.post(onplana.url + "/oauth/token", data={"grant_type": "client_credentials",
                                                      "client_id": "cli_wh", "client_secret": "x"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert "error_description" in r.json()
    r = http.post(onplana.url + "/oauth/token", data={"grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = http.post(onplana.url + "/oauth/token", auth=("cli_wh", s),
                  data={"grant_type": "client_credentials"})
    assert r.status_code == 200, "HTTP Basic client authentication"

    onplana.faults({"path": "/oauth/token", "action": "retry_after", "retry_after": 2})
    r = http.post(onplana.url + "/oauth/token", auth=("cli_wh", s),
                  data={"grant_type": "client_credentials"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert r.json()["error"] == "temporarily_unavailable"


def test_expired_session_is_invalid_credentials(onplana, acct, api):
    assert create(onplana, api).status_code == 201
    onplana.advance_clock(3601)
    r = create(onplana, api)
    assert r.status_code == 401 and err(r) == "invalid_credentials"
    fresh = onplana.api(acct)
    assert create(onplana, fresh).status_code == 201
    onplana.drop_sessions()
    assert err(create(onplana, fresh)) == "invalid_credentials"


# ------------------------------------------------------------------ create

def test_create_answer(onplana, acct, api):
    exp = rfc3339(time.time() + 30 * DAY)
    r = create(onplana, api, scopes=["projects.read", "tasks.read"], projectIds=["prj_1"],
               expiresAt=exp)
    assert r.status_code == 201, r.text
    j = r.json()
    assert set(j) == {"id", "token", "prefix", "name", "orgId", "scopes", "projectIds",
                      "expiresAt", "createdAt"}
    assert ID_RE.fullmatch(j["id"]) and TOKEN_RE.fullmatch(j["token"])
    assert j["prefix"] == j["token"][:12]
    assert (j["name"], j["orgId"], j["scopes"], j["projectIds"], j["expiresAt"]) == \
        ("wh-20261128-0badf00d", ORG, ["projects.read", "tasks.read"], ["prj_1"], exp)
    assert abs(harness.parse_rfc3339(j["createdAt"]) - time.time()) < 5
    (t,) = onplana.tokens()
    assert t["token"] == j["token"] and t["state"] == "active" and t["account"] == "cli_wh"


@pytest.mark.parametrize("over,status,code", [
    pytest.param({"name": ...}, 400, "invalid_request", id="no-name"),
    pytest.param({"name": ""}, 400, "invalid_request", id="empty-name"),
    pytest.param({"orgId": ...}, 400, "invalid_request", id="no-org"),
    pytest.param({"orgId": "org_other"}, 404, "not_found", id="foreign-org"),
    pytest.param({"scopes": []}, 400, "invalid_scope", id="no-scopes"),
    pytest.param({"scopes": ["projects"]}, 400, "invalid_scope", id="scope-no-action"),
    pytest.param({"scopes": ["Projects.Read"]}, 400, "invalid_scope", id="scope-case"),
    pytest.param({"scopes": ["projects.write"]}, 403, "scope_not_held", id="not-held"),
    pytest.param({"scopes": ["WILDCARD"]}, 403, "scope_not_held", id="wildcard-not-held"),
    pytest.param({"projectIds": "prj_1"}, 400, "invalid_request", id="projects-not-list"),
    pytest.param({"expiresAt": rfc3339(time.time() + 366 * DAY)}, 400, "expiry_too_long",
                 id="366-days"),
    pytest.param({"expiresAt": None}, 400, "expiry_too_long", id="no-expiry"),
    pytest.param({"expiresAt": rfc3339(time.time() - 60)}, 400, "invalid_request", id="past"),
    pytest.param({"expiresAt": "2027-01-01 00:00:00"}, 400, "invalid_request", id="no-zone"),
])
def test_create_validation(onplana, api, over, status, code):
    r = create(onplana, api, **over)
    assert (r.status_code, err(r)) == (status, code), r.text
    assert onplana.tokens() == []


def test_create_limits_and_wildcard(onplana, api):
    assert create(onplana, api, expiresAt=rfc3339(time.time() + 364 * DAY)).status_code == 201
    assert create(onplana, api, expiresAt="2099-01-01T00:00:00.5+02:00").status_code == 400
    boss = onplana.add_account("cli_boss", org=ORG, scopes_held=["WILDCARD"])
    bapi = onplana.api(boss)
    assert create(onplana, bapi, scopes=["WILDCARD"]).status_code == 201
    assert create(onplana, bapi, scopes=["anything.write"]).status_code == 201
    onplana.configure(max_ttl_days=None)
    r = create(onplana, bapi, expiresAt=None)
    assert r.status_code == 201 and r.json()["expiresAt"] is None


def test_pat_cannot_manage_tokens(onplana, acct, api):
    pat = create(onplana, api).json()
    papi = onplana.api(bearer=pat["token"])
    for method, path in [("POST", "/api/v1/tokens"), ("GET", f"/api/v1/tokens?orgId={ORG}"),
                         ("GET", f"/api/v1/tokens/{pat['id']}"),
                         ("DELETE", f"/api/v1/tokens/{pat['id']}")]:
        r = papi.request(method, onplana.url + path, json={} if method == "POST" else None)
        assert (r.status_code, err(r)) == (403, "token_cannot_manage_tokens"), (method, path)
    r = requests.get(onplana.url + f"/api/v1/tokens?orgId={ORG}", verify=onplana.ca.ca_pem)
    assert (r.status_code, err(r)) == (401, "invalid_credentials")
    assert [e["auth"] for e in onplana.log()][-2:] == ["pat", "none"]


# ------------------------------------------------------------------ list, get

def test_list_paginates_and_filters(onplana, acct, api):
    ids = [create(onplana, api, name=f"n{i % 2}").json()["id"] for i in range(5)]
    other = onplana.add_account("cli_other", org=ORG, scopes_held=["projects.read"])
    create(onplana, onplana.api(other))                  # not the caller's
    onplana.add_token("cli_wh", name="old", scopes=["projects.read"], revoked=True,
                      createdAt=time.time() - 10 * DAY)
    onplana.add_token("cli_wh", name="gone", scopes=["projects.read"],
                      expiresAt=time.time() - DAY, createdAt=time.time() - 20 * DAY)

    def walk(query, page_size=2):
        seen, cursor, pages = [], None, 0
        while True:
            params = dict(query, **({"cursor": cursor} if cursor else {}))
            r = api.get(onplana.url + "/api/v1/tokens", params=params)
            assert r.status_code == 200, r.text
            j = r.json()
            assert set(j) == {"tokens", "nextCursor"} and len(j["tokens"]) <= page_size
            pages += 1
            seen += j["tokens"]
            cursor = j["nextCursor"]
            if cursor is None:
                return seen, pages

    seen, pages = walk({"orgId": ORG})
    assert pages == 4 and len(seen) == 7
    assert [t["name"] for t in seen[:2]] == ["gone", "old"]     # oldest first
    assert [t["id"] for t in seen[2:]] == ids
    assert seen[1]["revokedAt"] is not None and "token" not in seen[0]
    assert set(seen[0]) == {"id", "prefix", "name", "orgId", "scopes", "projectIds",
                            "expiresAt", "createdAt", "lastUsedAt", "revokedAt"}
    named, pages = walk({"orgId": ORG, "name": "n1"})
    assert [t["id"] for t in named] == [ids[1], ids[3]] and pages == 1, "no empty last page"
    assert walk({"orgId": ORG, "name": "n"})[0] == [], "name matches exactly"
    onplana.configure(page_size=100)
    assert walk({"orgId": ORG}, 100)[1] == 1

    assert err(api.get(onplana.url + "/api/v1/tokens")) == "invalid_request"
    assert api.get(onplana.url + "/api/v1/tokens", params={"orgId": "org_x"}).status_code == 404
    assert api.get(onplana.url + "/api/v1/tokens",
                   params={"orgId": ORG, "cursor": "!!"}).status_code == 400

    r = api.get(onplana.url + f"/api/v1/tokens/{ids[0]}")
    assert r.status_code == 200 and r.json() == seen[2]
    assert api.get(onplana.url + "/api/v1/tokens/pat_nope").status_code == 404


# ------------------------------------------------------------------ revoke, me

def test_revoke_twice_and_whoami(onplana, acct, api):
    pat = create(onplana, api, projectIds=["prj_9"]).json()
    me = onplana.api(bearer=pat["token"])
    r = me.get(onplana.url + "/api/v1/me")
    assert r.status_code == 200
    assert r.json() == {"user": {"id": acct["user_id"], "email": acct["user_email"]},
                        "orgId": ORG,
                        "token": {"id": pat["id"], "scopes": ["projects.read"],
                                  "projectIds": ["prj_9"], "expiresAt": pat["expiresAt"]}}
    assert onplana.token(pat["id"])["lastUsedAt"] is not None

    for _ in range(2):
        r = api.delete(onplana.url + f"/api/v1/tokens/{pat['id']}")
        assert r.status_code == 204 and r.content == b""
    assert api.delete(onplana.url + "/api/v1/tokens/pat_unknown").status_code == 404
    r = me.get(onplana.url + "/api/v1/me")
    assert (r.status_code, err(r)) == (401, "token_revoked")
    assert onplana.token(pat["id"])["state"] == "revoked"
    other = onplana.add_account("cli_other", org=ORG, scopes_held=["projects.read"])
    assert onplana.api(other).delete(onplana.url + f"/api/v1/tokens/{pat['id']}").status_code == 404

    pat2 = create(onplana, api, expiresAt=rfc3339(time.time() + DAY)).json()
    onplana.advance_clock(DAY + 1)
    r = onplana.api(bearer=pat2["token"]).get(onplana.url + "/api/v1/me")
    assert (r.status_code, err(r)) == (401, "token_expired")
    assert onplana.token(pat2["id"])["state"] == "expired"
    r = onplana.api(bearer="onp_pat_" + "x" * 40).get(onplana.url + "/api/v1/me")
    assert (r.status_code, err(r)) == (401, "invalid_credentials")


# ------------------------------------------------------------------ faults

def test_lose_response_performs_the_create(onplana, api):
    onplana.faults({"method": "POST", "path": "/api/v1/tokens", "action": "lose_response"})
    with pytest.raises(requests.ConnectionError):
        create(onplana, api, name="lost-one")
    (t,) = onplana.tokens()
    assert t["name"] == "lost-one" and t["state"] == "active"
    entry = onplana.log()[-1]
    assert (entry["method"], entry["path"], entry["status"], entry["fault"]) == \
        ("POST", "/api/v1/tokens", None, "lose_response")
    r = api.get(onplana.url + "/api/v1/tokens", params={"orgId": ORG, "name": "lost-one"})
    assert [x["id"] for x in r.json()["tokens"]] == [t["id"]]


def test_retry_after_then_success(onplana, api):
    onplana.faults({"method": "POST", "path": "/api/v1/tokens", "action": "retry_after",
                    "retry_after": 1})
    r = create(onplana, api)
    assert (r.status_code, err(r), r.headers["Retry-After"]) == (429, "rate_limited", "1")
    assert onplana.tokens() == []
    assert create(onplana, api).status_code == 201
    assert len(onplana.tokens()) == 1
    assert [e["status"] for e in onplana.log()] == [200, 429, 201]


def test_fault_actions(onplana, api):
    url = onplana.url + "/api/v1/tokens"
    onplana.faults({"path": "/api/v1/tokens", "action": "status", "status": 503, "times": 2,
                    "skip": 1})
    assert create(onplana, api).status_code == 201               # skipped once
    assert [create(onplana, api).status_code for _ in range(2)] == [503, 503]
    onplana.faults({"method": "GET", "path": "/api/v1/tokens", "action": "huge"},
                   {"method": "POST", "path": "/api/v1/.*", "action": "bad_json"},
                   {"method": "POST", "path": "/api/v1/tokens", "action": "wrong_shape",
                    "body": [1, 2]},
                   {"method": "POST", "path": "/api/v1/tokens", "action": "drop"},
                   {"method": "POST", "path": "/api/v1/tokens", "action": "delay",
                    "delay": 0.3})
    r = api.get(url, params={"orgId": ORG})
    assert r.status_code == 200 and len(r.content) > 2 << 20 and r.json()["padding"]
    r = create(onplana, api)
    assert r.status_code == 201
    with pytest.raises(ValueError):
        r.json()
    r = create(onplana, api)
    assert r.status_code == 201 and r.json() == [1, 2]
    with pytest.raises(requests.ConnectionError):
        create(onplana, api)
    t0 = time.monotonic()
    assert create(onplana, api).status_code == 201
    assert time.monotonic() - t0 >= 0.3
    assert len(onplana.tokens()) == 4        # not the 503s, not the drop
    assert all(f["remaining"] == 0 for f in onplana.fault_state())
    log = onplana.log()[1:]                   # [0] is the session
    assert [e["fault"] for e in log] == [None, "status", "status", "huge", "bad_json",
                                         "wrong_shape", "drop", "delay"]
    assert all(set(e) == {"seq", "time", "method", "path", "query", "status", "fault", "auth"}
               for e in log)
    assert log[3]["query"] == f"orgId={ORG}"
    assert onplana.log(since=log[-2]["seq"]) == log[-1:]

    onplana.faults({"path": ".*", "action": "status", "status": 500, "times": -1})
    assert create(onplana, api).status_code == 500
    assert err(create(onplana, api)) == "internal_error"
    onplana.clear_faults()
    assert create(onplana, api).status_code == 201
    with pytest.raises(harness.ServerError):
        onplana.faults({"action": "explode"})


def test_reset_and_control(onplana, acct, api):
    seeded = onplana.add_token("cli_wh", name="seed", scopes=["tasks.read"], expiresAt=None,
                               lastUsedAt=time.time() - 100 * DAY)
    assert TOKEN_RE.fullmatch(seeded["token"]) and seeded["expiresAt"] is None
    assert seeded["state"] == "active"
    onplana.update_token(seeded["id"], revoked=True)
    assert onplana.token(seeded["id"])["state"] == "revoked"
    onplana.set_clock(5 * DAY)
    assert abs(onplana.now() - time.time() - 5 * DAY) < 5
    labels = [label for label, _ in onplana.secrets()]
    assert any(l.startswith("token value of " + seeded["id"]) for l in labels)
    assert any(l.startswith("session of cli_wh") for l in labels)
    onplana.reset()
    assert onplana.tokens() == [] and onplana.log() == []
    assert abs(onplana.now() - time.time()) < 5
    r = create(onplana, api)
    assert err(r) == "invalid_credentials"


# ------------------------------------------------------------------ harness itself

def test_tls_wrong_ca_is_refused(onplana, ca):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(onplana.url + "/_test/log", verify=ca.wrong_ca, timeout=5)
    r = requests.get(f"https://localhost:{onplana.port}/_test/log", verify=ca.ca_pem)
    assert r.status_code == 200


def test_keep_alive_is_fast(onplana, api):
    pat = create(onplana, api).json()
    me = onplana.api(bearer=pat["token"])
    t0 = time.monotonic()
    for _ in range(200):
        assert me.get(onplana.url + "/api/v1/me").status_code == 200
    # a delayed-ACK stall would cost ~40 ms per request (8 s here)
    assert time.monotonic() - t0 < 3


def test_assert_no_secrets_finds_leaks(onplana, api, patrol, tmp_path):
    pat = create(onplana, api).json()
    f = tmp_path / "audit.jsonl"
    f.write_text('{"new_token_id": "%s", "prefix": "%s"}\n' % (pat["id"], pat["prefix"]))
    harness.assert_no_secrets("token " + pat["id"], f, tmp_path / "missing", servers=[onplana])
    for leak in (pat["token"], pat["token"][:20], pat["token"][12:]):
        with pytest.raises(AssertionError, match="token value of"):
            harness.assert_no_secrets("x " + leak + " y", servers=[onplana])
    with pytest.raises(AssertionError, match="extra secret"):
        harness.assert_no_secrets(b"vault s.abcdefgh123", secrets=["s.abcdefgh123"])
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "state.json").write_text(pat["token"])
    with pytest.raises(AssertionError, match="state.json"):
        harness.assert_no_secrets(tmp_path / "d", servers=[onplana])


def test_libconfig_and_patrol_files(patrol, onplana, acct):
    cfg = {"max_parallel": 4, "onplana": patrol.onplana_config(onplana),
           "accounts": [patrol.account("svc-wh", acct)], "stores": [],
           "integrations": [{"name": "wh", "account": "svc-wh", "scopes": ["projects.read"],
                             "projects": [], "on_rotate": ["/bin/echo", 'a "q"\\'],
                             "adopt": False, "ttl": None}]}
    path = patrol.write_config(cfg)
    text = path.read_text()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (patrol.dir / "svc-wh.secret").read_text() == acct["client_secret"]
    assert (patrol.dir / "svc-wh.secret").stat().st_mode & 0o077 == 0
    assert f'state_dir = "{patrol.state_dir}";' in text
    assert "stores = (\n);" in text or "stores = ()" in text.replace("\n", "")
    assert 'on_rotate = [ "/bin/echo", "a \\"q\\"\\\\" ];' in text
    assert "adopt = false;" in text and "ttl" not in text
    assert "accounts = (\n  {\n" in text


def test_patrol_accepts_the_generated_config(patrol, onplana, acct, no_leaks):
    """The harness's libconfig writer against the real parser (no rotation)."""
    patrol.write_config({
        "onplana": patrol.onplana_config(onplana),
        "accounts": [patrol.account("svc-wh", acct)],
        "stores": [{"name": "vault", "type": "vault", "url": "https://127.0.0.1:8200",
                    "mount": "secret", "kv_version": 2,
                    "auth": {"method": "token", "token_file": "vault.token"}}],
        "integrations": [{"name": "wh-prod", "account": "svc-wh", "store": "vault",
                          "scopes": ["projects.read"], "secret": "onplana/wh-prod",
                          "on_rotate": ["/bin/true", "a b"]}]},
        credentials={"vault.token": "s.e2e-vault-token-0123456789"})
    r = patrol.run("--check-config")
    assert r.rc == 0, r
    no_leaks(secrets=["s.e2e-vault-token-0123456789"])


def test_server_pool_and_reset_voids_delayed_requests(start_server, onplana):
    second = start_server("onplana")
    assert second.port != onplana.port, "a second server of a kind is its own process"
    onplana.faults({"path": "/oauth/token", "action": "delay", "delay": 0.5})
    out = []
    th = threading.Thread(target=lambda: out.append(
        _try(onplana.api().post, onplana.url + "/oauth/token", timeout=10,
             data={"grant_type": "client_credentials"})))
    th.start()
    time.sleep(0.2)
    onplana.reset()
    th.join()
    assert isinstance(out[0], requests.ConnectionError)
    assert onplana.log() == []
    onplana.stop()


def test_a_stopped_pooled_server_is_replaced(onplana):
    assert onplana.alive() and onplana.log() == []


def _try(fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except Exception as e:       # noqa: BLE001 - the caller inspects it
        return e
