"""End-to-end: patrol --rotate-now into the fake AWS Secrets Manager, with every
credential source, checked against the fake Onplana and read back by a consumer
with boto3."""
import json

import pytest

from test_aws_server import AwsServer, REGION

SCOPES = ["projects.read", "tasks.read"]
ROLE_ARN = "arn:aws:iam::123456789012:role/patrol-writer"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"


class Setup:
    """One account, one AWS store (static keys unless a test says otherwise)."""

    def __init__(self, patrol, onplana, aws, ca):
        self.patrol, self.onplana, self.aws, self.ca = patrol, onplana, aws, ca
        self.acct = onplana.add_account(client_id="cli_wh", org="org_acme",
                                        scopes_held=SCOPES + ["reports.read"])
        self.user = aws.add_user(access_key_id="AKIAPATROLE2E0000001", secret_access_key=SECRET_KEY,
                                 name="patrol")
        plain = aws.plain_url
        self.base = dict(name="aws", type="aws", region=REGION, endpoint=aws.url, sts_endpoint=aws.url,
                         imds_endpoint=plain, container_endpoint=plain, ca_file=ca.ca_pem)
        self.store = dict(self.base, auth=dict(method="static", access_key_id=self.user["access_key_id"],
                                               secret_access_key_file="aws-secret-key"))
        patrol.write_file("aws-secret-key", SECRET_KEY)
        self.extra_secrets = [SECRET_KEY]

    def integration(self, name="ci-reader", **kw):
        d = dict(name=name, account="svc", scopes=SCOPES, store="aws", secret=f"onplana/{name}")
        d.update(kw)
        return d

    def configure(self, integrations=None, store=None, **top):
        cfg = dict(policy=dict(ttl="30d", renew_before="7d", retry_min="1s", retry_max="2s"),
                   oneshot_timeout="20s",
                   onplana=self.patrol.onplana_config(self.onplana),
                   accounts=[self.patrol.account("svc", self.acct)],
                   stores=[store or self.store], integrations=integrations or [self.integration()])
        cfg.update(top)
        self.patrol.write_config(cfg)

    def with_auth(self, **auth):
        return dict(self.base, auth=auth)

    def consumer_value(self, name="onplana/ci-reader", **kw):
        """What a consumer with boto3 reads (AWSCURRENT unless told otherwise)."""
        sm = self.aws.client("secretsmanager", self.user)
        return sm.get_secret_value(SecretId=name, **kw)

    def active_tokens(self, name="ci-reader"):
        return [t for t in self.onplana.tokens(account="cli_wh")
                if t["state"] == "active" and t["name"].startswith(name + "-")]


@pytest.fixture
def aws(start_server):
    return start_server("aws", cls=AwsServer)


@pytest.fixture
def env(patrol, onplana, aws, ca):
    return Setup(patrol, onplana, aws, ca)


def rotate(env, *names, ok=True, run_env=None):
    r = env.patrol.run("--rotate-now", *names, env=run_env)
    if ok:
        assert r.rc == 0, r
    return r


def stages(env, name="onplana/ci-reader"):
    return {v["id"]: sorted(v["stages"]) for v in env.aws.secret(name)["versions"] if v["stages"]}


# ------------------------------------------------------------------ the store

def test_first_rotation_creates_the_secret_staged_then_promoted(env, aws, no_leaks):
    env.configure()
    r = rotate(env)
    assert "ci-reader: rotated" in r.stdout
    tok, = env.active_tokens()
    got = env.consumer_value()
    value = json.loads(got["SecretString"])
    assert value["token"] == tok["token"] and value["token_id"] == tok["id"]
    assert value["managed_by"] == "patrol" and value["expires_at"] == tok["expiresAt"]
    assert sorted(value["scopes"]) == sorted(SCOPES)
    # one version, current, nothing left pending; created with the marker tag
    assert stages(env) == {got["VersionId"]: ["AWSCURRENT"]}
    assert aws.secret("onplana/ci-reader")["tags"] == {"managed_by": "patrol"}
    # the version id is the rotation's request id, and the audit records it
    audit = env.patrol.audit()
    assert [a["event"] for a in audit] == ["rotated"] and audit[0]["version"] == got["VersionId"]
    assert len(got["VersionId"]) == 32
    seq = [c["action"] for c in aws.calls()]
    assert seq.index("CreateSecret") < seq.index("PutSecretValue") < seq.index("UpdateSecretVersionStage")
    assert seq.count("PutSecretValue") == 1
    assert all(c["kind"] == "user" for c in aws.calls())
    no_leaks(secrets=env.extra_secrets)


def test_second_rotation_moves_current_and_revokes_the_old_token(env, aws, no_leaks):
    env.configure()
    rotate(env)
    first, = env.active_tokens()
    v1 = env.consumer_value()["VersionId"]
    aws.clear_log()
    r = rotate(env)
    assert f"rotated {first['id']} ->" in r.stdout
    assert env.onplana.token(first["id"])["state"] == "revoked"
    new, = env.active_tokens()
    got = env.consumer_value()
    assert json.loads(got["SecretString"])["token"] == new["token"]
    assert stages(env) == {v1: ["AWSPREVIOUS"], got["VersionId"]: ["AWSCURRENT"]}
    prev = env.consumer_value(VersionStage="AWSPREVIOUS")
    assert json.loads(prev["SecretString"])["token_id"] == first["id"]
    st = env.patrol.state()["integrations"]["ci-reader"]
    assert st["token_id"] == new["id"] and st["last_result"] == "rotated"
    no_leaks(secrets=env.extra_secrets)


def test_raw_format_keeps_metadata_in_tags(env, aws, no_leaks):
    env.configure([env.integration(format="raw")])
    rotate(env)
    tok, = env.active_tokens()
    got = env.consumer_value()
    assert got["SecretString"] == tok["token"]
    tags = aws.secret("onplana/ci-reader")["tags"]
    assert tags["managed_by"] == "patrol" and tags["token_id"] == tok["id"]
    assert tags["expires_at"] == tok["expiresAt"] and tags["scopes"] == ",".join(SCOPES)
    assert tags["version_id"] == got["VersionId"] and tags["rotated_at"].endswith("Z")
    rotate(env)      # the tags mark it as patrol's: rotated again, the old token revoked
    assert env.onplana.token(tok["id"])["state"] == "revoked"
    new, = env.active_tokens()
    assert env.consumer_value()["SecretString"] == new["token"]
    assert aws.secret("onplana/ci-reader")["tags"]["token_id"] == new["id"]
    no_leaks(secrets=env.extra_secrets)


def test_kms_key_is_passed_on_create(env, aws):
    env.configure(store=dict(env.store, kms_key_id="alias/onplana"))
    rotate(env)
    assert aws.secret("onplana/ci-reader")["kms_key_id"] == "alias/onplana"


def test_unmanaged_secret_is_refused_without_adopt(env, aws, no_leaks):
    hand = env.onplana.add_token("cli_wh", name="hand-made", scopes=SCOPES)
    aws.seed_secret("onplana/ci-reader", value=hand["token"])
    env.configure()
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    assert "not managed by patrol" in r.stdout + r.stderr
    assert len(aws.secret("onplana/ci-reader")["versions"]) == 1
    assert env.active_tokens() == []
    assert env.onplana.token(hand["id"])["state"] == "active"
    no_leaks(secrets=env.extra_secrets)


def test_adopt_takes_over_and_revokes_the_hand_made_token(env, aws, no_leaks):
    hand = env.onplana.add_token("cli_wh", name="hand-made", scopes=SCOPES)
    aws.seed_secret("onplana/ci-reader", value=json.dumps({"token": hand["token"], "note": "by hand"}))
    env.configure([env.integration(adopt=True)])
    r = rotate(env)
    assert f"rotated {hand['id']} ->" in r.stdout
    assert env.onplana.token(hand["id"])["state"] == "revoked"
    assert [a["event"] for a in env.patrol.audit()] == ["adopted", "rotated"]
    new, = env.active_tokens()
    assert json.loads(env.consumer_value()["SecretString"])["token"] == new["token"]
    no_leaks(secrets=env.extra_secrets)


def test_secret_without_a_current_value_is_written(env, aws):
    aws.seed_secret("onplana/ci-reader", tags={"managed_by": "patrol"})    # created, never written
    env.configure()
    rotate(env)
    new, = env.active_tokens()
    assert json.loads(env.consumer_value()["SecretString"])["token"] == new["token"]
    assert aws.calls("CreateSecret") == []


def test_transient_faults_still_give_exactly_one_new_token(env, aws, no_leaks):
    env.configure()
    rotate(env)
    old, = env.active_tokens()
    aws.faults({"method": "POST", "path": "/", "action": "retry_after", "retry_after": 1, "times": 1})
    aws.action_faults({"action": "PutSecretValue", "status": 503, "times": 1},
                      # performed, then answered 500: the retry must find the same version
                      {"action": "PutSecretValue", "status": 500, "type": "InternalServiceError",
                       "perform": True, "times": 1},
                      {"action": "UpdateSecretVersionStage", "status": 400, "type": "ThrottlingException",
                       "times": 1})
    rotate(env)
    new, = env.active_tokens()
    assert new["id"] != old["id"]
    assert json.loads(env.consumer_value()["SecretString"])["token"] == new["token"]
    puts = aws.calls("PutSecretValue")
    assert [c["status"] for c in puts[-3:]] == [503, 500, 200]
    assert len(aws.secret("onplana/ci-reader")["versions"]) == 2
    assert all(not v["stages"] or "AWSPENDING" not in v["stages"]
               for v in aws.secret("onplana/ci-reader")["versions"])
    no_leaks(secrets=env.extra_secrets)


def test_store_refusing_writes_keeps_old_token_and_revokes_new(env, aws, no_leaks):
    env.configure()
    rotate(env)
    old, = env.active_tokens()
    aws.action_faults({"action": "PutSecretValue", "status": 400, "type": "AccessDeniedException",
                       "message": "User is not authorized to perform: secretsmanager:PutSecretValue",
                       "times": -1})
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    out = r.stdout + r.stderr
    assert "aws: write onplana/ci-reader: 400 AccessDeniedException: User is not authorized" in out, r
    assert env.onplana.token(old["id"])["state"] == "active"
    assert env.active_tokens() == [env.onplana.token(old["id"])]
    assert json.loads(env.consumer_value()["SecretString"])["token"] == old["token"]
    failed = [a for a in env.patrol.audit() if a["event"] == "failed"]
    assert failed and "AccessDeniedException" in failed[-1]["error"]
    no_leaks(secrets=env.extra_secrets)


def test_wrong_secret_key_fails_cleanly_and_keeps_the_old_token(env, aws, no_leaks):
    env.configure()
    rotate(env)
    old, = env.active_tokens()
    before = aws.secret("onplana/ci-reader")
    env.patrol.write_file("aws-secret-key", "not" + SECRET_KEY)
    env.configure(oneshot_timeout="3s")
    r = rotate(env, ok=False)
    assert r.rc == 1, r
    assert "aws: read onplana/ci-reader: 400 InvalidSignatureException" in r.stdout + r.stderr, r
    assert env.active_tokens() == [env.onplana.token(old["id"])]
    assert aws.secret("onplana/ci-reader") == before
    no_leaks(secrets=env.extra_secrets + ["not" + SECRET_KEY])


# ------------------------------------------------------------------ credential sources

def rotate_with(env, store, run_env, kind):
    """Rotate with `store`'s auth and patrol's environment `run_env`; every Secrets
    Manager call must have been signed with credentials of `kind`. Returns patrol's calls."""
    env.configure(store=store)
    rotate(env, run_env=run_env)
    calls = env.aws.calls()
    new, = env.active_tokens()
    assert json.loads(env.consumer_value()["SecretString"])["token"] == new["token"]
    kinds = {c["kind"] for c in calls if not c["action"].startswith("AssumeRole")}
    assert kinds == {kind}, calls
    return calls


def test_default_chain_environment(env, no_leaks):
    other = env.aws.add_user(name="from-env")
    calls = rotate_with(env, env.with_auth(method="default"),
                        {"AWS_ACCESS_KEY_ID": other["access_key_id"],
                         "AWS_SECRET_ACCESS_KEY": other["secret_access_key"]}, "user")
    assert {c["access_key_id"] for c in calls} == {other["access_key_id"]}
    no_leaks(secrets=env.extra_secrets)


def test_default_chain_environment_session_token(env, no_leaks):
    temp = env.aws.add_user(name="temp", session_token="FwoGZXIvYXdzEXAMPLEsessiontoken0123456789")
    rotate_with(env, env.with_auth(method="default"),
                {"AWS_ACCESS_KEY_ID": temp["access_key_id"], "AWS_SECRET_ACCESS_KEY": temp["secret_access_key"],
                 "AWS_SESSION_TOKEN": temp["session_token"]}, "user")
    no_leaks(secrets=env.extra_secrets)


def test_default_chain_shared_files_and_profile(env, no_leaks):
    ci = env.aws.add_user(name="ci-profile")
    aws_dir = env.patrol.home / ".aws"
    aws_dir.mkdir(exist_ok=True)
    (aws_dir / "credentials").write_text(
        "# comment\n[default]\naws_access_key_id = AKIAWRONGDEFAULT0000\naws_secret_access_key = nope\n\n"
        f"[ci]\naws_access_key_id = {ci['access_key_id']}\naws_secret_access_key = {ci['secret_access_key']}\n")
    calls = rotate_with(env, env.with_auth(method="default", profile="ci"), {}, "user")
    assert {c["access_key_id"] for c in calls} == {ci["access_key_id"]}
    no_leaks(secrets=env.extra_secrets)


def test_default_chain_config_file_and_aws_profile(env, no_leaks):
    cfg_user = env.aws.add_user(name="cfg-profile")
    path = env.patrol.write_file("aws-config", f"[profile deploy]\nregion = {REGION}\n"
                                 f"aws_access_key_id={cfg_user['access_key_id']}\n"
                                 f"aws_secret_access_key={cfg_user['secret_access_key']}\n")
    calls = rotate_with(env, env.with_auth(method="default"),
                        {"AWS_PROFILE": "deploy", "AWS_CONFIG_FILE": str(path),
                         "AWS_SHARED_CREDENTIALS_FILE": str(env.patrol.dir / "absent")}, "user")
    assert {c["access_key_id"] for c in calls} == {cfg_user["access_key_id"]}
    no_leaks(secrets=env.extra_secrets)


def test_missing_profile_is_a_clean_failure(env, no_leaks):
    env.configure(store=env.with_auth(method="default", profile="nosuch"), oneshot_timeout="3s")
    r = rotate(env, ok=False)
    assert r.rc == 1 and 'profile "nosuch" not found' in r.stdout + r.stderr, r
    assert env.active_tokens() == []


def test_default_chain_web_identity(env, no_leaks):
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln"
    env.aws.add_role(arn=ROLE_ARN, web_identity_tokens=[jwt])
    path = env.patrol.write_file("web-identity-token", jwt)
    calls = rotate_with(env, env.with_auth(method="default"),
                        {"AWS_WEB_IDENTITY_TOKEN_FILE": str(path), "AWS_ROLE_ARN": ROLE_ARN}, "web-identity")
    assert [c["kind"] for c in calls if c["action"] == "AssumeRoleWithWebIdentity"] == ["none"]
    no_leaks(secrets=env.extra_secrets + [jwt])


def test_default_chain_ecs_container(env, no_leaks):
    env.aws.add_container(path="/v2/credentials/3f2a-task")
    rotate_with(env, env.with_auth(method="default"),
                {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/3f2a-task"}, "container")
    no_leaks(secrets=env.extra_secrets)


def test_default_chain_eks_pod_identity(env, no_leaks):
    env.aws.add_container(path="/v1/credentials", token="eks-pod-identity-token-0123456789")
    path = env.patrol.write_file("pod-token", "eks-pod-identity-token-0123456789\n")
    rotate_with(env, env.with_auth(method="default"),
                {"AWS_CONTAINER_CREDENTIALS_FULL_URI": env.aws.plain_url + "/v1/credentials",
                 "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(path)}, "container")
    no_leaks(secrets=env.extra_secrets + ["eks-pod-identity-token-0123456789"])


def test_default_chain_imds_v2(env, aws, no_leaks):
    aws.set_imds(role_name="patrol-instance")
    rotate_with(env, env.with_auth(method="default"), {}, "imds")
    assert any(e["path"] == "/latest/api/token" for e in aws.log())
    no_leaks(secrets=env.extra_secrets)


def test_no_credentials_anywhere_is_a_clean_failure(env, aws, no_leaks):
    env.configure(store=env.with_auth(method="default"), oneshot_timeout="3s")
    r = rotate(env, ok=False)
    assert r.rc == 1 and "credentials: none found" in r.stdout + r.stderr, r
    assert env.active_tokens() == []


def test_assume_role_from_the_default_chain(env, no_leaks):
    source = env.aws.add_user(name="source", actions=["GetCallerIdentity"])   # cannot touch secrets
    env.aws.add_role(arn=ROLE_ARN, trusted=[source["access_key_id"]], external_id="ext-42")
    store = env.with_auth(method="assume_role", role_arn=ROLE_ARN, external_id="ext-42")
    calls = rotate_with(env, store, {"AWS_ACCESS_KEY_ID": source["access_key_id"],
                                     "AWS_SECRET_ACCESS_KEY": source["secret_access_key"]}, "assumed-role")
    ar = [c for c in calls if c["action"] == "AssumeRole"]
    assert len(ar) == 1 and ar[0]["access_key_id"] == source["access_key_id"]   # cached for the run
    no_leaks(secrets=env.extra_secrets)


def test_assume_role_with_a_wrong_external_id_fails_cleanly(env, no_leaks):
    source = env.aws.add_user(name="source")
    env.aws.add_role(arn=ROLE_ARN, trusted=[source["access_key_id"]], external_id="ext-42")
    env.configure(store=env.with_auth(method="assume_role", role_arn=ROLE_ARN, external_id="wrong"),
                  oneshot_timeout="3s")
    r = rotate(env, ok=False, run_env={"AWS_ACCESS_KEY_ID": source["access_key_id"],
                                       "AWS_SECRET_ACCESS_KEY": source["secret_access_key"]})
    assert r.rc == 1 and "credentials: assume role: 403 AccessDenied" in r.stdout + r.stderr, r
    assert env.active_tokens() == []
    no_leaks(secrets=env.extra_secrets)
