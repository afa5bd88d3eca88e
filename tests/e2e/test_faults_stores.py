"""End-to-end fault matrix (issue #7) for every remote call of the AWS and Azure stores.

AWS Secrets Manager: GetSecretValue, DescribeSecret, CreateSecret, PutSecretValue,
TagResource (raw format), UpdateSecretVersionStage; its credential sources: STS
AssumeRole (auth assume_role) and the IMDS credentials call (the role's source).
Azure Key Vault: the Entra token endpoint (client_secret), GET secret (the current
value, and the read-back after the write), PUT secret, and IMDS (managed identity).

Each call gets every fault of tests/servers/common.py that a client can meet: 5xx, 429
with Retry-After, a dropped connection, a performed call whose answer is lost, a
truncated JSON answer, a JSON answer of the wrong shape, a huge answer; and each store
(per credential source) is tried with the wrong CA.  The outcome must be what a user
expects: retried then success (exactly one new active token, in the store, the old one
revoked), or a clean failure (exit 1, one line naming the store and the call, the old
token still in the store and active) -- and no orphan: every token patrol created is
in the store, revoked, or named in its records as in flight; a run without faults then
settles everything.

Every Secrets Manager / STS call is POST /: 5xx and 429 use aws.py's per-action faults
(/_test/aws/faults); the other faults are path rules on POST / that skip to the call's
place in the rotation, and the request log (whose note names the action) proves they hit
the intended call.

Kept fast: oneshot_timeout 3s (1s for persistent faults), retry_min 1s, Retry-After 1."""
import pytest

from test_crash import INTEG, AwsSM, AzureKV
from test_faults import FaultEnv

ROLE_ARN = "arn:aws:iam::123456789012:role/patrol-writer"
SM_SECRET = "onplana/ci-reader"
AZ_SECRET = INTEG
ONESHOT = "3s"


# ------------------------------------------------------------------ stores

class AwsRole(AwsSM):
    """AWS with auth assume_role; the source credentials come from IMDS (an instance
    role that may call nothing in Secrets Manager itself)."""

    def __init__(self, start_server, patrol, ca):
        super().__init__(start_server, patrol, ca)
        self.srv.set_imds(role_name="patrol-instance", actions=["GetCallerIdentity"])
        self.srv.add_role(arn=ROLE_ARN, trusted=["*"])
        self.config = dict(self.config, auth=dict(method="assume_role", role_arn=ROLE_ARN))


class AzureMI(AzureKV):
    """Azure with a user-assigned managed identity through IMDS (plain http)."""

    def __init__(self, start_server, patrol, ca):
        super().__init__(start_server, patrol, ca)
        self.srv.add_identity("ua-patrol")
        self.config = dict(self.config, imds_endpoint=self.srv.plain_url,
                           auth=dict(method="managed_identity", client_id="ua-patrol"))


STORES = {"aws": AwsSM, "aws-role": AwsRole, "azure": AzureKV, "azure-mi": AzureMI}

# ------------------------------------------------------------------ the calls
#
# store: which store setup; fmt: the integration's format; first: the call only happens
# when the secret does not exist yet (the first rotation); says: what patrol's error line
# must name (store and call).
# AWS SM/STS calls: action, and idx = how many POST / come before it in the rotation.
# Other calls: method + path regex (path rules for every fault).
SM_READ, SM_WRITE, SM_PROMOTE = (f"aws: {op} {SM_SECRET}" for op in ("read", "write", "promote"))
CALLS = {
    "GetSecretValue": dict(store="aws", action="GetSecretValue", idx=0, says=SM_READ),
    "DescribeSecret": dict(store="aws", action="DescribeSecret", idx=3, says=SM_PROMOTE),
    "CreateSecret": dict(store="aws", action="CreateSecret", idx=2, first=True, says=SM_WRITE),
    "PutSecretValue": dict(store="aws", action="PutSecretValue", idx=1, says=SM_WRITE),
    "TagResource": dict(store="aws", action="TagResource", idx=8, fmt="raw", says=SM_PROMOTE),
    "UpdateSecretVersionStage": dict(store="aws", action="UpdateSecretVersionStage", idx=4,
                                     says=SM_PROMOTE),
    "AssumeRole": dict(store="aws-role", action="AssumeRole", idx=0, sts=True,
                       says="aws: read onplana/ci-reader: credentials: assume role"),
    "aws-IMDS": dict(store="aws-role", method="GET",
                     path=r"/latest/meta-data/iam/security-credentials/[^/]+",
                     says="aws: read onplana/ci-reader: credentials:"),
    "azure-token": dict(store="azure", method="POST", path=r"/[^/]+/oauth2/v2\.0/token",
                        says=f"azure: read {AZ_SECRET}: token (client_secret)"),
    "azure-GET": dict(store="azure", method="GET", path=rf"/secrets/{AZ_SECRET}",
                      says=f"azure: read {AZ_SECRET}"),
    # The read-back is the third GET of the secret (after the read and the write's
    # re-read): what consumers read, not the version written (store.h).
    "azure-GET-readback": dict(store="azure", method="GET", path=rf"/secrets/{AZ_SECRET}", skip=2,
                               says=f"azure: read-back {AZ_SECRET}"),
    "azure-PUT": dict(store="azure", method="PUT", path=rf"/secrets/{AZ_SECRET}",
                      says=f"azure: write {AZ_SECRET}"),
    "azure-IMDS": dict(store="azure-mi", method="GET", path=r"/metadata/identity/oauth2/token",
                       says=f"azure: read {AZ_SECRET}: token (managed_identity (IMDS))"),
}


class StoreFaultEnv(FaultEnv):
    """FaultEnv (test_faults.py) for a store whose faults are set per call above."""

    def fault(self, call, action, times=1, **kw):
        spec = CALLS[call]
        srv = self.store.srv
        if "action" in spec and action in ("status", "retry_after"):
            rule = dict(action=spec["action"], times=times)
            if action == "status":
                rule.update(status=503)
            else:
                rule.update(status=429, retry_after=1,
                            type="Throttling" if spec.get("sts") else "ThrottlingException")
            rule.update(kw)
            srv.action_faults(rule)
            return
        if "action" in spec:
            rule = dict(method="POST", path="/", skip=spec["idx"])
        else:
            rule = dict(method=spec["method"], path=spec["path"], skip=spec.get("skip", 0))
        rule.update(action=action, times=times)
        if action == "status":
            rule.setdefault("status", 503)
        if action == "retry_after":
            rule.update(status=429, retry_after=1)
        rule.update(kw)
        srv.faults(rule)

    def hits(self, call):
        """How often the fault hit; for POST / rules, also that it hit the intended action."""
        spec = CALLS[call]
        srv = self.store.srv
        per_action = srv.ctl("GET", "/_test/aws/faults")["faults"] if "action" in spec else []
        if per_action:
            return sum(f["hits"] for f in per_action)
        n = sum(f["hits"] for f in srv.fault_state())
        if "action" in spec:
            log = [e for e in srv.log() if e["method"] == "POST" and e["path"] == "/"]
            for i, e in enumerate(log):
                if e["fault"]:
                    # a dropped request never reached the handler: the retry names it
                    note = next((x["auth"] for x in log[i:] if x["auth"]), "?:")
                    assert note.split(":")[0] == spec["action"], (call, log)
        return n

    def clear(self):
        super().clear()
        if self.store.kind == "aws":
            self.store.srv.ctl("DELETE", "/_test/aws/faults")

    def in_store_or_none(self):
        cur = self.store.current(self.secret, self.fmt)
        if cur is None:
            return None
        value, recorded_id, _ = cur
        held = [t["id"] for t in self.onplana.tokens(account="cli_wh") if t["token"] == value]
        # None: raw-format metadata that says it describes another version
        assert recorded_id is None or recorded_id in held, (
            f"the store hands out {held} but its metadata names {recorded_id}")
        return self.in_store()

    def accounted(self):
        """Every token patrol created is in the store, revoked, or in its records."""
        cur = self.in_store_or_none()
        entry, _ = self.records_now()
        flight = (entry or {}).get("in_flight") or {}
        pending = {((entry or {}).get("revocation") or {}).get("token_id"),
                   flight.get("new_token_id"), flight.get("old_token_id")}
        for t in self.created():
            ok = ((cur and t["id"] == cur["id"]) or t["state"] == "revoked" or t["id"] in pending
                  or t["name"] == flight.get("new_name"))
            assert ok, ("orphan", t, entry)
        if cur:
            assert cur["state"] == "active", ("the store holds a revoked token", cur)
        return cur, flight


@pytest.fixture
def make_env(patrol, onplana, start_server, ca):
    def make(store, fmt="json", first=False, oneshot_timeout=ONESHOT):
        e = StoreFaultEnv(patrol, onplana, STORES[store](start_server, patrol, ca), fmt)
        e.configure(oneshot_timeout=oneshot_timeout)
        e.first = None
        if not first:
            e.rotate()
            e.first = e.in_store()
        e.store.srv.clear_log()
        return e
    return make


def env_for(make_env, call, **kw):
    spec = CALLS[call]
    return make_env(spec["store"], spec.get("fmt", "json"), spec.get("first", False), **kw)


def leaks(no_leaks, env):
    no_leaks(secrets=env.store.secrets)


def assert_rotated(env, r):
    assert r.rc == 0, r
    env.accounted()
    old = env.first["id"] if env.first else "(none)"
    assert f"{INTEG}: rotated {old} ->" in r.stdout, r
    new = env.in_store()
    assert new["state"] == "active"
    if env.first:
        assert new["id"] != env.first["id"]
        assert env.onplana.token(env.first["id"])["state"] == "revoked"
    assert [t["id"] for t in env.active()] == [new["id"]], "exactly one active token"


def assert_clean_failure(env, r, call):
    assert r.rc == 1, r
    line = env.error_line(r)
    assert CALLS[call]["says"] in line, (call, line)
    assert "Traceback" not in r.stderr
    cur, flight = env.accounted()
    # at most one more live token than before: the one in flight
    extra = [t for t in env.active() if not env.first or t["id"] != env.first["id"]]
    assert len(extra) <= 1 and all(t["id"] == flight.get("new_token_id")
                                   or t["name"] == flight.get("new_name")
                                   or (cur and t["id"] == cur["id"]) for t in extra), (extra, flight)
    if env.first and line.startswith(f"{INTEG}: failed: "):
        assert cur and cur["id"] == env.first["id"], "the old token is no longer in the store"
        assert env.onplana.token(env.first["id"])["state"] == "active"
    return line


def settle(env):
    """No faults: the next run finishes whatever is left, one live token, the old one revoked."""
    tok = env.settle()
    if env.first:
        assert env.onplana.token(env.first["id"])["state"] == "revoked"
    return tok


# ------------------------------------------------------------------ the matrix

ALL_CALLS = list(CALLS)
TRANSIENT = ["status", "retry_after", "drop", "lose_response"]
BODY_FAULTS = ["bad_json", "wrong_shape", "huge"]


@pytest.mark.parametrize("action", TRANSIENT)
@pytest.mark.parametrize("call", ALL_CALLS)
def test_transient_fault_is_retried(make_env, no_leaks, call, action):
    env = env_for(make_env, call)
    # libcurl re-sends once on a reused connection closed without an answer: twice
    # makes a connection fault visible to patrol's own retry logic.
    env.fault(call, action, times=2 if action in ("drop", "lose_response") else 1)
    r = env.patrol.run("--rotate-now")
    assert env.hits(call) >= 1, f"{call} was never called"
    assert_rotated(env, r)
    if action == "retry_after":
        assert r.duration >= 0.9, ("Retry-After: 1 not waited for", r)
    leaks(no_leaks, env)


@pytest.mark.parametrize("action", BODY_FAULTS)
@pytest.mark.parametrize("call", ALL_CALLS)
def test_bad_answer(make_env, no_leaks, call, action):
    """A garbled answer, once: patrol may retry and succeed, or fail cleanly; never lose
    track of a token; the next run without faults settles everything."""
    env = env_for(make_env, call)
    env.fault(call, action)
    r = env.patrol.run("--rotate-now")
    assert env.hits(call) >= 1, f"{call} was never called"
    if r.rc == 0:
        assert_rotated(env, r)
    else:
        assert_clean_failure(env, r, call)
    settle(env)
    leaks(no_leaks, env)


@pytest.mark.parametrize("call", ALL_CALLS)
def test_persistent_5xx_fails_cleanly(make_env, no_leaks, call):
    """A call that keeps answering 503: a clean failure within oneshot_timeout, naming
    the store and the call, the old token still served; the next run settles."""
    env = env_for(make_env, call, oneshot_timeout="1s")
    env.fault(call, "status", times=-1)
    r = env.patrol.run("--rotate-now")
    assert env.hits(call) >= 1
    line = assert_clean_failure(env, r, call)
    assert "503" in line, line
    assert r.duration < 8, r
    failed = [a for a in env.patrol.audit() if a["event"] == "failed"]
    assert failed and CALLS[call]["says"] in failed[-1]["error"], failed[-1:]
    settle(env)
    leaks(no_leaks, env)


# ------------------------------------------------------------------ TLS

TLS_FIRST_CALL = {"aws": "GetSecretValue", "aws-role": "AssumeRole", "azure": "azure-token",
                  "azure-mi": "azure-GET"}     # IMDS is plain http: its first TLS call is Key Vault's


@pytest.mark.parametrize("store", list(TLS_FIRST_CALL))
def test_store_with_wrong_ca_fails_cleanly(make_env, ca, no_leaks, store):
    env = make_env(store)
    env.configure(oneshot_timeout=ONESHOT, store=dict(ca_file=ca.wrong_ca))
    r = env.patrol.run("--rotate-now")
    line = assert_clean_failure(env, r, TLS_FIRST_CALL[store])
    assert any(w in line.lower() for w in ("certificate", "ssl", "tls")), line
    assert r.duration < 5, ("a refused certificate is not worth retrying", r)
    assert env.in_store()["id"] == env.first["id"]
    env.configure(oneshot_timeout=ONESHOT)
    settle(env)
    leaks(no_leaks, env)
