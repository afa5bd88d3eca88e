"""End-to-end crash recovery (SPEC section 4, doc/design.md "Recovery after a crash").

patrol built with --enable-crash-points calls _exit(99) at a named point when
PATROL_CRASH_AT=<name>.  For every point a rotation passes through: a good first
rotation, a second `--rotate-now` that dies at the point, then a plain `--rotate-now`
(the recovery).  After the crash and after the recovery the records must load and the
invariants of SPEC section 4 hold:

  - the store holds a token that is active at Onplana, and the id recorded beside it
    (json field / raw custom_metadata) is that token's;
  - before recovery at most one extra active token of the integration, after it exactly
    one: the one in the store;
  - every token patrol created (<integration>-YYYYMMDD-<8 hex>) is in the store or revoked;
  - state.json and audit.jsonl parse and agree with the store.

The tests skip (with the reason) when the patrol binary lacks the crash points.
"""
import json
import re
import signal
import time

import pytest

import harness

SCOPES = ["projects.read", "tasks.read"]
INTEG = "ci-reader"
CREATED_NAME = re.compile(r"^(?P<integ>.+)-(?P<date>\d{8})-(?P<rand>[0-9a-f]{8})$")

# Crash points of a rotation from a current token to a new one, in order.  The step
# recorded when each fires ("creating" is recorded before the create is sent,
# "create-answered" fires after the answer but before it is recorded).  Steps that
# recovery treats like the one before them are not recorded (doc/design.md): at
# "verified" the record still says "created", at "read_back" "written", and at
# "hooked" (no on_rotate here) "promoted".
ROTATION_POINTS = ["creating", "create-answered", "created", "verified", "written",
                   "read_back", "promoted", "hooked", "finished", "records-before-rename"]
STEP_AT = {"creating": "creating", "create-answered": "creating", "created": "created",
           "verified": "created", "written": "written", "read_back": "written",
           "promoted": "promoted", "hooked": "promoted"}
# How many tokens patrol has created once the recovery run is done (first rotation
# included): recovery must finish a rotation that reached the store without minting
# another, and may start afresh (one more) after undoing or after a finished one.
CREATED_AFTER = {"creating": 2, "create-answered": 3, "created": 3, "verified": 3,
                 "written": 2, "read_back": 2, "promoted": 2, "hooked": 2,
                 "finished": 3, "records-before-rename": 3}


# ------------------------------------------------------------------ stores

class VaultKV:
    """The Vault store as the tests see it (KV v2 mount "secret", AppRole)."""
    kind = "vault"

    def __init__(self, start_server, patrol, ca):
        self.srv = start_server("vault")
        self.role = self.srv.ctl("POST", "/_test/approle", {"role_name": "patrol",
                                                             "policies": ["patrol-rw"]})
        patrol.write_file("vault-secret-id", self.role["secret_id"])
        self.config = dict(name="vault", type="vault", url=self.srv.url, mount="secret",
                           kv_version=2, ca_file=ca.ca_pem,
                           auth=dict(method="approle", role_id=self.role["role_id"],
                                     secret_id_file="vault-secret-id"))
        self.secrets = [self.role["secret_id"]]

    def credential_files(self):
        return {"vault-secret-id": self.role["secret_id"]}

    def current(self, secret, fmt):
        """(token value, token id recorded with it, version) of what consumers read."""
        r = self.srv.http.get(f"{self.srv.url}/_test/kv",
                              params=dict(namespace="", mount="secret", path=secret), timeout=30)
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        kv = r.json()
        ver = str(kv["current_version"])
        data = kv["versions"][ver]["data"]
        if fmt == "raw":
            assert set(data) == {"token"}, data
            cm = kv.get("custom_metadata") or {}
            assert cm.get("managed_by") == "patrol", cm
            return data["token"], cm.get("token_id"), ver
        assert data.get("managed_by") == "patrol", data
        return data["token"], data.get("token_id"), ver


class AwsSM:
    """AWS Secrets Manager (static keys): what consumers read is AWSCURRENT; patrol
    stages the new token as AWSPENDING first."""
    kind = "aws"
    SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"

    def __init__(self, start_server, patrol, ca):
        from test_aws_server import AwsServer, REGION
        self.srv = start_server("aws", cls=AwsServer)
        self.user = self.srv.add_user(access_key_id="AKIAPATROLE2E0000001",
                                      secret_access_key=self.SECRET_KEY, name="patrol")
        plain = self.srv.plain_url
        patrol.write_file("aws-secret-key", self.SECRET_KEY)
        self.config = dict(name="aws", type="aws", region=REGION, endpoint=self.srv.url,
                           sts_endpoint=self.srv.url, imds_endpoint=plain,
                           container_endpoint=plain, ca_file=ca.ca_pem,
                           auth=dict(method="static", access_key_id=self.user["access_key_id"],
                                     secret_access_key_file="aws-secret-key"))
        self.secrets = [self.SECRET_KEY]

    def credential_files(self):
        return {"aws-secret-key": self.SECRET_KEY}

    def current(self, secret, fmt):
        sec = self.srv.secret(secret)
        cur = self.srv.stage(secret, "AWSCURRENT") if sec else None
        if cur is None or cur.get("value") is None:
            return None
        tags = sec.get("tags") or {}
        if fmt == "raw":
            assert tags.get("managed_by") == "patrol", tags
            # tags belong to the secret: they describe the version they name
            # (between AWSCURRENT's move and the tag update, the previous one)
            if tags.get("version_id") != cur["id"]:
                return cur["value"], None, cur["id"]
            return cur["value"], tags.get("token_id"), cur["id"]
        data = json.loads(cur["value"])
        assert data.get("managed_by") == "patrol", data
        return data["token"], data.get("token_id"), cur["id"]


class AzureKV:
    """Azure Key Vault (client secret): consumers read the latest version."""
    kind = "azure"

    def __init__(self, start_server, patrol, ca):
        from test_azure_server import AzureServer
        self.srv = start_server("azure", cls=AzureServer)
        self.app = self.srv.add_app("app-patrol")
        patrol.write_file("azure-secret", self.app["client_secret"])
        self.config = dict(name="azure", type="azure", url=self.srv.url, ca_file=ca.ca_pem,
                           authority_url=self.srv.url,
                           auth=dict(method="client_secret", tenant_id=self.srv.tenant,
                                     client_id=self.app["client_id"],
                                     client_secret_file="azure-secret"))
        self.secrets = [self.app["client_secret"]]

    def credential_files(self):
        return {"azure-secret": self.app["client_secret"]}

    def current(self, secret, fmt):
        s = self.srv.vault().get(secret.replace("/", "-"))
        if not s or s.get("deleted") or not s["versions"]:
            return None
        b = s["versions"][-1]
        tags = b.get("tags") or {}
        if fmt == "raw":
            assert tags.get("managed_by") == "patrol", tags
            return b["value"], tags.get("token_id"), b.get("id")
        data = json.loads(b["value"])
        assert data.get("managed_by") == "patrol", data
        return data["token"], data.get("token_id"), b.get("id")


STORES = {"vault": VaultKV, "aws": AwsSM, "azure": AzureKV}


class Env:
    def __init__(self, patrol, onplana, store, fmt="json"):
        self.patrol, self.onplana, self.store, self.fmt = patrol, onplana, store, fmt
        self.acct = onplana.add_account(client_id="cli_wh", org="org_acme", scopes_held=SCOPES)
        # Azure secret names allow no "/"
        self.secret = INTEG if store.kind == "azure" else f"onplana/{INTEG}"

    def configure(self, on_rotate=None, oneshot_timeout="10s", onplana=None, store=None,
                  scopes=SCOPES, **policy):
        pol = dict(ttl="30d", renew_before="7d", retry_min="1s", retry_max="2s")
        pol.update(policy)
        integ = dict(name=INTEG, account="svc", scopes=scopes, store=self.store.config["name"],
                     secret=self.secret, format=self.fmt, on_rotate=on_rotate)
        self.patrol.write_config(dict(
            policy=pol, oneshot_timeout=oneshot_timeout,
            onplana=dict(self.patrol.onplana_config(self.onplana), **(onplana or {})),
            accounts=[self.patrol.account("svc", self.acct)],
            stores=[dict(self.store.config, **(store or {}))], integrations=[integ]))

    def rotate(self, crash_at=None, expect=0):
        env = {"PATROL_CRASH_AT": crash_at} if crash_at else None
        r = self.patrol.run("--rotate-now", env=env)
        assert r.rc == expect, r
        return r

    # -- what the services hold
    def created(self):
        """Every token patrol made for the integration (by its naming scheme)."""
        out = []
        for t in self.onplana.tokens(account="cli_wh"):
            m = CREATED_NAME.match(t["name"])
            if m and m.group("integ") == INTEG:
                out.append(t)
        return out

    def active(self):
        return [t for t in self.created() if t["state"] == "active"]

    def in_store(self):
        """The Onplana token the store hands out (asserting the recorded id is its id)."""
        cur = self.store.current(self.secret, self.fmt)
        assert cur is not None, "the store holds no secret"
        value, recorded_id, _ = cur
        match = [t for t in self.onplana.tokens(account="cli_wh") if t["token"] == value]
        assert len(match) == 1, "the store holds a token Onplana does not know"
        tok = match[0]
        assert recorded_id in (None, tok["id"]), (recorded_id, tok["id"])   # None: metadata names another version
        return tok

    # -- records
    def records(self):
        """(state entry, audit events); both must parse."""
        st = self.patrol.state()
        assert st is not None and isinstance(st.get("integrations"), dict), st
        audit = self.patrol.audit()
        for a in audit:
            assert a["integration"] == INTEG and a["event"] in (
                "rotated", "failed", "recovered", "revoked", "adopted"), a
            assert a["time"].endswith("Z")
        return st["integrations"].get(INTEG), audit

    def status(self):
        r = self.patrol.run("--status", "--json")
        assert r.rc == 0, r
        ints = {i["name"]: i for i in r.json()["integrations"]}
        return ints[INTEG]

    # -- the invariants
    def check_crashed(self):
        """Right after the crash: the store still hands out a live token, at most one
        extra token is alive, and the records load (through --status)."""
        tok = self.in_store()
        assert tok["state"] == "active", tok
        active = self.active()
        assert tok["id"] in [t["id"] for t in active]
        assert len(active) <= 2, [(t["id"], t["name"]) for t in active]
        self.records()
        return self.status()

    def check_recovered(self):
        tok = self.in_store()
        assert tok["state"] == "active", tok
        assert [t["id"] for t in self.active()] == [tok["id"]]
        for t in self.created():
            assert t["id"] == tok["id"] or t["state"] == "revoked", t
        entry, audit = self.records()
        assert entry["token_id"] == tok["id"], entry
        assert entry["last_result"] == "rotated", entry
        assert "in_flight" not in entry, entry
        assert "revocation" not in entry, entry
        assert audit and audit[-1]["new_token_id"] == tok["id"], audit[-1:]
        assert audit[-1]["event"] in ("rotated", "recovered"), audit[-1]
        assert not (self.patrol.state_dir / "state.json.tmp").exists()
        st = self.status()
        assert st["pending"] is None and st["token_id"] == tok["id"], st
        return tok


# ------------------------------------------------------------------ fixtures

_CRASH_SUPPORT = {}


def require_crash_points(patrol_dir_factory, onplana, store):
    """Skip unless the binary has crash points: a throwaway setup is told to die at
    "creating"; only a build with --enable-crash-points exits 99 there."""
    if "ok" not in _CRASH_SUPPORT:
        p = harness.Patrol(patrol_dir_factory, store.srv.ca)
        for name, content in store.credential_files().items():
            p.write_file(name, content)
        acct = onplana.add_account(client_id="cli_probe", org="org_acme", scopes_held=SCOPES)
        p.write_config(dict(
            oneshot_timeout="5s", onplana=p.onplana_config(onplana),
            accounts=[p.account("probe", acct)], stores=[store.config],
            integrations=[dict(name="probe", account="probe", scopes=SCOPES,
                               store=store.config["name"], secret="onplana/probe")]))
        r = p.run("--rotate-now", env={"PATROL_CRASH_AT": "creating"})
        _CRASH_SUPPORT["ok"] = r.rc == 99
        _CRASH_SUPPORT["why"] = (f"{p.binary} has no crash points (PATROL_CRASH_AT=creating "
                                 f"exited {r.rc}, not 99): configure with --enable-crash-points")
    if not _CRASH_SUPPORT["ok"]:
        pytest.skip(_CRASH_SUPPORT["why"])


@pytest.fixture(params=["vault"])
def store(request, start_server, patrol, ca):
    return STORES[request.param](start_server, patrol, ca)


# The whole matrix also runs against AWS (staged writes) and Azure.
ALL_STORES = pytest.mark.parametrize("store", ["vault", "aws", "azure"], indirect=True)


@pytest.fixture
def make_env(patrol, onplana, store, tmp_path):
    def make(fmt="json"):
        require_crash_points(tmp_path / "probe", onplana, store)
        return Env(patrol, onplana, store, fmt)
    return make


def leaks(no_leaks, env):
    no_leaks(secrets=env.store.secrets)


# ------------------------------------------------------------------ the matrix

@ALL_STORES
@pytest.mark.parametrize("point", ROTATION_POINTS)
def test_crash_then_recover(make_env, no_leaks, point):
    env = make_env()
    env.configure()
    env.rotate()
    first = env.in_store()
    env.rotate(crash_at=point, expect=99)
    st = env.check_crashed()
    if point in STEP_AT:
        assert st["pending"] and st["pending"]["kind"] == "rotation", st
        assert st["pending"]["step"] == STEP_AT[point], st
    env.rotate()
    tok = env.check_recovered()
    assert tok["id"] != first["id"]
    assert env.onplana.token(first["id"])["state"] == "revoked"
    assert len(env.created()) == CREATED_AFTER[point], [(t["name"], t["state"]) for t in env.created()]
    leaks(no_leaks, env)


@pytest.mark.parametrize("point", ROTATION_POINTS)
def test_audit_names_every_token_that_reached_the_store(make_env, point):
    """Every rotation that put a token in the store is in audit.jsonl, even when patrol
    died right after recording it."""
    env = make_env()
    env.configure()
    env.rotate()
    env.rotate(crash_at=point, expect=99)
    after_crash = env.in_store()
    env.rotate()
    _, audit = env.records()
    announced = {a["new_token_id"] for a in audit if a["event"] in ("rotated", "recovered")}
    assert after_crash["id"] in announced, (point, after_crash["id"], audit)
    assert env.in_store()["id"] in announced


@ALL_STORES
@pytest.mark.parametrize("point", ["creating", "created", "written", "promoted", "finished"])
def test_crash_then_recover_raw(make_env, no_leaks, point):
    env = make_env("raw")
    env.configure()
    env.rotate()
    env.rotate(crash_at=point, expect=99)
    env.check_crashed()
    env.rotate()
    env.check_recovered()
    leaks(no_leaks, env)


@pytest.mark.parametrize("point", ["creating", "create-answered", "created", "verified",
                                   "written", "read_back", "promoted", "hooked"])
def test_status_shows_the_pending_rotation(make_env, point):
    env = make_env()
    env.configure()
    env.rotate()
    env.rotate(crash_at=point, expect=99)
    st = env.status()
    pend = st["pending"]
    assert pend is not None and pend["kind"] == "rotation", st
    assert pend["step"] == STEP_AT[point]
    state = env.patrol.state()       # the snapshot may lag: --status also replays the journal
    assert state is not None
    if point in ("creating", "create-answered"):
        assert pend["new_token_id"] is None
    else:
        assert pend["new_token_id"] and pend["new_token_id"].startswith("pat_")
        assert env.onplana.token(pend["new_token_id"]) is not None
    table = env.patrol.run("--status")
    assert table.rc == 0 and f"rotation at step {STEP_AT[point]}" in table.stdout, table


def test_status_after_crash_before_any_rotation(make_env):
    """A crash in the very first rotation: nothing in the store yet."""
    env = make_env()
    env.configure()
    env.rotate(crash_at="created", expect=99)
    assert env.store.current(env.secret, env.fmt) is None
    st = env.status()
    assert st["pending"]["kind"] == "rotation" and st["pending"]["step"] == "created"
    assert len(env.active()) == 1                 # the one extra token
    env.rotate()
    env.check_recovered()
    assert len(env.created()) == 2                # the undone one, revoked, and the new one


# ------------------------------------------------------------------ crashes in recovery

@ALL_STORES
@pytest.mark.parametrize("first,second", [
    ("creating", "undone"),
    ("create-answered", "undone"),
    ("verified", "undone"),
    ("written", "read_back"),
    ("written", "records-before-rename"),      # the compaction at start of the recovery run
    ("read_back", "promoted"),
    ("hooked", "finished"),
])
def test_crash_during_recovery(make_env, no_leaks, first, second):
    env = make_env()
    env.configure()
    env.rotate()
    env.rotate(crash_at=first, expect=99)
    env.check_crashed()
    env.rotate(crash_at=second, expect=99)
    env.check_crashed()
    env.rotate()
    env.check_recovered()
    leaks(no_leaks, env)


def test_kill_between_store_write_and_its_record(make_env, no_leaks):
    """SIGKILL while the store write is in flight: the write lands, the record still says
    "created" (verified, which is not recorded).  Recovery must find the new token in the store and finish (crash point
    recovered-written), not revoke the token consumers already read."""
    env = make_env()
    env.configure()
    env.rotate()
    first = env.in_store()
    vault = env.store.srv
    vault.faults({"method": "POST", "path": r"/v1/secret/data/onplana/ci-reader",
                  "action": "delay", "delay": 1.5, "times": 1})
    proc = env.patrol.spawn("--rotate-now")
    try:
        assert proc.wait_for(lambda: vault.fault_state()[0]["hits"] >= 1, timeout=20), \
            proc.stderr()
        proc.send_signal(signal.SIGKILL)
        proc.proc.wait(10)
    finally:
        proc.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while env.in_store()["id"] == first["id"] and time.monotonic() < deadline:
        time.sleep(0.05)
    new = env.in_store()
    assert new["id"] != first["id"], "the delayed write never landed"
    st = env.status()
    assert st["pending"]["step"] == "created", st
    # First recovery dies right after recording that the store holds the new token.
    env.rotate(crash_at="recovered-written", expect=99)
    assert env.status()["pending"]["step"] == "written"
    assert env.in_store()["id"] == new["id"]
    env.rotate()
    tok = env.check_recovered()
    assert tok["id"] == new["id"], "recovery replaced the token the store already held"
    assert env.onplana.token(first["id"])["state"] == "revoked"
    assert len(env.created()) == 2
    leaks(no_leaks, env)


def test_crash_after_a_due_revocation(make_env, no_leaks):
    """revoke_after > 0: the old token's revocation is carried out by the next run;
    a crash right after it is recorded (point "revoked") loses nothing."""
    env = make_env()
    env.configure(revoke_after="1s")
    env.rotate()
    first = env.in_store()
    env.rotate()
    second = env.in_store()
    assert env.onplana.token(first["id"])["state"] == "active"      # retiring, not yet due
    st = env.status()
    assert st["pending"] == {"kind": "revocation", "token_id": first["id"],
                             "due": st["pending"]["due"]}, st
    time.sleep(1.2)
    env.rotate(crash_at="revoked", expect=99)
    assert env.onplana.token(first["id"])["state"] == "revoked"
    assert env.in_store()["id"] == second["id"]
    assert env.status()["pending"] is None
    revoked = [a for a in env.patrol.audit() if a["event"] == "revoked"]
    assert revoked and revoked[-1]["old_token_id"] == first["id"]
    env.configure(revoke_after="0s")
    env.rotate()
    env.check_recovered()
    leaks(no_leaks, env)


def with_marking_hook(env):
    """Configure an on_rotate hook that appends each token id it is run for to a
    file; returns that file."""
    marks = env.patrol.dir / "hook.log"
    script = env.patrol.write_file(
        "hook.sh", f"#!/bin/sh\necho \"$PATROL_TOKEN_ID\" >> {marks}\n", mode=0o700)
    env.configure(on_rotate=[str(script)])
    return marks


def test_hook_crash_runs_the_hook_again_and_mints_nothing(make_env, no_leaks):
    """A crash at "promoted" (hook not yet run): the recovery runs on_rotate for the
    token in the store, then revokes the old one; no new token is made."""
    env = make_env()
    marks = with_marking_hook(env)
    env.rotate()
    env.rotate(crash_at="promoted", expect=99)
    pending = env.status()["pending"]["new_token_id"]
    env.rotate()
    tok = env.check_recovered()
    assert tok["id"] == pending
    assert marks.read_text().split()[-1] == tok["id"]
    assert len(env.created()) == 2
    leaks(no_leaks, env)


def test_hooked_is_recorded_when_there_is_a_hook(make_env, no_leaks):
    """With on_rotate, HOOKED differs from PROMOTED (the hook must not run twice for one
    token): it is recorded, and a crash right after it finishes without the hook."""
    env = make_env()
    marks = with_marking_hook(env)
    env.rotate()
    env.rotate(crash_at="hooked", expect=99)
    assert env.status()["pending"]["step"] == "hooked"
    runs = marks.read_text().split()
    env.rotate()
    tok = env.check_recovered()
    assert runs[-1] == tok["id"]
    assert marks.read_text().split() == runs, "the hook ran again for the same token"
    assert len(env.created()) == 2
    leaks(no_leaks, env)


def test_a_second_revocation_due_does_not_forget_the_first(make_env, no_leaks):
    """revoke_after = 1h and two rotations within the hour: both old tokens are due for
    revocation; neither may drop out of the records (it would stay alive, untracked)."""
    env = make_env()
    env.configure(revoke_after="1h")
    env.rotate()
    t1 = env.in_store()
    env.rotate()
    t2 = env.in_store()
    env.rotate()
    t3 = env.in_store()
    assert len({t1["id"], t2["id"], t3["id"]}) == 3
    entry, _ = env.records()
    st = env.patrol.run("--status", "--json")
    tracked = json.dumps(entry) + st.stdout
    for old in (t1, t2):
        assert env.onplana.token(old["id"])["state"] == "revoked" or old["id"] in tracked, (
            f"{old['id']} is alive and no longer in patrol's records", entry)
    leaks(no_leaks, env)


# ------------------------------------------------------------------ the store changed while patrol was down

def crashed_after_write(env):
    """One rotation, then one killed right after its store write: (first token, new id)."""
    env.configure()
    env.rotate()
    first = env.in_store()
    env.rotate(crash_at="written", expect=99)
    return first, env.status()["pending"]["new_token_id"]


def test_recovery_after_the_old_value_was_put_back(make_env, no_leaks):
    """A crash at "written" (the new token in Vault as version N); before the next start
    an operator puts the previous value back (version N+1).  Recovery must read what
    consumers read, not version N: the new token never became theirs, so it is revoked,
    the old one (theirs again) is kept, and a fresh rotation replaces it."""
    env = make_env()
    first, new_id = crashed_after_write(env)
    assert env.in_store()["id"] == new_id
    kv = env.store.srv.ctl("GET", "/_test/kv?mount=secret&path=onplana/ci-reader")
    env.store.srv.ctl("POST", "/_test/kv", {"path": "onplana/ci-reader",
                                           "data": kv["versions"]["1"]["data"]})
    assert env.in_store()["id"] == first["id"]
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    assert "rotation undone: vault secret onplana/ci-reader no longer holds it" in r.stderr, r
    cur = env.in_store()
    assert cur["state"] == "active" and cur["id"] not in (first["id"], new_id), cur
    assert env.onplana.token(new_id)["state"] == "revoked"
    assert [t["id"] for t in env.active()] == [cur["id"]]
    assert any(e["event"] == "recovered" and "no longer holds it" in (e.get("error") or "")
               for e in env.patrol.audit())
    leaks(no_leaks, env)


def test_recovery_when_a_kv1_secret_was_rewritten(make_env, no_leaks):
    """KV v1 keeps no versions: after a crash at "written" the previous value is put
    back.  Recovery used to give up ("incomplete") on every run, for ever, leaving the
    new token alive and the integration never rotated again."""
    env = make_env()
    srv = env.store.srv
    srv.ctl("POST", "/_test/mounts", {"path": "kv1", "version": 1})

    def kv1():
        return srv.ctl("GET", "/_test/kv?mount=kv1&path=onplana/ci-reader")["data"]

    env.configure(store=dict(mount="kv1", kv_version=1))
    env.rotate()
    old = kv1()
    env.rotate(crash_at="written", expect=99)
    new_id = env.status()["pending"]["new_token_id"]
    assert kv1()["token_id"] == new_id
    srv.ctl("POST", "/_test/kv", {"mount": "kv1", "path": "onplana/ci-reader", "data": old})
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    entry, _ = env.records()
    assert "in_flight" not in entry, entry
    cur = [t for t in env.onplana.tokens(account="cli_wh") if t["token"] == kv1()["token"]][0]
    assert cur["state"] == "active" and cur["id"] not in (old["token_id"], new_id), cur
    assert [t["id"] for t in env.active()] == [cur["id"]], "an orphan token is alive"
    leaks(no_leaks, env)


@ALL_STORES
def test_recovery_of_a_new_token_revoked_meanwhile(make_env, no_leaks):
    """A crash at "written"; before the next start the new token is revoked at Onplana
    (an admin, a leak response).  Recovery's /me says 401: it used to fail on every run,
    for ever, leaving Vault and Azure handing out the dead token.  Now the dead token is
    replaced by a fresh rotation (AWS: it was only staged, so it is dropped), and the old
    token, no longer in use, is revoked."""
    env = make_env()
    first, new_id = crashed_after_write(env)
    env.onplana.ctl("PATCH", f"/_test/tokens/{new_id}", {"revoked": True})
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    cur = env.in_store()
    assert cur["state"] == "active" and cur["id"] not in (first["id"], new_id), (cur, r)
    assert [t["id"] for t in env.active()] == [cur["id"]], "an orphan token is alive"
    entry, _ = env.records()
    assert "in_flight" not in entry and entry["token_id"] == cur["id"], entry
    leaks(no_leaks, env)


@ALL_STORES
def test_recovery_after_the_scopes_were_changed(make_env, no_leaks):
    """A crash at "written", then the integration's scopes are changed before the next
    start: the token in flight no longer carries what is configured.  Recovery used to
    fail its /me check on every run, for ever; now a fresh rotation replaces it with a
    token of the configured scopes and every other token is revoked."""
    env = make_env()
    crashed_after_write(env)
    env.configure(scopes=["projects.read"])
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    assert "scopes differ from those requested" in r.stderr, r
    cur = env.in_store()
    assert cur["scopes"] == ["projects.read"], cur
    assert [t["id"] for t in env.active()] == [cur["id"]], "an orphan token is alive"
    leaks(no_leaks, env)


@ALL_STORES
def test_daemon_replaces_a_dead_stored_token_at_once(make_env, no_leaks):
    """As above, but the daemon recovers, and the rotation that crashed was a
    --rotate-now ahead of schedule: the store's dead token must be replaced at start,
    not when the policy would next make the integration due (weeks later).  (AWS only
    staged it: its store still holds the old, live token, which stays.)"""
    env = make_env()
    first, new_id = crashed_after_write(env)
    env.onplana.ctl("PATCH", f"/_test/tokens/{new_id}", {"revoked": True})
    d = env.patrol.spawn()
    try:
        def settled():      # nothing in flight, and a live token in the store
            return not env.status()["pending"] and env.in_store()["state"] == "active"
        assert d.wait_for(settled, timeout=15), d.stderr()
    finally:
        assert d.stop() == 0, d.stderr()
    assert env.onplana.token(new_id)["state"] == "revoked"
    assert [t["id"] for t in env.active()] == [env.in_store()["id"]], "an orphan token is alive"
    leaks(no_leaks, env)
