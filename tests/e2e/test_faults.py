"""End-to-end fault matrix: every remote call of a rotation (Onplana: session, create,
list, revoke, /me; Vault: login, read, write, metadata) against the fake servers'
/_test/faults, and TLS failure through a wrong CA.

For each fault the outcome must be what a user expects: either a retry and success, or
a clean failure (exit 1, a one-line `ci-reader: failed|incomplete: <call>: ...` naming
the call) with the old token alive in the store; and never an orphan: every token patrol
created is in the store, revoked, or still in patrol's records (a rotation in flight, a
revocation due) so that the next run settles it -- which each test then checks by
running once more without faults.

Kept fast: oneshot_timeout 2s, retry_min 1s; no delay beyond patrol's 30 s timeout
(drop and lose_response stand for connection faults)."""
import time

import pytest

from test_crash import INTEG, SCOPES, Env, VaultKV

SECRET_PATH = r"/v1/secret/data/onplana/ci-reader"
META_PATH = r"/v1/secret/metadata/onplana/ci-reader"

# call -> (server, method, path regex, what patrol's error line names)
CALLS = {
    "oauth": ("onplana", "POST", r"/oauth/token", "onplana: session"),
    "create": ("onplana", "POST", r"/api/v1/tokens", "onplana: create token"),
    "list": ("onplana", "GET", r"/api/v1/tokens", "onplana: list tokens"),
    "revoke": ("onplana", "DELETE", r"/api/v1/tokens/[^/]+", "onplana: revoke token"),
    "me": ("onplana", "GET", r"/api/v1/me", "onplana: verify token"),
    "login": ("vault", "POST", r"/v1/auth/approle/login", "vault: login"),
    "read": ("vault", "GET", SECRET_PATH, "vault: read"),
    "write": ("vault", "POST", SECRET_PATH, "vault: write"),
    "metadata-read": ("vault", "GET", META_PATH, "vault: write-metadata"),
    "metadata-write": ("vault", "POST", META_PATH, "vault: write-metadata"),
}
ROTATION_CALLS = ["oauth", "create", "me", "revoke", "login", "read", "write"]


def rule(call, action, times=1, **kw):
    _, method, path, _ = CALLS[call]
    r = dict(method=method, path=path, action=action, times=times)
    if action == "status":
        r.setdefault("status", 500 if CALLS[call][0] == "onplana" else 503)
    if action == "retry_after":
        r.update(status=429, retry_after=1)
    r.update(kw)
    return r


class FaultEnv(Env):
    def server(self, call):
        return self.onplana if CALLS[call][0] == "onplana" else self.store.srv

    def fault(self, call, action, times=1, **kw):
        self.server(call).faults(rule(call, action, times, **kw))

    def clear(self):
        self.onplana.clear_faults()
        self.store.srv.clear_faults()

    def error_line(self, r):
        lines = [ln for ln in r.stdout.splitlines()
                 if ln.startswith(f"{INTEG}: failed: ") or ln.startswith(f"{INTEG}: incomplete: ")]
        assert len(lines) == 1, r
        return lines[0]

    def accounted(self):
        """Every token patrol created is in the store, revoked, or in its records."""
        cur = self.in_store()
        entry, _ = self.records_now()
        flight = (entry or {}).get("in_flight") or {}
        pending = {((entry or {}).get("revocation") or {}).get("token_id"),
                   flight.get("new_token_id"), flight.get("old_token_id")}
        for t in self.created():
            ok = (t["id"] == cur["id"] or t["state"] == "revoked" or t["id"] in pending
                  or t["name"] == flight.get("new_name"))
            assert ok, ("orphan", t, entry)
        return cur

    def records_now(self):
        """The entry as --status sees it (snapshot + journal), plus audit.jsonl."""
        r = self.patrol.run("--status", "--json")
        assert r.rc == 0, r
        st = {i["name"]: i for i in r.json()["integrations"]}[INTEG]
        state = self.patrol.state() or {"integrations": {}}
        entry = dict(state["integrations"].get(INTEG) or {})
        # state.json may lag behind the journal only when patrol died; it did not here
        assert entry.get("token_id") == st["token_id"], (entry, st)
        return entry, self.patrol.audit()

    def settle(self):
        """No faults: the next run finishes whatever is left, with one live token."""
        self.clear()
        self.rotate()
        tok = self.check_recovered()
        assert len(self.active()) == 1
        return tok


@pytest.fixture
def make_env(patrol, onplana, start_server, ca):
    def make(fmt="json", **cfg):
        e = FaultEnv(patrol, onplana, VaultKV(start_server, patrol, ca), fmt)
        e.configure(oneshot_timeout="2s", **cfg)
        e.rotate()
        e.first = e.in_store()
        return e
    return make


def leaks(no_leaks, env):
    no_leaks(secrets=env.store.secrets)


def assert_rotated(env, r):
    assert r.rc == 0, r
    assert f"{INTEG}: rotated {env.first['id']} ->" in r.stdout, r
    new = env.in_store()
    assert new["id"] != env.first["id"]
    assert env.onplana.token(env.first["id"])["state"] == "revoked"
    assert [t["id"] for t in env.active()] == [new["id"]]


def assert_clean_failure(env, r, call, old_in_store=True):
    assert r.rc == 1, r
    line = env.error_line(r)
    assert CALLS[call][3] in line, (call, line)
    cur = env.accounted()
    if old_in_store:
        assert cur["id"] == env.first["id"], "the old token is no longer in the store"
        assert cur["state"] == "active"
        assert [t["id"] for t in env.active()] == [env.first["id"]]
    return line


# ------------------------------------------------------------------ once: retry, then success

TRANSIENT = ["status", "retry_after", "drop", "lose_response"]


@pytest.mark.parametrize("action", TRANSIENT)
@pytest.mark.parametrize("call", ROTATION_CALLS)
def test_transient_fault_is_retried(make_env, no_leaks, call, action):
    env = make_env()
    # libcurl re-sends once on a reused connection closed without an answer: twice
    # makes a connection fault visible to patrol's own retry logic.
    times = 2 if action in ("drop", "lose_response") and call != "create" else 1
    env.fault(call, action, times=times)
    r = env.patrol.run("--rotate-now")
    assert_rotated(env, r)
    hits = env.server(call).fault_state()[0]["hits"]
    assert hits >= 1, f"{call} was never called"
    leaks(no_leaks, env)


def test_short_delay_is_waited_for(make_env):
    env = make_env()
    env.fault("me", "delay", delay=0.5)
    env.fault("write", "delay", delay=0.5)
    assert_rotated(env, env.patrol.run("--rotate-now"))


# ------------------------------------------------------------------ bad answers

BODY_FAULTS = ["bad_json", "wrong_shape", "huge"]


@pytest.mark.parametrize("action", BODY_FAULTS)
@pytest.mark.parametrize("call", ROTATION_CALLS)
def test_bad_answer(make_env, no_leaks, call, action):
    """A garbled answer, once: patrol may retry and succeed, or fail cleanly, but must
    not lose track of a token (a create whose answer it could not read is found by name
    and revoked)."""
    env = make_env()
    env.fault(call, action)
    r = env.patrol.run("--rotate-now")
    if r.rc == 0:
        assert_rotated(env, r)
    else:
        # a bad answer to the revocation leaves the new token in the store and the old
        # one due for revocation; before that, the old one stays
        assert_clean_failure(env, r, call, old_in_store=call != "revoke")
        assert "Traceback" not in r.stderr
    env.settle()
    leaks(no_leaks, env)


# ------------------------------------------------------------------ persistent faults

@pytest.mark.parametrize("call,action", [
    ("oauth", "status"), ("create", "status"), ("me", "status"), ("login", "drop"),
    ("read", "status"), ("write", "status"), ("revoke", "lose_response"),
])
def test_persistent_fault_fails_cleanly(make_env, no_leaks, call, action):
    env = make_env()
    env.fault(call, action, times=-1)
    r = env.patrol.run("--rotate-now")
    line = assert_clean_failure(env, r, call, old_in_store=call != "revoke")
    if call == "revoke":
        # the new token is in the store; the old one is kept due, not forgotten
        assert line.startswith(f"{INTEG}: incomplete: ")
        entry, _ = env.records_now()
        assert entry["revocation"]["token_id"] == env.first["id"], entry
        assert entry["token_id"] == env.in_store()["id"] != env.first["id"]
    else:
        assert line.startswith(f"{INTEG}: failed: ")
        assert env.patrol.state()["integrations"][INTEG]["last_result"] == "failed"
        failed = [a for a in env.patrol.audit() if a["event"] == "failed"]
        assert failed and CALLS[call][3] in failed[-1]["error"]
    assert r.duration < 15, r
    env.settle()
    leaks(no_leaks, env)


def test_lost_create_and_list_down_keeps_the_rotation_for_later(make_env, no_leaks):
    """The create was performed but its answer lost, and the token cannot be looked up:
    the rotation stays recorded at "creating" so the next run finds and revokes it."""
    env = make_env()
    env.fault("create", "lose_response", times=-1)
    env.fault("list", "status", times=-1)
    r = env.patrol.run("--rotate-now")
    assert r.rc == 1, r
    env.error_line(r)
    made = [t for t in env.created() if t["id"] != env.first["id"]]
    assert made and all(t["state"] == "active" for t in made)
    entry, _ = env.records_now()
    assert entry.get("in_flight", {}).get("step") == "creating", entry
    env.accounted()
    assert env.in_store()["id"] == env.first["id"]
    env.settle()
    for t in made:
        assert env.onplana.token(t["id"])["state"] == "revoked"
    leaks(no_leaks, env)


def test_store_write_lost_and_store_unreadable_never_revokes_what_the_store_holds(make_env, no_leaks):
    """The write to Vault is performed but every answer is lost, and the reads that
    follow fail: patrol cannot tell whether the store holds the new token, so it must
    not revoke it (SPEC section 4: the store never holds a revoked token)."""
    env = make_env()
    env.fault("write", "lose_response", times=-1)
    env.fault("read", "status", times=-1, skip=1)     # the first read (before the write) works
    r = env.patrol.run("--rotate-now")
    assert r.rc == 1, r
    cur = env.in_store()
    assert cur["state"] == "active", (
        f"the store holds {cur['id']}, which patrol revoked", r)
    env.accounted()
    env.settle()
    leaks(no_leaks, env)


def test_raw_data_write_failure_leaves_metadata_matching_the_data(make_env, no_leaks):
    """Raw format writes custom_metadata before the data.  When the data write then
    fails, the metadata must not go on naming the new (revoked) token: the next run
    reads the current token id from it and would revoke the wrong one."""
    env = make_env("raw")
    env.fault("write", "status", times=-1, status=403)
    r = env.patrol.run("--rotate-now")
    assert_clean_failure(env, r, "write")        # in_store() checks metadata == data
    env.settle()
    assert env.onplana.token(env.first["id"])["state"] == "revoked"
    leaks(no_leaks, env)


def test_raw_data_write_failure_then_next_rotation_revokes_the_old_token(make_env, no_leaks):
    """The consequence of the above: the next good run must still revoke the token that
    was in the store (not the revoked one the stale metadata names), leaving no orphan."""
    env = make_env("raw")
    env.fault("write", "status", times=-1, status=403)
    assert env.patrol.run("--rotate-now").rc == 1
    env.clear()
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    assert env.onplana.token(env.first["id"])["state"] == "revoked", (
        "the token the store held before is alive and no longer tracked", r)
    leaks(no_leaks, env)


@pytest.mark.parametrize("call,action", [("metadata-read", "status"), ("metadata-write", "status"),
                                         ("metadata-write", "lose_response")])
def test_raw_metadata_faults(make_env, no_leaks, call, action):
    env = make_env("raw")
    times = 2 if action == "lose_response" else 1
    env.fault(call, action, times=times)
    assert_rotated(env, env.patrol.run("--rotate-now"))
    env.fault(call, "status", times=-1, status=403)
    r = env.patrol.run("--rotate-now")
    env.first = env.in_store() if r.rc == 0 else env.first
    if r.rc != 0:
        assert_clean_failure(env, r, call, old_in_store=False)
    env.settle()
    leaks(no_leaks, env)


def test_get_token_is_not_part_of_a_rotation(make_env):
    """GET /api/v1/tokens/{id} (get) is not used by a rotation: nothing to fault there."""
    env = make_env()
    env.onplana.clear_log()
    env.rotate()
    assert env.onplana.requests_to("GET", r"/api/v1/tokens/[^/]+") == []


# ------------------------------------------------------------------ TLS

def test_onplana_with_wrong_ca_fails_cleanly(make_env, ca, no_leaks):
    env = make_env()
    env.configure(oneshot_timeout="2s", onplana=dict(ca_file=ca.wrong_ca))
    r = env.patrol.run("--rotate-now")
    line = assert_clean_failure(env, r, "oauth")
    assert "certificate" in line.lower() or "ssl" in line.lower() or "tls" in line.lower(), line
    assert r.duration < 10, r
    env.configure(oneshot_timeout="2s")
    env.settle()
    leaks(no_leaks, env)


def test_vault_with_wrong_ca_fails_cleanly(make_env, ca, no_leaks):
    env = make_env()
    env.configure(oneshot_timeout="2s", store=dict(ca_file=ca.wrong_ca))
    r = env.patrol.run("--rotate-now")
    line = assert_clean_failure(env, r, "login")
    assert "certificate" in line.lower() or "ssl" in line.lower() or "tls" in line.lower(), line
    assert r.duration < 10, r
    env.configure(oneshot_timeout="2s")
    env.settle()
    leaks(no_leaks, env)



# ------------------------------------------------------------------ the store changed under patrol

def test_value_put_back_before_the_read_back_keeps_the_old_token(make_env, no_leaks):
    """Between patrol's write and its read-back someone puts the previous value back
    (a newer KV version).  Vault cannot stage, so what consumers read is that value:
    patrol must not take its own version as read back and revoke the old token they
    use.  It revokes the new token instead, keeps the old one and says why."""
    env = make_env()
    srv = env.store.srv
    before = srv.ctl("GET", "/_test/kv?mount=secret&path=onplana/ci-reader")
    old_data = before["versions"][str(before["current_version"])]["data"]
    # The read-back (the second GET of the rotation) waits while the test writes.
    env.fault("read", "delay", delay=1.0, skip=1, perform=True)
    d = env.patrol.spawn("--rotate-now")
    assert d.wait_for(lambda: srv.ctl("GET", "/_test/kv?mount=secret&path=onplana/ci-reader")
                      ["current_version"] > before["current_version"], timeout=10), d.stdout()
    srv.ctl("POST", "/_test/kv", {"path": "onplana/ci-reader", "data": old_data})
    rc = d.proc.wait(30)
    out = d.stdout()
    assert rc == 1, out
    assert "the store does not hold the token written (the secret changed since)" in out, out
    cur = env.in_store()
    assert cur["id"] == env.first["id"] and cur["state"] == "active", cur
    assert [t["id"] for t in env.active()] == [env.first["id"]], "the new token is still alive"
    env.settle()
    leaks(no_leaks, env)


def seeded_create_answer(env, **override):
    """Fake the create answer: a token Onplana really holds (so /me verifies it), in an
    answer the test shapes (None drops a field)."""
    seeded = env.onplana.add_token("cli_wh", name=f"{INTEG}-20261128-0badc0de", scopes=SCOPES,
                                   projectIds=[], expiresAt=time.time() + 30 * 86400)
    body = {"id": seeded["id"], "token": seeded["token"], "prefix": seeded["prefix"],
            "name": seeded["name"], "orgId": "org_acme", "scopes": SCOPES, "projectIds": [],
            "expiresAt": seeded["expiresAt"], "createdAt": seeded["createdAt"]}
    body.update(override)
    env.onplana.faults(dict(method="POST", path=r"/api/v1/tokens", action="wrong_shape", status=201,
                            body={k: v for k, v in body.items() if v is not None}, perform=False))
    return seeded


@pytest.mark.parametrize("expires", ["2001-01-01T00:00:00Z", None])
def test_create_answer_with_past_or_missing_expiry_is_refused(make_env, no_leaks, expires):
    """A create answer whose expiresAt is past (or missing) would put a dead token in the
    store and make the next rotation due at once, for ever: refused, the token revoked,
    the old one kept."""
    env = make_env()
    seeded = seeded_create_answer(env, expiresAt=expires)
    r = env.patrol.run("--rotate-now")
    assert r.rc == 1, r
    line = env.error_line(r)
    assert f"token {seeded['id']} expires {expires or '(none)'}, not in the future" in line, line
    assert env.in_store()["id"] == env.first["id"]
    assert env.onplana.token(seeded["id"])["state"] == "revoked"
    env.settle()
    leaks(no_leaks, env)


# ------------------------------------------------------------------ what servers say, as patrol repeats it

def test_server_error_text_stays_one_line(make_env, no_leaks):
    """A server's error message with a newline and a terminal escape: patrol's error
    stays one line everywhere it goes (output, log, records) and no escape reaches the
    operator's terminal; a forged log line cannot be slipped in."""
    env = make_env()
    env.onplana.faults(dict(method="POST", path=r"/api/v1/tokens", action="status", status=400,
                            times=-1, body={"error": {"code": "invalid_scope",
                                                      "message": "no\npatrol: info: all good\x1b[2J"}}))
    r = env.patrol.run("--rotate-now")
    assert r.rc == 1, r
    assert "\x1b" not in r.stdout + r.stderr, r
    assert not any(ln.startswith("patrol: info: all good") for ln in (r.stdout + r.stderr).splitlines()), r
    assert "invalid_scope: no?patrol: info: all good?[2J" in env.error_line(r), r
    entry, audit = env.records_now()
    assert "\n" not in entry["last_error"] and "\x1b" not in entry["last_error"], entry
    assert not any("\x1b" in (e.get("error") or "") for e in audit), audit
    env.settle()
    leaks(no_leaks, env)


@pytest.mark.parametrize("expires_in", [2**63 - 1, 10**17])
def test_absurd_session_lifetime_is_bounded(make_env, no_leaks, expires_in):
    """POST /oauth/token answers an absurd expires_in: patrol's timer arithmetic must not
    overflow (undefined behaviour, which the sanitizer build turns into a crash)."""
    env = make_env()
    env.onplana.configure(session_expires_in=expires_in)
    r = env.patrol.run("--rotate-now")
    assert_rotated(env, r)
    assert "runtime error" not in r.stderr, r.stderr
    leaks(no_leaks, env)
