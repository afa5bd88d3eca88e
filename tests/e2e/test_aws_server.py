"""The fake AWS (tests/servers/aws.py) as boto3 sees it: Secrets Manager versions and
stages, ClientRequestToken idempotency, SigV4 checks, STS, IMDSv2 and the container
endpoint. Also home of AwsServer, the harness class test_rotate_aws.py uses."""
import datetime
import json

import boto3
import botocore.config
import botocore.exceptions
import pytest
import requests

import harness

REGION = "eu-west-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/patrol"
NO_RETRY = botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"})


class AwsServer(harness.FakeServer):
    """The fake AWS with helpers for its control API (see tests/servers/aws.py)."""

    @property
    def plain_url(self):
        return f"http://127.0.0.1:{self.ctl('GET', '/_test/aws/info')['plain_port']}"

    def add_user(self, **spec):
        """Long-term keys (or temporary ones with session_token); returns them."""
        return self.ctl("POST", "/_test/aws/users", spec)

    def add_role(self, **spec):
        return self.ctl("POST", "/_test/aws/roles", spec)

    def set_imds(self, **spec):
        return self.ctl("POST", "/_test/aws/imds", spec)

    def add_container(self, **spec):
        return self.ctl("POST", "/_test/aws/container", spec)

    def expire(self, **spec):
        return self.ctl("POST", "/_test/aws/expire", spec)["expired"]

    def seed_secret(self, name, value=None, tags=None, **extra):
        return self.ctl("POST", "/_test/aws/secrets", dict(name=name, value=value, tags=tags or {}, **extra))

    def all_secrets(self):
        return {s["name"]: s for s in self.ctl("GET", "/_test/aws/secrets")["secrets"]}

    def secret(self, name):
        return self.all_secrets().get(name)

    def stage(self, name, stage="AWSCURRENT"):
        """The version dict holding `stage`, or None."""
        s = self.secret(name)
        return next((v for v in (s or {}).get("versions", []) if stage in v["stages"]), None)

    def action_faults(self, *rules):
        return self.ctl("POST", "/_test/aws/faults", list(rules))["faults"]

    def calls(self, action=None):
        out = self.ctl("GET", "/_test/aws/calls")["calls"]
        return [c for c in out if action is None or c["action"] == action]

    def client(self, service, user=None, config=None, **keys):
        """A boto3 client against this server with a user's keys (dict from add_user)."""
        if user is not None:
            keys = dict(aws_access_key_id=user["access_key_id"],
                        aws_secret_access_key=user["secret_access_key"],
                        aws_session_token=user.get("session_token"), **keys)
        return boto3.client(service, region_name=REGION, endpoint_url=self.url, verify=self.ca.ca_pem,
                            config=config, **keys)


harness.SERVER_CLASSES.setdefault("aws", AwsServer)


@pytest.fixture
def aws(start_server):
    return start_server("aws", cls=AwsServer)


@pytest.fixture
def user(aws):
    return aws.add_user(access_key_id="AKIAPATROLTEST000001", secret_access_key="s3cr3t/Key+fake")


@pytest.fixture
def sm(aws, user):
    return aws.client("secretsmanager", user)


def err_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


# ------------------------------------------------------------------ stages

def test_versions_and_stages_move_as_aws_documents(aws, sm):
    sm.create_secret(Name="onplana/ci", Tags=[{"Key": "managed_by", "Value": "patrol"}])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.get_secret_value(SecretId="onplana/ci")
    assert err_code(e) == "ResourceNotFoundException"      # created without a value
    v1 = sm.put_secret_value(SecretId="onplana/ci", ClientRequestToken="1" * 32, SecretString="one",
                             VersionStages=["AWSPENDING"])
    # the first version gets AWSCURRENT whatever it asked for
    assert sorted(v1["VersionStages"]) == ["AWSCURRENT", "AWSPENDING"]
    sm.update_secret_version_stage(SecretId="onplana/ci", VersionStage="AWSPENDING",
                                   RemoveFromVersionId="1" * 32)
    v2 = sm.put_secret_value(SecretId="onplana/ci", ClientRequestToken="2" * 32, SecretString="two",
                             VersionStages=["AWSPENDING"])
    assert v2["VersionStages"] == ["AWSPENDING"]
    assert sm.get_secret_value(SecretId="onplana/ci")["SecretString"] == "one"
    assert sm.get_secret_value(SecretId="onplana/ci", VersionStage="AWSPENDING")["SecretString"] == "two"
    assert sm.get_secret_value(SecretId="onplana/ci", VersionId="2" * 32)["SecretString"] == "two"
    # moving AWSCURRENT needs the version that holds it
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_secret_version_stage(SecretId="onplana/ci", VersionStage="AWSCURRENT",
                                       MoveToVersionId="2" * 32)
    assert err_code(e) == "InvalidParameterException"
    sm.update_secret_version_stage(SecretId="onplana/ci", VersionStage="AWSCURRENT",
                                   MoveToVersionId="2" * 32, RemoveFromVersionId="1" * 32)
    sm.update_secret_version_stage(SecretId="onplana/ci", VersionStage="AWSPENDING",
                                   RemoveFromVersionId="2" * 32)
    stages = sm.describe_secret(SecretId="onplana/ci")["VersionIdsToStages"]
    assert stages == {"1" * 32: ["AWSPREVIOUS"], "2" * 32: ["AWSCURRENT"]}
    assert sm.get_secret_value(SecretId="onplana/ci")["SecretString"] == "two"
    assert sm.get_secret_value(SecretId="onplana/ci", VersionStage="AWSPREVIOUS")["SecretString"] == "one"
    # a put without stages takes AWSCURRENT, and AWSPREVIOUS follows
    sm.put_secret_value(SecretId="onplana/ci", ClientRequestToken="3" * 32, SecretString="three")
    stages = sm.describe_secret(SecretId="onplana/ci")["VersionIdsToStages"]
    assert stages == {"2" * 32: ["AWSPREVIOUS"], "3" * 32: ["AWSCURRENT"]}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_secret_version_stage(SecretId="onplana/ci", VersionStage="AWSCURRENT",
                                       RemoveFromVersionId="3" * 32)
    assert err_code(e) == "InvalidParameterException"


def test_client_request_token_is_idempotent(aws, sm):
    sm.create_secret(Name="onplana/idem", SecretString="first", ClientRequestToken="a" * 36)
    put = dict(SecretId="onplana/idem", ClientRequestToken="b" * 32, SecretString="second",
               VersionStages=["AWSPENDING"])
    first = sm.put_secret_value(**put)
    again = sm.put_secret_value(**put)
    assert first["VersionId"] == again["VersionId"] == "b" * 32
    assert len(aws.secret("onplana/idem")["versions"]) == 2
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.put_secret_value(**dict(put, SecretString="different"))
    assert err_code(e) == "ResourceExistsException"
    assert sm.get_secret_value(SecretId="onplana/idem", VersionId="b" * 32)["SecretString"] == "second"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_secret(Name="onplana/idem")
    assert err_code(e) == "ResourceExistsException"


def test_tags_describe_and_missing_secrets(aws, sm):
    sm.create_secret(Name="onplana/t", KmsKeyId="alias/patrol",
                     Tags=[{"Key": "managed_by", "Value": "patrol"}])
    sm.tag_resource(SecretId="onplana/t", Tags=[{"Key": "token_id", "Value": "pat_1"},
                                                {"Key": "managed_by", "Value": "patrol"}])
    d = sm.describe_secret(SecretId="onplana/t")
    assert {t["Key"]: t["Value"] for t in d["Tags"]} == {"managed_by": "patrol", "token_id": "pat_1"}
    assert d["KmsKeyId"] == "alias/patrol" and d["ARN"].startswith("arn:aws:secretsmanager:eu-west-1:")
    assert sm.describe_secret(SecretId=d["ARN"])["Name"] == "onplana/t"     # by ARN too
    for call in (lambda: sm.get_secret_value(SecretId="nope"), lambda: sm.describe_secret(SecretId="nope")):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert err_code(e) == "ResourceNotFoundException"
    sm.delete_secret(SecretId="onplana/t")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.get_secret_value(SecretId="onplana/t")
    assert err_code(e) == "InvalidRequestException"


def test_error_body_shape(aws, user):
    r = requests.post(aws.url + "/", data="{}", verify=aws.ca.ca_pem,
                      headers={"X-Amz-Target": "secretsmanager.GetSecretValue",
                               "Content-Type": "application/x-amz-json-1.1"})
    assert r.status_code == 403
    body = r.json()
    assert body["__type"] == "IncompleteSignatureException" and body["message"]


def test_actions_not_allowed_are_access_denied(aws):
    ro = aws.add_user(actions=["GetSecretValue", "DescribeSecret"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        aws.client("secretsmanager", ro).create_secret(Name="x")
    assert err_code(e) == "AccessDeniedException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


# ------------------------------------------------------------------ signatures

def test_bad_signatures_are_rejected(aws, user, sm):
    sm.create_secret(Name="onplana/sig", SecretString="v")
    wrong = dict(user, secret_access_key="not-the-key")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        aws.client("secretsmanager", wrong, config=NO_RETRY).get_secret_value(SecretId="onplana/sig")
    assert err_code(e) == "InvalidSignatureException"
    unknown = dict(user, access_key_id="AKIAUNKNOWN000000000")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        aws.client("secretsmanager", unknown, config=NO_RETRY).get_secret_value(SecretId="onplana/sig")
    assert err_code(e) == "UnrecognizedClientException"
    assert [c["status"] for c in aws.calls("GetSecretValue")] == [400, 400]


def _signed_request(aws, user, body, when=None):
    """A GetSecretValue request signed by botocore, as (url, headers, body)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest("POST", aws.url + "/", data=body,
                     headers={"X-Amz-Target": "secretsmanager.GetSecretValue",
                              "Content-Type": "application/x-amz-json-1.1"})
    auth = SigV4Auth(Credentials(user["access_key_id"], user["secret_access_key"]), "secretsmanager", REGION)
    if when is None:
        auth.add_auth(req)
    else:       # add_auth takes the real clock; sign for another time by hand
        req.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
        req.headers["X-Amz-Date"] = req.context["timestamp"]
        signed = auth.signed_headers(auth.headers_to_sign(req))
        sig = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
        req.headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={auth.scope(req)}, "
                                        f"SignedHeaders={signed}, Signature={sig}")
    return dict(req.headers), body


def test_tampered_body_and_stale_dates_are_rejected(aws, user, sm):
    sm.create_secret(Name="onplana/tamper", SecretString="v")
    body = json.dumps({"SecretId": "onplana/tamper"})
    headers, _ = _signed_request(aws, user, body)
    ok = requests.post(aws.url + "/", data=body, headers=headers, verify=aws.ca.ca_pem)
    assert ok.status_code == 200 and ok.json()["SecretString"] == "v"
    bad = requests.post(aws.url + "/", data=body.replace("tamper", "tamperX"), headers=headers,
                        verify=aws.ca.ca_pem)
    assert bad.status_code == 400 and bad.json()["__type"] == "InvalidSignatureException"
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    headers, _ = _signed_request(aws, user, body, when=old)
    r = requests.post(aws.url + "/", data=body, headers=headers, verify=aws.ca.ca_pem)
    assert r.status_code == 400 and "Signature expired" in r.json()["message"]
    aws.set_clock(-3600)            # the service's clock agrees with the request's: accepted
    r = requests.post(aws.url + "/", data=body, headers=headers, verify=aws.ca.ca_pem)
    assert r.status_code == 200


# ------------------------------------------------------------------ temporary credentials

def test_assume_role_and_session_tokens(aws, user):
    aws.add_role(arn=ROLE_ARN, trusted=[user["access_key_id"]], external_id="ext-1", duration=900)
    sts = aws.client("sts", user)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="patrol")      # ExternalId missing
    assert err_code(e) == "AccessDenied"
    creds = sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="patrol", ExternalId="ext-1")["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    temp = dict(access_key_id=creds["AccessKeyId"], secret_access_key=creds["SecretAccessKey"],
                session_token=creds["SessionToken"])
    sm = aws.client("secretsmanager", temp, config=NO_RETRY)
    sm.create_secret(Name="onplana/temp")
    assert aws.calls("CreateSecret")[-1]["kind"] == "assumed-role"
    bad = aws.client("secretsmanager", dict(temp, session_token="forged"), config=NO_RETRY)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.describe_secret(SecretId="onplana/temp")
    assert err_code(e) == "UnrecognizedClientException"
    aws.ctl("POST", "/_test/aws/config", {"max_skew": 7200})   # moving the clock is no skew here
    aws.advance_clock(901)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.describe_secret(SecretId="onplana/temp")
    assert err_code(e) == "ExpiredTokenException"
    # an untrusted user may not assume the role
    other = aws.add_user()
    aws.set_clock(0)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        aws.client("sts", other).assume_role(RoleArn=ROLE_ARN, RoleSessionName="x1", ExternalId="ext-1")
    assert err_code(e) == "AccessDenied"


def test_web_identity(aws):
    aws.add_role(arn=ROLE_ARN, web_identity_tokens=["eyJhbGciOi.test.jwt"])
    sts = aws.client("sts", aws_access_key_id="unused", aws_secret_access_key="unused")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts.assume_role_with_web_identity(RoleArn=ROLE_ARN, RoleSessionName="pp", WebIdentityToken="nope")
    assert err_code(e) == "InvalidIdentityToken"
    creds = sts.assume_role_with_web_identity(RoleArn=ROLE_ARN, RoleSessionName="pp",
                                              WebIdentityToken="eyJhbGciOi.test.jwt")["Credentials"]
    who = boto3.client("sts", region_name=REGION, endpoint_url=aws.url, verify=aws.ca.ca_pem,
                       aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                       aws_session_token=creds["SessionToken"]).get_caller_identity()
    assert who["Account"] == "123456789012"


def test_imds_v2_on_the_plain_listener(aws):
    aws.set_imds(role_name="patrol-instance", duration=3600)
    base = aws.plain_url
    assert requests.get(base + "/latest/meta-data/iam/security-credentials/").status_code == 401   # IMDSv1
    r = requests.put(base + "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    assert r.status_code == 200
    h = {"X-aws-ec2-metadata-token": r.text}
    role = requests.get(base + "/latest/meta-data/iam/security-credentials/", headers=h).text
    assert role == "patrol-instance"
    c = requests.get(base + f"/latest/meta-data/iam/security-credentials/{role}", headers=h).json()
    assert c["Code"] == "Success" and c["Type"] == "AWS-HMAC" and c["Token"]
    again = requests.get(base + f"/latest/meta-data/iam/security-credentials/{role}", headers=h).json()
    assert again["AccessKeyId"] == c["AccessKeyId"]           # cached until near expiry
    sm = aws.client("secretsmanager", dict(access_key_id=c["AccessKeyId"], secret_access_key=c["SecretAccessKey"],
                                           session_token=c["Token"]))
    sm.create_secret(Name="onplana/imds")
    assert aws.calls("CreateSecret")[-1]["kind"] == "imds"
    aws.expire(all=True)
    fresh = requests.get(base + f"/latest/meta-data/iam/security-credentials/{role}", headers=h).json()
    assert fresh["AccessKeyId"] != c["AccessKeyId"]


def test_container_endpoint_checks_its_token(aws):
    aws.add_container(path="/v1/credentials", token="pod-identity-token")
    url = aws.plain_url + "/v1/credentials"
    assert requests.get(url).status_code == 401
    assert requests.get(url, headers={"Authorization": "wrong"}).status_code == 401
    c = requests.get(url, headers={"Authorization": "pod-identity-token"}).json()
    assert c["AccessKeyId"].startswith("ASIA") and c["Expiration"].endswith("Z")
    assert requests.get(aws.plain_url + "/v2/credentials/unknown").status_code == 404


def test_action_faults_are_retried_by_boto3(aws, sm):
    sm.create_secret(Name="onplana/f", SecretString="v")
    aws.action_faults({"action": "GetSecretValue", "status": 503, "times": 1})
    assert sm.get_secret_value(SecretId="onplana/f")["SecretString"] == "v"
    assert [c["status"] for c in aws.calls("GetSecretValue")] == [503, 200]
    aws.action_faults({"action": "GetSecretValue", "status": 400, "type": "ThrottlingException", "times": 1})
    assert sm.get_secret_value(SecretId="onplana/f")["SecretString"] == "v"


def test_leak_list_holds_keys_and_values(aws, user, sm):
    sm.create_secret(Name="onplana/leak", SecretString="the-value-123")
    values = dict((v, l) for l, v in aws.secrets())
    assert user["secret_access_key"] in values and "the-value-123" in values
    assert user["access_key_id"] not in values          # key ids are not secrets
