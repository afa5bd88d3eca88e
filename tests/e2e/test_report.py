"""End-to-end: patrol --report (SPEC.md section 7) against the fake Onplana, with real
rotations into the fake Vault so that current and retiring tokens exist."""
import fcntl
import os
import re
import time

import pytest

import harness

DAY = harness.DAY
SCOPES = ["projects.read", "tasks.read"]
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
TOKEN_KEYS = {"id", "prefix", "name", "scopes", "projects", "created_at", "expires_at",
              "last_used_at", "state", "findings"}
WARNINGS = {"wildcard", "no-expiry", "expires-soon", "never-used", "stale", "stray"}


class Setup:
    """Account "svc" (cli_wh) with Vault-backed integrations, plus helpers to seed tokens."""

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
        self.accounts = [patrol.account("svc", self.acct)]

    def integration(self, name="ci-reader", **kw):
        d = dict(name=name, account="svc", scopes=SCOPES, store="vault", secret=f"onplana/{name}")
        d.update(kw)
        return d

    def add_account(self, name, client_id, org="org_ops"):
        acct = self.onplana.add_account(client_id=client_id, org=org, scopes_held=SCOPES)
        self.accounts.append(self.patrol.account(name, acct))
        return acct

    def configure(self, integrations, policy=None, **top):
        pol = dict(ttl="30d", renew_before="7d", retry_min="1s", retry_max="2s")
        pol.update(policy or {})
        cfg = dict(policy=pol, oneshot_timeout="20s",
                   onplana=self.patrol.onplana_config(self.onplana),
                   accounts=self.accounts, stores=[self.store], integrations=integrations)
        cfg.update(top)
        self.patrol.write_config(cfg)

    def rotate(self, *names, ok=True):
        r = self.patrol.run("--rotate-now", *names)
        if ok:
            assert r.rc == 0, r
        return r

    def seed(self, name, client_id="cli_wh", scopes=SCOPES, expires_in=60 * DAY,
             created_ago=5 * DAY, used_ago=1 * DAY, **kw):
        """A token relative to the real clock (patrol's): None leaves a time unset."""
        now = time.time()
        fields = dict(name=name, scopes=list(scopes),
                      expiresAt=None if expires_in is None else now + expires_in,
                      createdAt=now - created_ago,
                      lastUsedAt=None if used_ago is None else now - used_ago)
        fields.update(kw)
        return self.onplana.add_token(client_id, **fields)

    def report(self, *args, rc=None):
        r = self.patrol.run("--report", "--json", *args)
        if rc is not None:
            assert r.rc == rc, r
        return r

    def secrets(self):
        return [self.role["secret_id"]]


@pytest.fixture
def vault(start_server):
    return start_server("vault")


@pytest.fixture
def env(patrol, onplana, vault, ca):
    return Setup(patrol, onplana, vault, ca)


def stray_name(integration="ci-reader", day="20250101", tail="deadbeef"):
    return f"{integration}-{day}-{tail}"


def by_id(doc, account="svc"):
    acct = next(a for a in doc["accounts"] if a["name"] == account)
    return {t["id"]: t for t in acct["tokens"]}


def findings(tok):
    return sorted(f["finding"] for f in tok["findings"])


def current_id(env, integration="ci-reader"):
    return env.patrol.state()["integrations"][integration]["token_id"]


# ------------------------------------------------------------------ findings

def test_every_finding_over_several_pages(env, no_leaks):
    env.configure([env.integration()])
    env.rotate()
    cur = current_id(env)
    seeded = {
        "wild": env.seed("admin-wild", scopes=["WILDCARD"]),
        "forever": env.seed("forever", expires_in=None),
        "soon": env.seed("short-lived", expires_in=2 * DAY),
        "unused": env.seed("never-touched", created_ago=40 * DAY, used_ago=None),
        "young": env.seed("young-unused", created_ago=10 * DAY, used_ago=None),
        "stale": env.seed("old-cron", created_ago=200 * DAY, used_ago=100 * DAY),
        "stray": env.seed(stray_name(), expires_in=20 * DAY),
        "hand": env.seed("hand-made"),
        "expired": env.seed("gone-by", scopes=["WILDCARD"], expires_in=-DAY, used_ago=None,
                            created_ago=100 * DAY),
        "revoked": env.seed(stray_name(tail="0badf00d"), revoked=True),
    }
    env.onplana.clear_log()
    r = env.report(rc=1)
    doc = r.json()
    assert [a["name"] for a in doc["accounts"]] == ["svc"]
    assert doc["accounts"][0]["org"] == "org_acme" and doc["accounts"][0]["error"] is None
    toks = by_id(doc)
    assert len(toks) == len(seeded) + 1          # every page was read
    lists = env.onplana.requests_to("GET", r"/api/v1/tokens")
    assert len(lists) == 6 and sum("cursor=" in (e["query"] or "") for e in lists) == 5
    want = {
        "wild": ["unmanaged", "wildcard"],
        "forever": ["no-expiry", "unmanaged"],
        "soon": ["expires-soon", "unmanaged"],
        "unused": ["never-used", "unmanaged"],
        "young": ["unmanaged"],
        "stale": ["stale", "unmanaged"],
        "stray": ["stray"],
        "hand": ["unmanaged"],
        "expired": [],
        "revoked": [],
    }
    for key, tok in seeded.items():
        assert findings(toks[tok["id"]]) == want[key], (key, toks[tok["id"]])
    assert findings(toks[cur]) == ["current"]
    states = {k: toks[t["id"]]["state"] for k, t in seeded.items()}
    assert states.pop("expired") == "expired" and states.pop("revoked") == "revoked"
    assert set(states.values()) == {"active"}
    severity = {f["finding"]: f["severity"] for t in toks.values() for f in t["findings"]}
    assert {k for k, v in severity.items() if v == "warning"} == WARNINGS
    assert {k for k, v in severity.items() if v == "info"} == {"current", "unmanaged"}
    no_leaks(secrets=env.secrets())


def test_json_shape(env, no_leaks):
    env.configure([env.integration(projects=["prj_1", "prj_2"])])
    env.rotate()
    env.seed("forever", expires_in=None, used_ago=None, projectIds=["prj_9"])
    doc = env.report(rc=1).json()
    assert set(doc) == {"accounts"}
    acct = doc["accounts"][0]
    assert set(acct) == {"name", "org", "error", "tokens"}
    for tok in acct["tokens"]:
        assert set(tok) == TOKEN_KEYS
        assert tok["id"].startswith("pat_") and len(tok["prefix"]) == 12
        assert tok["prefix"].startswith("onp_pat_")
        assert isinstance(tok["scopes"], list) and isinstance(tok["projects"], list)
        assert RFC3339.fullmatch(tok["created_at"])
        for k in ("expires_at", "last_used_at"):
            assert tok[k] is None or RFC3339.fullmatch(tok[k]), (k, tok)
        for f in tok["findings"]:
            assert set(f) == {"finding", "severity"} and f["severity"] in ("info", "warning")
    toks = {t["name"]: t for t in acct["tokens"]}
    forever = toks["forever"]
    assert forever["expires_at"] is None and forever["last_used_at"] is None
    assert forever["projects"] == ["prj_9"] and forever["scopes"] == SCOPES
    cur = by_id(doc)[current_id(env)]
    assert cur["projects"] == ["prj_1", "prj_2"] and sorted(cur["scopes"]) == sorted(SCOPES)
    # patrol's TZ is EST5EDT; the times are still UTC and match Onplana's
    seeded = env.onplana.token(cur["id"])
    assert cur["expires_at"] == seeded["expiresAt"] and cur["created_at"] == seeded["createdAt"]
    no_leaks(secrets=env.secrets())


def test_table_output(env, no_leaks):
    env.configure([env.integration()])
    env.rotate()
    wild = env.seed("admin-wild", scopes=["WILDCARD"], expires_in=None)
    r = env.patrol.run("--report")
    assert r.rc == 1, r
    lines = r.stdout.splitlines()
    assert lines[0].startswith("svc (org org_acme): 2 tokens, 1 with warnings"), r
    assert lines[1].split()[:3] == ["ID", "PREFIX", "NAME"] and lines[1].rstrip().endswith("FINDINGS")
    row = next(line for line in lines if line.startswith(wild["id"]))
    assert set(row.split()[-1].split(",")) == {"wildcard", "no-expiry", "unmanaged"}
    assert wild["prefix"] in row and " active " in row
    cur = next(line for line in lines if line.startswith(current_id(env)))
    assert cur.split()[-1] == "current" and "projects.read,tasks.read" in cur
    no_leaks(secrets=env.secrets())


def test_clean_account_exits_0(env, no_leaks):
    env.configure([env.integration()])
    env.rotate()
    env.seed("hand-made")                       # info only
    r = env.report(rc=0)
    toks = by_id(r.json())
    assert findings(toks[current_id(env)]) == ["current"]
    assert env.patrol.run("--report").rc == 0
    no_leaks(secrets=env.secrets())


def test_expires_soon_uses_the_shortest_renew_before(env, no_leaks):
    ops = env.add_account("ops", "cli_ops")
    env.configure([env.integration(renew_before="3d"),
                   env.integration("other", renew_before="10d")], policy=dict(renew_before="7d"))
    a = env.seed("svc-5d", expires_in=5 * DAY)
    b = env.seed("svc-2d", expires_in=2 * DAY)
    # an account without integrations takes the policy's renew_before (7d)
    c = env.seed("ops-5d", client_id="cli_ops", expires_in=5 * DAY)
    d = env.seed("ops-9d", client_id="cli_ops", expires_in=9 * DAY)
    doc = env.report(rc=1).json()
    assert [x["name"] for x in doc["accounts"]] == ["svc", "ops"]
    assert next(x for x in doc["accounts"] if x["name"] == "ops")["org"] == ops["org"]
    svc, opsd = by_id(doc, "svc"), by_id(doc, "ops")
    assert findings(svc[a["id"]]) == ["unmanaged"]
    assert findings(svc[b["id"]]) == ["expires-soon", "unmanaged"]
    assert findings(opsd[c["id"]]) == ["expires-soon", "unmanaged"]
    assert findings(opsd[d["id"]]) == ["unmanaged"]
    no_leaks(secrets=env.secrets())


def test_named_accounts_only(env):
    env.add_account("ops", "cli_ops")
    env.configure([env.integration()])
    env.seed("ops-wild", client_id="cli_ops", scopes=["WILDCARD"])
    env.seed("svc-hand")
    r = env.report("svc", rc=0)
    assert [a["name"] for a in r.json()["accounts"]] == ["svc"]
    r = env.report("ops", rc=1)
    assert [a["name"] for a in r.json()["accounts"]] == ["ops"]
    assert [t["name"] for t in r.json()["accounts"][0]["tokens"]] == ["ops-wild"]


def test_a_name_given_twice_counts_once(env, no_leaks):
    """`--rotate-now ci-reader ci-reader` (a generated list): one rotation, not two at once
    racing on the store's check-and-set, the loser leaving a live token nowhere; and
    `--report svc svc` lists the account once."""
    env.configure([env.integration()])
    env.rotate()
    r = env.patrol.run("--rotate-now", "--json", "ci-reader", "ci-reader")
    assert r.rc == 0, r
    assert [x["result"] for x in r.json()["results"]] == ["rotated"], r.stdout
    active = [t["id"] for t in env.onplana.ctl("GET", "/_test/tokens")["tokens"] if t["state"] == "active"]
    assert active == [current_id(env)], (active, r.stdout)
    r = env.report("svc", "svc", rc=0)
    assert [a["name"] for a in r.json()["accounts"]] == ["svc"]
    no_leaks(secrets=env.secrets())


def test_stray_only_for_this_accounts_integrations(env):
    env.add_account("ops", "cli_ops")
    env.configure([env.integration()])
    # ci-reader belongs to svc: the same name in ops' tokens is not tied to anything there
    t = env.seed(stray_name(), client_id="cli_ops")
    # a name close to the pattern but not it
    u = env.seed("ci-reader-2025010-deadbeef")
    doc = env.report(rc=0).json()
    assert findings(by_id(doc, "ops")[t["id"]]) == ["unmanaged"]
    assert findings(by_id(doc, "svc")[u["id"]]) == ["unmanaged"]


# ------------------------------------------------------------------ current and retiring

def test_retiring_token_after_revoke_after(env, no_leaks):
    env.configure([env.integration(revoke_after="1h")])
    env.rotate()
    old = current_id(env)
    env.rotate()
    new = current_id(env)
    assert new != old
    st = env.patrol.state()["integrations"]["ci-reader"]
    assert st["revocation"]["token_id"] == old
    # the retiring token expires within renew_before? not flagged: it is on its way out
    env.onplana.update_token(old, expiresAt=harness.rfc3339(time.time() + 2 * DAY))
    doc = env.report(rc=0).json()
    toks = by_id(doc)
    assert findings(toks[new]) == ["current"]
    assert findings(toks[old]) == ["retiring"]
    no_leaks(secrets=env.secrets())


def test_failed_hook_keeps_old_token_retiring_not_stray(env, no_leaks):
    env.configure([env.integration()])
    env.rotate()
    old = current_id(env)
    env.configure([env.integration(on_rotate=["/bin/false"])], oneshot_timeout="1s")
    r = env.rotate(ok=False)
    assert r.rc == 1, r
    new = current_id(env)
    assert new != old and env.onplana.token(old)["state"] == "active"
    doc = env.report(rc=0).json()
    toks = by_id(doc)
    assert findings(toks[new]) == ["current"]
    assert findings(toks[old]) == ["retiring"]
    # and --revoke-strays leaves both alone
    r = env.patrol.run("--report", "--revoke-strays")
    assert r.rc == 0, r
    assert env.onplana.token(old)["state"] == "active" and env.onplana.token(new)["state"] == "active"
    no_leaks(secrets=env.secrets())


def test_in_flight_new_token_is_not_stray(env, vault, no_leaks):
    env.configure([env.integration()])
    env.rotate()
    old = current_id(env)
    # the write lands, every read back fails: the rotation stays in flight (after WRITTEN)
    vault.faults({"method": "GET", "path": "/v1/secret/data/onplana/ci-reader", "action": "status",
                  "status": 500, "times": -1, "skip": 1})
    env.configure([env.integration()], oneshot_timeout="2s")
    r = env.rotate(ok=False)
    assert r.rc == 1, r
    vault.clear_faults()
    st = env.patrol.state()["integrations"]["ci-reader"]
    flight = st.get("in_flight") or {}
    new = flight.get("new_token_id") or st.get("new_token_id")
    if not new:
        pytest.skip(f"rotation did not stay in flight: {st}")
    doc = env.report(rc=0).json()
    toks = by_id(doc)
    assert findings(toks[new]) == ["current"] and findings(toks[old]) == ["current"]
    r = env.patrol.run("--report", "--revoke-strays")
    assert r.rc == 0, r
    assert env.onplana.token(new)["state"] == "active" and env.onplana.token(old)["state"] == "active"
    no_leaks(secrets=env.secrets())


# ------------------------------------------------------------------ --revoke-strays

def strays_setup(env):
    """A current and a retiring token (real rotations), strays spread over pages,
    an unmanaged token."""
    env.configure([env.integration(revoke_after="1h"), env.integration("other", revoke_after="1h")])
    env.rotate("ci-reader")
    retiring = current_id(env)
    env.rotate("ci-reader")
    current = current_id(env)
    env.rotate("other")
    other = current_id(env, "other")
    strays = [env.seed(stray_name()), env.seed(stray_name("other", tail="0123abcd")),
              env.seed(stray_name(day="20240229", tail="cafebabe"), created_ago=50 * DAY)]
    hand = env.seed("hand-made")
    return dict(current=current, retiring=retiring, other=other,
                strays=[s["id"] for s in strays], names=[s["name"] for s in strays], hand=hand["id"])


def test_revoke_strays_revokes_strays_only(env, no_leaks):
    s = strays_setup(env)
    audit_before = len(env.patrol.audit())
    env.onplana.clear_log()
    r = env.report("--revoke-strays", rc=0)
    for tid in s["strays"]:
        assert env.onplana.token(tid)["state"] == "revoked"
    for tid in (s["current"], s["retiring"], s["other"], s["hand"]):
        assert env.onplana.token(tid)["state"] == "active", tid
    deleted = {e["path"].rsplit("/", 1)[1] for e in env.onplana.requests_to("DELETE", r"/api/v1/tokens/.*")}
    assert deleted == set(s["strays"])
    # audit: one `revoked` line per stray, under the integration its name points to
    new = env.patrol.audit()[audit_before:]
    assert [a["event"] for a in new] == ["revoked"] * 3
    assert {a["old_token_id"] for a in new} == set(s["strays"])
    assert {a["old_token_id"]: a["integration"] for a in new} == dict(zip(
        s["strays"], ["ci-reader", "other", "ci-reader"]))
    assert all(RFC3339.fullmatch(a["time"]) for a in new)
    # logged at notice level, one line each
    for tid in s["strays"]:
        assert re.search(rf"revoked stray token {tid}", r.stderr), r
    # the report shows what remains
    toks = by_id(r.json())
    for tid in s["strays"]:
        assert toks[tid]["state"] == "revoked" and toks[tid]["findings"] == []
    assert findings(toks[s["current"]]) == ["current"] and findings(toks[s["retiring"]]) == ["retiring"]
    assert findings(toks[s["hand"]]) == ["unmanaged"]
    # a second run has nothing left to do
    r2 = env.report("--revoke-strays", rc=0)
    assert len(env.patrol.audit()) == audit_before + 3
    assert "revoked stray" not in r2.stderr
    no_leaks(secrets=env.secrets())


def test_revoke_strays_exit_reflects_what_remains(env, no_leaks):
    s = strays_setup(env)
    wild = env.seed("admin-wild", scopes=["WILDCARD"])
    r = env.patrol.run("--report", "--revoke-strays")
    assert r.rc == 1, r                      # the wildcard token is still there
    assert all(env.onplana.token(t)["state"] == "revoked" for t in s["strays"])
    assert env.onplana.token(wild["id"])["state"] == "active"
    row = next(line for line in r.stdout.splitlines() if line.startswith(s["strays"][0]))
    assert " revoked " in row and row.split()[-1] == "-"
    no_leaks(secrets=env.secrets())


def test_revoke_strays_dry_run_revokes_nothing(env, no_leaks):
    s = strays_setup(env)
    before_tokens = env.onplana.tokens(account="cli_wh")
    before_audit = env.patrol.audit()
    before_state = env.patrol.state()
    env.onplana.clear_log()
    r = env.patrol.run("--report", "--revoke-strays", "--dry-run")
    assert r.rc == 1, r                      # the strays remain
    for tid, name in zip(s["strays"], s["names"]):
        assert f"would revoke {tid} ({name})" in r.stdout
    assert r.stdout.count("would revoke") == 3
    assert env.onplana.requests_to("DELETE", r".*") == []
    assert env.onplana.tokens(account="cli_wh") == before_tokens
    assert env.patrol.audit() == before_audit and env.patrol.state() == before_state
    # --json keeps stdout one document; the plan goes to stderr
    r = env.report("--revoke-strays", "--dry-run", rc=1)
    assert r.stderr.count("would revoke") == 3
    toks = by_id(r.json())
    assert all(findings(toks[t]) == ["stray"] for t in s["strays"])
    no_leaks(secrets=env.secrets())


def test_revoke_strays_takes_the_lock_dry_run_does_not(env):
    s = strays_setup(env)
    lock = env.patrol.state_dir / "lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = env.patrol.run("--report", "--revoke-strays", "--dry-run")
        assert r.rc == 1 and "would revoke" in r.stdout, r
        r = env.patrol.run("--report", "--revoke-strays")
        assert r.rc == 1, r
        assert "another patrol is running" in r.stderr, r
        assert all(env.onplana.token(t)["state"] == "active" for t in s["strays"])
        # a plain report reads without the lock
        assert env.patrol.run("--report").rc == 1
    finally:
        os.close(fd)


def test_stray_revoked_behind_our_back_is_skipped(env, onplana):
    env.configure([env.integration()])
    env.rotate()
    t = env.seed(stray_name())
    # revoked between the list and the revocation: patrol re-checks first
    onplana.faults({"method": "GET", "path": f"/api/v1/tokens/{t['id']}", "action": "wrong_shape",
                    "times": -1, "perform": True,
                    "body": {"id": t["id"], "prefix": t["prefix"], "name": t["name"],
                             "orgId": "org_acme", "scopes": SCOPES, "projectIds": [],
                             "expiresAt": None, "createdAt": harness.rfc3339(time.time()),
                             "lastUsedAt": None, "revokedAt": harness.rfc3339(time.time())}})
    onplana.clear_log()
    env.patrol.run("--report", "--revoke-strays")
    assert onplana.requests_to("DELETE", r".*") == []
    assert [a for a in env.patrol.audit() if a["event"] == "revoked"] == []


# ------------------------------------------------------------------ usage

def test_unknown_account_is_usage_error(env):
    env.configure([env.integration()])
    r = env.patrol.run("--report", "scv")
    assert r.rc == 64, r
    assert 'did you mean "svc"' in r.stderr
    assert r.stdout == ""


def test_usage_errors(env):
    env.configure([env.integration()])
    r = env.patrol.run("--revoke-strays")
    assert r.rc == 64, r
    assert "--revoke-strays goes with --report" in r.stderr
    assert env.patrol.run("--status", "--revoke-strays").rc == 64
    assert env.patrol.run("--report", "--dry-run").rc == 64


def test_listing_failure_is_reported(env, onplana, no_leaks):
    env.configure([env.integration()])
    onplana.faults({"method": "GET", "path": "/api/v1/tokens", "action": "status", "status": 403,
                    "times": -1})
    r = env.report(rc=1)
    acct = r.json()["accounts"][0]
    assert acct["tokens"] == [] and "403" in acct["error"]
    assert "403" in r.stderr
    no_leaks(secrets=env.secrets())
