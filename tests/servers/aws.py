#!/usr/bin/python3
"""Fake AWS for patrol's tests: Secrets Manager, STS, EC2 IMDSv2 and the ECS/EKS
container-credentials endpoint, in one process, after AWS's documented APIs.

    /usr/bin/python3 tests/servers/aws.py --cert server.pem --key server-key.pem \\
            [--port-file FILE] [--region eu-west-1]

Listeners: the main port (TLS, or plain with --plain) and a second, plain-http
port on 127.0.0.1 for the endpoints that are plain http in AWS (IMDS,
169.254.170.2); GET /_test/aws/info tells its number. Both serve every route and
share one state, so either can be used for anything.

Everything of tests/servers/common.py applies (faults, log, clock, secrets, reset).
All Secrets Manager and STS calls are POST / and so look alike to path-based fault
rules; /_test/aws/faults targets one action (see below). In /_test/log the "auth"
note is "<Action>:<principal kind>" (kinds: user, assumed-role, web-identity, imds,
container, none), e.g. "PutSecretValue:imds"; IMDS and container calls note "imds"
and "container".

Signatures: every Secrets Manager request and signed STS request is checked with
botocore (SigV4Auth over the received method, path, query, signed headers and body,
with the secret key the access key id was issued with). AWS's answers:
    no/malformed Authorization   SM 403 IncompleteSignatureException / STS 403 IncompleteSignature
    unknown access key id        SM 400 UnrecognizedClientException / STS 403 InvalidClientTokenId
    wrong signature              SM 400 InvalidSignatureException / STS 403 SignatureDoesNotMatch
    X-Amz-Date more than max_skew (900 s) from the service clock (/_test/clock moves
    it): the same, "Signature expired: ..."; scope region other than the configured one
    (when set) or a wrong service: the same, "Credential should be scoped to ...".
    temporary keys (ASIA...): X-Amz-Security-Token must be the one issued with them
    (SM 400 UnrecognizedClientException / STS 403 InvalidClientTokenId), before their
    expiry on the service clock (SM 400 ExpiredTokenException / STS 400 ExpiredToken).
With --bench (`make bench`) the signature is first computed by hand (hashlib, the
canonical form of the requests patrol sends: path "/", no query); only when that
does not match does botocore decide, so the answers are the same, only cheaper.
NB: patrol signs with its own clock: a test that moves patrol's clock
(PATROL_FAKE_NOW_OFFSET) must move this server's the same way.

Secrets Manager (JSON 1.1: POST /, X-Amz-Target: secretsmanager.<Action>,
errors {"__type": "<Type>", "message"}, timestamps epoch seconds):
    CreateSecret, GetSecretValue, PutSecretValue, UpdateSecretVersionStage,
    DescribeSecret, TagResource, UntagResource, DeleteSecret, RestoreSecret,
    ListSecretVersionIds.
    Versions carry stages; each stage is on at most one version. A new version gets
    VersionStages (default ["AWSCURRENT"]); the first version of a secret always gets
    AWSCURRENT too. Whenever AWSCURRENT moves, AWSPREVIOUS moves to the version it
    left. UpdateSecretVersionStage needs RemoveFromVersionId = the version that holds
    the stage when another one does (else InvalidParameterException); AWSCURRENT
    cannot just be removed. ClientRequestToken (32-64 chars) is the VersionId: the
    same token with the same value answers the existing version, with another value
    ResourceExistsException. Unknown secret or version: ResourceNotFoundException;
    a secret scheduled for deletion: InvalidRequestException. An identity whose
    "actions" do not cover the call: 400 AccessDeniedException.

STS (Query API: POST / form Action=...&Version=2011-06-15, XML answers,
errors <ErrorResponse><Error><Type>Sender</Type><Code>..</Code><Message>..):
    AssumeRole (signed; RoleArn, RoleSessionName, ExternalId, DurationSeconds),
    AssumeRoleWithWebIdentity (unsigned; RoleArn, RoleSessionName, WebIdentityToken),
    GetCallerIdentity (signed).
IMDSv2 (v1 answers 401):
    PUT /latest/api/token (X-aws-ec2-metadata-token-ttl-seconds 1-21600) -> token
    GET /latest/meta-data/iam/security-credentials/          -> the role name (404: none)
    GET /latest/meta-data/iam/security-credentials/<role>    -> {"Code": "Success",
        "LastUpdated", "Type": "AWS-HMAC", "AccessKeyId", "SecretAccessKey", "Token",
        "Expiration"} (the same keys until 5 minutes before they expire)
Container credentials: GET <path> of a seeded endpoint (Authorization must equal its
    token when it has one: else 401) -> {"AccessKeyId", "SecretAccessKey", "Token",
    "Expiration", "RoleArn"}.

Control API (no auth), besides common.py's:
    GET  /_test/aws/info        {"plain_port", "region", "account"}
    POST /_test/aws/config      {"region": "eu-west-1" | null (any), "max_skew": 900}
    POST /_test/aws/users       {"access_key_id", "secret_access_key", "name",
                                 "actions": ["*"] | ["GetSecretValue", ...],
                                 "session_token": opt, "expires_in": opt}
                                -> the user with its keys (generated when absent); with
                                session_token the keys are temporary ones (ASIA...)
    POST /_test/aws/roles       {"arn" | "name", "trusted": ["*" | access key id | user
                                 arn], "external_id": opt, "web_identity_tokens": [..],
                                 "duration": 3600, "actions": ["*"]} -> the role
    POST /_test/aws/imds        {"role_name": "patrol-instance", "duration": 21600,
                                 "actions": ["*"]} (role_name null: no role attached)
    POST /_test/aws/container   {"path": "/v2/credentials/x", "token": opt,
                                 "duration": 21600, "actions": ["*"]}
    POST /_test/aws/expire      {"access_key_id": K} | {"all": true}: temporary keys
                                expire now (IMDS and containers then hand out new ones)
    POST /_test/aws/secrets     seed a secret without auth: {"name", "value": str |
                                null, "tags": {k: v}, "description", "kms_key_id"}
    GET  /_test/aws/secrets     every secret: {"secrets": [{"name", "arn", "tags": {..},
                                "deleted", "versions": [{"id", "value", "stages",
                                "created"}]}]} (versions oldest first)
    POST /_test/aws/faults      a rule or a list, appended: {"action": "PutSecretValue",
                                "status": 503, "type": "ServiceUnavailable", "message",
                                "times": 1, "skip": 0, "perform": false,
                                "retry_after": opt} (SM and STS actions; perform=true
                                carries the call out and answers the error anyway)
    DELETE /_test/aws/faults
    GET  /_test/aws/calls       [{"action", "kind", "access_key_id", "status", "error"}]
                                every SM/STS call that reached a handler, in order
"""
import datetime
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import threading
import uuid
from urllib.parse import parse_qs
from xml.sax.saxutils import escape as xml_escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import ApiError, Response, json_response, route  # noqa: E402

from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

ACCOUNT = "123456789012"
DEFAULT_REGION = "eu-west-1"
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
AUTH_HEAD = (r"AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
             r"SignedHeaders=([a-z0-9;\-]+),\s*")
AUTH_RE = re.compile(AUTH_HEAD + r"Signature=([0-9a-f]{64})")
AUTH_HEAD_RE = re.compile(AUTH_HEAD)
AUTH_TAIL_RE = re.compile(r"Signature=[0-9a-f]{64}")
AMZ_DATE_RE = re.compile(r"\d{8}T\d{6}Z")
SESSION_NAME_RE = re.compile(r"[\w+=,.@-]{2,64}")
SM_TYPES = {400: "InvalidRequestException", 401: "UnrecognizedClientException",
            403: "AccessDeniedException", 404: "ResourceNotFoundException",
            429: "ThrottlingException", 500: "InternalServiceError", 503: "ServiceUnavailable"}
STS_CODES = {400: "InvalidParameterValue", 403: "AccessDenied", 429: "Throttling",
             500: "InternalFailure", 503: "ServiceUnavailable"}
SM_ACTIONS = ("CreateSecret", "GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage",
              "DescribeSecret", "TagResource", "UntagResource", "DeleteSecret", "RestoreSecret",
              "ListSecretVersionIds")
STS_ACTIONS = ("AssumeRole", "AssumeRoleWithWebIdentity", "GetCallerIdentity")


@functools.lru_cache(maxsize=4096)
def amz_date_epoch(date):
    """Epoch seconds of an X-Amz-Date (strptime's answer, or its ValueError), remembered:
    a client signs many requests within the same second."""
    return datetime.datetime.strptime(date, "%Y%m%dT%H%M%SZ") \
                   .replace(tzinfo=datetime.timezone.utc).timestamp()


@functools.lru_cache(maxsize=1024)
def _auth_head_groups(head):
    m = AUTH_HEAD_RE.fullmatch(head)
    return m.groups() if m else ()


def match_authorization(value):
    """AUTH_RE.fullmatch(value).groups(), or None.  A match ends with "Signature=" and 64
    hex digits (74 characters), so it is a match of AUTH_HEAD on what comes before them,
    which is the same for all the requests of a day: that part is matched once."""
    if len(value) < 74 or AUTH_TAIL_RE.fullmatch(value, len(value) - 74) is None:
        return None
    groups = _auth_head_groups(value[:-74])
    return groups + (value[-64:],) if groups else None


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@functools.lru_cache(maxsize=1024)
def _hmac_pads(key):
    """The SHA-256 states after HMAC's inner and outer padded key (never updated: copied)."""
    k = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    return hashlib.sha256(k.translate(_IPAD)), hashlib.sha256(k.translate(_OPAD))


def hmac_sha256_hex(key, msg):
    """hmac.new(key, msg, sha256).hexdigest(), with the two padded-key states of each key
    computed once (copying them costs less than setting up an HMAC)."""
    ipad, opad = _hmac_pads(key)
    inner = ipad.copy()
    inner.update(msg)
    outer = opad.copy()
    outer.update(inner.digest())
    return outer.hexdigest()


@functools.lru_cache(maxsize=1024)
def signing_key(secret, day, region, service):
    """SigV4's derived key: the same for every request of a day (remembered)."""
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def iso(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rand(alphabet, n):
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_key_id(temporary):
    return ("ASIA" if temporary else "AKIA") + rand("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)


def new_secret_key():
    return rand("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 40)


class SmError(ApiError):
    """A Secrets Manager error: {"__type": type, "message"}."""

    def __init__(self, status, type_, message=""):
        super().__init__(status, type_, message)


class StsError(ApiError):
    pass


class Identity:
    """Keys AWS knows: a user's long-term keys or temporary ones it issued."""

    def __init__(self, akid, secret, kind, arn, actions, token=None, expires=None):
        self.akid, self.secret, self.kind, self.arn = akid, secret, kind, arn
        self.actions, self.token, self.expires = list(actions or ["*"]), token, expires

    def allows(self, action):
        return "*" in self.actions or action in self.actions

    def public(self, now):
        d = {"access_key_id": self.akid, "secret_access_key": self.secret, "kind": self.kind,
             "arn": self.arn, "actions": self.actions}
        if self.token:
            d.update(session_token=self.token, expiration=iso(self.expires),
                     expired=self.expires <= now)
        return d


class AWS(common.Service):
    name = "aws"

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--region", default=DEFAULT_REGION,
                            help="the region signatures must be scoped to (\"any\": no check)")

    def __init__(self, args=None):
        super().__init__(args)
        self.plain_port = None
        if args is not None:
            # A second, plain-http listener for IMDS and the container endpoint.
            srv = common.Server((args.host, 0), self, None, args.verbose)
            self.plain_port = srv.server_address[1]
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5},
                             daemon=True).start()

    # ------------------------------------------------------------ state

    def reset_state(self):
        region = getattr(self.args, "region", DEFAULT_REGION) if self.args else DEFAULT_REGION
        self.config = {"region": None if region == "any" else region, "max_skew": 900}
        self.identities = {}          # access key id -> Identity
        self.roles = {}               # arn -> role dict
        self.imds = {"role_name": None, "duration": 21600, "actions": ["*"], "creds": None}
        self.imds_tokens = {}         # token -> expiry
        self.containers = {}          # path -> {"token", "duration", "actions", "creds"}
        self.secrets = {}             # name -> secret dict
        self.action_faults = []
        self.calls = []

    def secret_values(self):
        out = []
        for i in self.identities.values():
            out.append((f"secret access key of {i.akid} ({i.kind})", i.secret))
            if i.token:
                out.append((f"session token of {i.akid} ({i.kind})", i.token))
        for arn, role in self.roles.items():
            out += [(f"web identity token of {arn}", t) for t in role["web_identity_tokens"]]
        out += [("IMDS session token", t) for t in self.imds_tokens]
        out += [(f"container token of {p}", c["token"]) for p, c in self.containers.items() if c["token"]]
        for s in self.secrets.values():
            for vid, v in s["versions"].items():
                if v["value"]:
                    out.append((f"value of {s['name']} version {vid}", v["value"]))
        return out

    # ------------------------------------------------------------ request kinds and errors

    @staticmethod
    def target(req):
        t = req.headers.get("X-Amz-Target") or ""
        return t.split(".", 1)[1] if t.startswith("secretsmanager.") else None

    @staticmethod
    def is_sts(req):
        ctype = (req.headers.get("Content-Type") or "").lower()
        return req.method == "POST" and req.path == "/" and "x-www-form-urlencoded" in ctype

    def error_response(self, req, status, code, message, headers=None):
        headers = dict(headers or {}, **{"x-amzn-RequestId": str(uuid.uuid4())})
        if req.path.startswith("/latest/"):
            return Response(status, message or code, headers, "text/plain")
        if req.path == "/" and self.is_sts(req):
            body = (f'<ErrorResponse xmlns="{STS_NS}"><Error><Type>Sender</Type>'
                    f"<Code>{xml_escape(code)}</Code><Message>{xml_escape(message)}</Message>"
                    f"</Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
            return Response(status, body, headers, "text/xml")
        if req.path == "/":
            return Response(status, common.json_bytes({"__type": code, "message": message}), headers,
                            "application/x-amz-json-1.1")
        if req.path.startswith("/_test/"):
            return super().error_response(req, status, code, message, headers)
        return json_response(status, {"code": code, "message": message}, headers)

    def error_code_for_status(self, req, status):
        if self.is_sts(req):
            return STS_CODES.get(status, "InternalFailure" if status >= 500 else "InvalidParameterValue")
        if req.path == "/":
            return SM_TYPES.get(status, "InternalServiceError" if status >= 500 else "InvalidRequestException")
        return super().error_code_for_status(req, status)

    # ------------------------------------------------------------ signatures

    def sig_error(self, sts, kind, message):
        """kind: incomplete | unknown | mismatch | expired_token."""
        if sts:
            code = {"incomplete": "IncompleteSignature", "unknown": "InvalidClientTokenId",
                    "mismatch": "SignatureDoesNotMatch", "expired_token": "ExpiredToken"}[kind]
            return StsError(400 if kind == "expired_token" else 403, code, message)
        code = {"incomplete": "IncompleteSignatureException", "unknown": "UnrecognizedClientException",
                "mismatch": "InvalidSignatureException", "expired_token": "ExpiredTokenException"}[kind]
        return SmError(403 if kind == "incomplete" else 400, code, message)

    def parse_authorization(self, req, sts):
        m = match_authorization((req.headers.get("Authorization") or "").strip())
        date = req.headers.get("X-Amz-Date") or ""
        if not m or not AMZ_DATE_RE.fullmatch(date):
            raise self.sig_error(sts, "incomplete", "Authorization header requires 'Credential', "
                                 "'Signature' and 'SignedHeaders' parameters and an X-Amz-Date header.")
        akid, day, region, service, signed, signature = m
        if day != date[:8]:
            raise self.sig_error(sts, "mismatch", "Credential scope date does not match X-Amz-Date")
        return akid, region, service, signed.split(";"), signature, date

    def check_scope(self, sts, region, service, signed, date):
        want = "sts" if sts else "secretsmanager"
        if service != want or (self.config["region"] and region != self.config["region"]):
            raise self.sig_error(sts, "mismatch", f"Credential should be scoped to a valid region and "
                                 f"service '{want}'.")
        if "host" not in signed or "x-amz-date" not in signed:
            raise self.sig_error(sts, "incomplete", "Host and X-Amz-Date must be signed headers")
        if abs(amz_date_epoch(date) - self.now()) > self.config["max_skew"]:
            raise self.sig_error(sts, "mismatch", f"Signature expired: {date} is now earlier or later "
                                 f"than {iso(self.now() - self.config['max_skew'])} (service clock)")

    def expected_signature(self, req, ident, region, service, signed, date):
        headers = {}
        for name in signed:
            values = req.headers.get_all(name) or []
            if not values:
                raise self.sig_error(service == "sts", "incomplete",
                                     f"signed header {name} is missing from the request")
            headers[name] = ",".join(values)
        url = f"https://{headers.get('host', '')}{req.path}" + (f"?{req.query_string}" if req.query_string else "")
        areq = AWSRequest(method=req.method, url=url, data=req.body, headers=headers)
        areq.context["timestamp"] = date
        auth = SigV4Auth(Credentials(ident.akid, ident.secret, ident.token), service, region)
        canonical = auth.canonical_request(areq)
        return auth.signature(auth.string_to_sign(areq, canonical), areq)

    def fast_signature(self, req, ident, region, service, signed, date):
        """SigV4 as botocore computes it, for POST / without a query (None otherwise)."""
        if req.path != "/" or req.query_string:
            return None
        names = sorted(set(signed))
        lines = []
        for name in names:
            values = req.headers.get_all(name)
            if not values:
                return None
            lines.append(f"{name}:{' '.join(','.join(values).split())}")
        body_sum = req.headers.get("X-Amz-Content-SHA256") if "x-amz-content-sha256" in signed else None
        canonical = "\n".join([req.method.upper(), "/", "", "\n".join(lines) + "\n",
                               ";".join(names),
                               body_sum or hashlib.sha256(req.body or b"").hexdigest()])
        scope = f"{date[:8]}/{region}/{service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = signing_key(ident.secret, date[:8], region, service)
        return hmac_sha256_hex(key, to_sign.encode())

    def authenticate(self, req, sts=False):
        """The Identity that signed req (raises AWS's error otherwise)."""
        akid, region, service, signed, signature, date = self.parse_authorization(req, sts)
        self.check_scope(sts, region, service, signed, date)
        ident = self.identities.get(akid)
        if ident is None:
            raise self.sig_error(sts, "unknown", "The security token included in the request is invalid.")
        if ident.token is not None and req.headers.get("X-Amz-Security-Token") != ident.token:
            raise self.sig_error(sts, "unknown", "The security token included in the request is invalid.")
        if ident.token is None and req.headers.get("X-Amz-Security-Token"):
            raise self.sig_error(sts, "unknown", "The security token included in the request is invalid.")
        fast = self.fast_signature(req, ident, region, service, signed, date) if self.bench else None
        if fast is not None and hmac.compare_digest(fast, signature):
            want = fast
        else:
            want = self.expected_signature(req, ident, region, service, signed, date)
        if not hmac.compare_digest(want, signature):
            raise self.sig_error(sts, "mismatch", "The request signature we calculated does not match "
                                 "the signature you provided. Check your AWS Secret Access Key and "
                                 "signing method. Consult the service documentation for details.")
        if ident.expires is not None and ident.expires <= self.now():
            raise self.sig_error(sts, "expired_token", "The security token included in the request is expired")
        return ident

    # ------------------------------------------------------------ identities

    def issue(self, kind, arn, actions, duration):
        ident = Identity(new_key_id(True), new_secret_key(), kind, arn, actions,
                         token="IQoJb3JpZ2luX2Vj" + rand("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 120),
                         expires=self.now() + duration)
        self.identities[ident.akid] = ident
        return ident

    def cached_issue(self, holder, kind, arn, actions, duration):
        """IMDS and containers hand out the same keys until 5 minutes before expiry."""
        cur = holder.get("creds")
        if cur is None or cur.akid not in self.identities or cur.expires - 300 <= self.now():
            cur = holder["creds"] = self.issue(kind, arn, actions, duration)
        return cur

    # ------------------------------------------------------------ dispatch of POST /

    def take_action_fault(self, action):
        for rule in self.action_faults:
            if rule["action"] not in ("*", action) or rule["times"] == 0:
                continue
            if rule["skip"] > 0:
                rule["skip"] -= 1
                continue
            if rule["times"] > 0:
                rule["times"] -= 1
            rule["hits"] += 1
            return rule
        return None

    def fault_error(self, rule, sts):
        status = int(rule.get("status") or 500)
        table, cls = (STS_CODES, StsError) if sts else (SM_TYPES, SmError)
        code = rule.get("type") or table.get(status, "InternalFailure" if sts else "InternalServiceError")
        headers = {"Retry-After": str(rule["retry_after"])} if rule.get("retry_after") is not None else {}
        err = cls(status, code, rule.get("message") or "injected fault")
        err.headers = headers
        return err

    @route("POST", r"/")
    def post_root(self, req):
        sts = self.is_sts(req)
        if sts:
            form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace"),
                                                  keep_blank_values=True).items()}
            action = form.get("Action") or ""
        else:
            action = self.target(req) or ""
        call = {"action": action, "kind": "none", "access_key_id": None, "status": 200, "error": None}
        self.calls.append(call)
        try:
            return self.run_action(req, sts, action, form if sts else None, call)
        except ApiError as e:
            call.update(status=e.status, error=e.code)
            raise
        finally:
            req.auth = f"{action or '?'}:{call['kind']}"

    def run_action(self, req, sts, action, form, call):
        if sts and action not in STS_ACTIONS:
            raise StsError(400, "InvalidAction", f"Could not find operation {action} for version 2011-06-15")
        if not sts and action not in SM_ACTIONS:
            raise SmError(400, "UnknownOperationException", "")
        ident = None
        if action != "AssumeRoleWithWebIdentity":
            ident = self.authenticate(req, sts)
            call.update(kind=ident.kind, access_key_id=ident.akid)
            if not sts and not ident.allows(action):
                raise SmError(400, "AccessDeniedException",
                              f"User: {ident.arn} is not authorized to perform: secretsmanager:{action} "
                              f"because no identity-based policy allows the secretsmanager:{action} action")
        rule = self.take_action_fault(action)
        if rule and not rule.get("perform"):
            raise self.fault_error(rule, sts)
        if sts:
            out = getattr(self, "sts_" + action)(form, ident)
        else:
            body = req.json(required=False) or {}
            if not isinstance(body, dict):
                raise SmError(400, "SerializationException", "body must be a JSON object")
            out = json_response(200, getattr(self, "sm_" + action)(body))
            if action in ("TagResource", "UntagResource"):
                out = Response(200, b"", {}, None)
            out.content_type = "application/x-amz-json-1.1" if out.body else None
        if rule:
            raise self.fault_error(rule, sts)
        out.headers["x-amzn-RequestId"] = common.uuid4_str()
        return out

    # ------------------------------------------------------------ STS

    def sts_answer(self, action, inner):
        body = (f'<{action}Response xmlns="{STS_NS}"><{action}Result>{inner}</{action}Result>'
                f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
                f"</{action}Response>")
        return Response(200, body, {}, "text/xml")

    def role_for(self, form):
        arn = form.get("RoleArn") or ""
        name = form.get("RoleSessionName") or ""
        if not arn:
            raise StsError(400, "ValidationError", "1 validation error detected: Value null at 'roleArn'")
        if not SESSION_NAME_RE.fullmatch(name):
            raise StsError(400, "ValidationError", "1 validation error detected: Value at "
                           "'roleSessionName' failed to satisfy constraint: Member must satisfy "
                           "regular expression pattern: [\\w+=,.@-]*")
        return self.roles.get(arn), arn, name

    def duration_of(self, form, role):
        d = form.get("DurationSeconds")
        if d is None:
            return role["duration"]
        if not d.isdigit() or not 900 <= int(d) <= 43200:
            raise StsError(400, "ValidationError", "DurationSeconds must be between 900 and 43200")
        return int(d)

    def credentials_xml(self, ident, role_arn, name):
        return (f"<Credentials><AccessKeyId>{ident.akid}</AccessKeyId>"
                f"<SecretAccessKey>{xml_escape(ident.secret)}</SecretAccessKey>"
                f"<SessionToken>{xml_escape(ident.token)}</SessionToken>"
                f"<Expiration>{iso(ident.expires)}</Expiration></Credentials>"
                f"<AssumedRoleUser><AssumedRoleId>AROA{rand('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', 17)}:{name}"
                f"</AssumedRoleId><Arn>{xml_escape(role_arn.replace(':role/', ':assumed-role/').replace('arn:aws:iam:', 'arn:aws:sts:'))}/{name}</Arn>"
                f"</AssumedRoleUser>")

    def sts_AssumeRole(self, form, ident):
        role, arn, name = self.role_for(form)
        denied = StsError(403, "AccessDenied", f"User: {ident.arn} is not authorized to perform: "
                          f"sts:AssumeRole on resource: {arn}")
        if role is None or not ({"*", ident.akid, ident.arn} & set(role["trusted"])):
            raise denied
        if role["external_id"] is not None and form.get("ExternalId") != role["external_id"]:
            raise denied
        new = self.issue("assumed-role", arn, role["actions"], self.duration_of(form, role))
        return self.sts_answer("AssumeRole", self.credentials_xml(new, arn, name) +
                               "<PackedPolicySize>0</PackedPolicySize>")

    def sts_AssumeRoleWithWebIdentity(self, form, ident):
        role, arn, name = self.role_for(form)
        jwt = form.get("WebIdentityToken") or ""
        if len(jwt) < 4:
            raise StsError(400, "ValidationError", "WebIdentityToken must be at least 4 characters")
        if role is None:
            raise StsError(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        if jwt not in role["web_identity_tokens"]:
            raise StsError(400, "InvalidIdentityToken", "The web identity token provided could not be validated")
        new = self.issue("web-identity", arn, role["actions"], self.duration_of(form, role))
        return self.sts_answer("AssumeRoleWithWebIdentity",
                               "<SubjectFromWebIdentityToken>system:serviceaccount:patrol:patrol"
                               "</SubjectFromWebIdentityToken><Audience>sts.amazonaws.com</Audience>"
                               "<Provider>arn:aws:iam::%s:oidc-provider/oidc.example</Provider>" % ACCOUNT
                               + self.credentials_xml(new, arn, name))

    def sts_GetCallerIdentity(self, form, ident):
        return self.sts_answer("GetCallerIdentity", f"<Arn>{xml_escape(ident.arn)}</Arn>"
                               f"<UserId>{ident.akid}</UserId><Account>{ACCOUNT}</Account>")

    # ------------------------------------------------------------ Secrets Manager: helpers

    def arn_of(self, name):
        suffix = hashlib.sha256(name.encode()).hexdigest()[:6]
        return f"arn:aws:secretsmanager:{self.config['region'] or DEFAULT_REGION}:{ACCOUNT}:secret:{name}-{suffix}"

    def find(self, body, live=True):
        sid = body.get("SecretId")
        if not isinstance(sid, str) or not sid:
            raise SmError(400, "InvalidParameterException", "SecretId is required")
        s = self.secrets.get(sid) or next((x for x in self.secrets.values() if x["arn"] == sid), None)
        if s is None:
            raise SmError(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
        if live and s["deleted"] is not None:
            raise SmError(400, "InvalidRequestException", "You can't perform this operation on the secret "
                          "because it was marked for deletion.")
        return s

    @staticmethod
    def holder(s, stage):
        return next((vid for vid, v in s["versions"].items() if stage in v["stages"]), None)

    def attach(self, s, vid, stage):
        """Put `stage` on vid, taking it off elsewhere; AWSCURRENT drags AWSPREVIOUS along."""
        old = self.holder(s, stage)
        if old == vid:
            return
        if old is not None:
            s["versions"][old]["stages"].remove(stage)
        s["versions"][vid]["stages"].append(stage)
        if stage == "AWSCURRENT" and old is not None:
            self.attach(s, old, "AWSPREVIOUS")
        s["changed"] = self.now()

    def base(self, s):
        return {"ARN": s["arn"], "Name": s["name"]}

    @staticmethod
    def value_of(body):
        has_s, has_b = "SecretString" in body, "SecretBinary" in body
        if has_s and has_b:
            raise SmError(400, "InvalidParameterException", "You can't specify both a binary secret "
                          "value and a string secret value in the same secret.")
        if has_s and not isinstance(body["SecretString"], str):
            raise SmError(400, "InvalidParameterException", "SecretString must be a string")
        return ("string", body["SecretString"]) if has_s else ("binary", body["SecretBinary"]) if has_b else None

    @staticmethod
    def check_request_token(tok):
        if tok is not None and (not isinstance(tok, str) or not 32 <= len(tok) <= 64):
            raise SmError(400, "InvalidParameterException",
                          "ClientRequestToken must be 32 to 64 characters long")

    def add_version(self, s, vid, value, stages):
        first = not s["versions"]
        s["versions"][vid] = {"kind": value[0], "value": value[1], "stages": [], "created": self.now()}
        for st in (stages or ["AWSCURRENT"]):
            self.attach(s, vid, st)
        if first:
            self.attach(s, vid, "AWSCURRENT")

    @staticmethod
    def check_tags(tags):
        if not isinstance(tags, list):
            raise SmError(400, "InvalidParameterException", "Tags must be a list")
        for t in tags:
            if not isinstance(t, dict) or not isinstance(t.get("Key"), str) or \
                    not 1 <= len(t["Key"]) <= 128 or not isinstance(t.get("Value", ""), str) or \
                    len(t.get("Value", "")) > 256:
                raise SmError(400, "ValidationException", "Tag keys are 1-128 and values 0-256 characters")

    def merge_tags(self, s, tags):
        self.check_tags(tags)
        for t in tags:
            s["tags"][t["Key"]] = t.get("Value", "")
        if len(s["tags"]) > 50:
            raise SmError(400, "LimitExceededException", "a secret has at most 50 tags")

    # ------------------------------------------------------------ Secrets Manager: actions

    def sm_CreateSecret(self, body):
        name = body.get("Name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9/_+=.@-]{1,512}", name):
            raise SmError(400, "InvalidParameterException", "Name must be 1-512 of letters, digits and /_+=.@-")
        if name in self.secrets:
            raise SmError(400, "ResourceExistsException", f"The operation failed because the secret {name} "
                          "already exists.")
        tok = body.get("ClientRequestToken")
        self.check_request_token(tok)
        s = {"name": name, "arn": self.arn_of(name), "description": body.get("Description"),
             "kms_key_id": body.get("KmsKeyId"), "tags": {}, "versions": {}, "created": self.now(),
             "changed": self.now(), "deleted": None}
        self.merge_tags(s, body.get("Tags") or [])
        value = self.value_of(body)
        out = self.base(s)
        if value is not None:
            vid = tok or str(uuid.uuid4())
            self.add_version(s, vid, value, None)
            out["VersionId"] = vid
        self.secrets[name] = s
        return out

    def sm_GetSecretValue(self, body):
        s = self.find(body)
        vid, stage = body.get("VersionId"), body.get("VersionStage")
        if vid is None:
            stage = stage or "AWSCURRENT"
            vid = self.holder(s, stage)
            if vid is None:
                raise SmError(400, "ResourceNotFoundException", "Secrets Manager can't find the specified "
                              f"secret value for staging label: {stage}")
        v = s["versions"].get(vid)
        if v is None or (stage and stage not in v["stages"]) or (not v["stages"] and not body.get("VersionId")):
            raise SmError(400, "ResourceNotFoundException", "Secrets Manager can't find the specified "
                          f"secret value for VersionId: {vid}")
        out = dict(self.base(s), VersionId=vid, VersionStages=list(v["stages"]), CreatedDate=v["created"])
        out["SecretString" if v["kind"] == "string" else "SecretBinary"] = v["value"]
        return out

    def sm_PutSecretValue(self, body):
        s = self.find(body)
        tok = body.get("ClientRequestToken")
        self.check_request_token(tok)
        value = self.value_of(body)
        if value is None:
            raise SmError(400, "InvalidParameterException", "You must provide either SecretString or SecretBinary.")
        stages = body.get("VersionStages")
        if stages is not None and (not isinstance(stages, list) or not all(isinstance(x, str) for x in stages)):
            raise SmError(400, "InvalidParameterException", "VersionStages must be a list of strings")
        vid = tok or str(uuid.uuid4())
        old = s["versions"].get(vid)
        if old is not None:
            if (old["kind"], old["value"]) != value:
                raise SmError(400, "ResourceExistsException", "You can't modify an existing version, "
                              "you can only create a new version.")
            return dict(self.base(s), VersionId=vid, VersionStages=list(old["stages"]))
        self.add_version(s, vid, value, stages)
        return dict(self.base(s), VersionId=vid, VersionStages=list(s["versions"][vid]["stages"]))

    def sm_UpdateSecretVersionStage(self, body):
        s = self.find(body)
        stage, move, remove = body.get("VersionStage"), body.get("MoveToVersionId"), body.get("RemoveFromVersionId")
        if not isinstance(stage, str) or not stage:
            raise SmError(400, "InvalidParameterException", "VersionStage is required")
        for vid in (move, remove):
            if vid is not None and vid not in s["versions"]:
                raise SmError(400, "ResourceNotFoundException", "Secrets Manager can't find the specified "
                              f"secret version: {vid}")
        holder = self.holder(s, stage)
        if remove is not None and remove != holder:
            raise SmError(400, "InvalidParameterException", f"The staging label {stage} is not attached "
                          f"to version {remove}.")
        if move is not None:
            if holder not in (None, move) and remove != holder:
                raise SmError(400, "InvalidParameterException", f"The staging label {stage} is currently "
                              f"attached to version {holder}, so you must explicitly reference that "
                              "version in RemoveFromVersionId.")
            self.attach(s, move, stage)
        elif remove is not None:
            if stage == "AWSCURRENT":
                raise SmError(400, "InvalidParameterException", "You can't remove the staging label "
                              "AWSCURRENT from a version without moving it to another version.")
            s["versions"][remove]["stages"].remove(stage)
            s["changed"] = self.now()
        return self.base(s)

    def sm_DescribeSecret(self, body):
        s = self.find(body, live=False)
        out = dict(self.base(s), CreatedDate=s["created"], LastChangedDate=s["changed"],
                   VersionIdsToStages={vid: list(v["stages"]) for vid, v in s["versions"].items()
                                       if v["stages"]})
        for key, field in (("description", "Description"), ("kms_key_id", "KmsKeyId")):
            if s[key]:
                out[field] = s[key]
        if s["tags"]:
            out["Tags"] = [{"Key": k, "Value": v} for k, v in s["tags"].items()]
        if s["deleted"] is not None:
            out["DeletedDate"] = s["deleted"]
        return out

    def sm_TagResource(self, body):
        s = self.find(body, live=False)
        self.merge_tags(s, body.get("Tags") or [])
        return {}

    def sm_UntagResource(self, body):
        s = self.find(body, live=False)
        for k in body.get("TagKeys") or []:
            s["tags"].pop(k, None)
        return {}

    def sm_DeleteSecret(self, body):
        s = self.find(body, live=False)
        if body.get("ForceDeleteWithoutRecovery"):
            del self.secrets[s["name"]]
        elif s["deleted"] is None:
            s["deleted"] = self.now()
        return dict(self.base(s), DeletionDate=self.now() + 86400 * int(body.get("RecoveryWindowInDays") or 30))

    def sm_RestoreSecret(self, body):
        s = self.find(body, live=False)
        s["deleted"] = None
        return self.base(s)

    def sm_ListSecretVersionIds(self, body):
        s = self.find(body, live=False)
        return dict(self.base(s), Versions=[{"VersionId": vid, "VersionStages": list(v["stages"]),
                                             "CreatedDate": v["created"]}
                                            for vid, v in s["versions"].items()
                                            if v["stages"] or body.get("IncludeDeprecated")])

    # ------------------------------------------------------------ IMDSv2

    def imds_session(self, req):
        req.auth = "imds"
        tok = req.headers.get("X-aws-ec2-metadata-token")
        if tok is None:
            raise ApiError(401, "Unauthorized", "")
        exp = self.imds_tokens.get(tok)
        if exp is None or exp <= self.now():
            raise ApiError(401, "Unauthorized", "")

    @route("PUT", r"/latest/api/token")
    def imds_token(self, req):
        req.auth = "imds"
        if req.headers.get("X-Forwarded-For"):
            raise ApiError(403, "Forbidden", "")
        ttl = req.headers.get("X-aws-ec2-metadata-token-ttl-seconds") or ""
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            raise ApiError(400, "Bad Request", "")
        tok = "AQAEA" + rand("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", 51) + "=="
        self.imds_tokens[tok] = self.now() + int(ttl)
        return Response(200, tok, {"X-aws-ec2-metadata-token-ttl-seconds": ttl}, "text/plain")

    @route("GET", r"/latest/meta-data/iam/security-credentials/?")
    def imds_roles(self, req):
        self.imds_session(req)
        if not self.imds["role_name"]:
            raise ApiError(404, "Not Found", "")
        return Response(200, self.imds["role_name"], {}, "text/plain")

    @route("GET", r"/latest/meta-data/iam/security-credentials/(?P<role>[^/]+)")
    def imds_creds(self, req):
        self.imds_session(req)
        role = self.imds["role_name"]
        if not role or req.params["role"] != role:
            raise ApiError(404, "Not Found", "")
        arn = f"arn:aws:iam::{ACCOUNT}:role/{role}"
        ident = self.cached_issue(self.imds, "imds", arn, self.imds["actions"], self.imds["duration"])
        return Response(200, json.dumps({"Code": "Success", "LastUpdated": iso(self.now()), "Type": "AWS-HMAC",
                                         "AccessKeyId": ident.akid, "SecretAccessKey": ident.secret,
                                         "Token": ident.token, "Expiration": iso(ident.expires)}, indent=2),
                        {}, "text/plain")

    # ------------------------------------------------------------ container credentials

    @route("GET", r"/(?!latest/|_test/).+")
    def container_creds(self, req):
        req.auth = "container"
        c = self.containers.get(req.path)
        if c is None:
            raise ApiError(404, "NotFound", f"no credentials endpoint at {req.path}")
        if c["token"] is not None and req.headers.get("Authorization") != c["token"]:
            raise ApiError(401, "AccessDenied", "the Authorization header does not hold the expected token")
        arn = f"arn:aws:iam::{ACCOUNT}:role/container-{hashlib.sha256(req.path.encode()).hexdigest()[:8]}"
        ident = self.cached_issue(c, "container", arn, c["actions"], c["duration"])
        return json_response(200, {"AccessKeyId": ident.akid, "SecretAccessKey": ident.secret,
                                   "Token": ident.token, "Expiration": iso(ident.expires), "RoleArn": arn})

    # ------------------------------------------------------------ control API

    @route("GET", r"/_test/aws/info")
    def ctl_info(self, req):
        return {"plain_port": self.plain_port, "region": self.config["region"], "account": ACCOUNT}

    @route("POST", r"/_test/aws/config")
    def ctl_config(self, req):
        body = req.json()
        for k in ("region", "max_skew"):
            if k in body:
                self.config[k] = body[k]
        return dict(self.config)

    @route("POST", r"/_test/aws/users")
    def ctl_users(self, req):
        body = req.json()
        temporary = bool(body.get("session_token"))
        akid = body.get("access_key_id") or new_key_id(temporary)
        name = body.get("name") or "patrol"
        ident = Identity(akid, body.get("secret_access_key") or new_secret_key(), "user",
                         f"arn:aws:iam::{ACCOUNT}:user/{name}", body.get("actions"),
                         token=body.get("session_token"),
                         expires=self.now() + float(body.get("expires_in") or 3600) if temporary else None)
        self.identities[akid] = ident
        return ident.public(self.now())

    @route("GET", r"/_test/aws/users")
    def ctl_users_get(self, req):
        return {"identities": [i.public(self.now()) for i in self.identities.values()]}

    @route("POST", r"/_test/aws/roles")
    def ctl_roles(self, req):
        body = req.json()
        arn = body.get("arn") or f"arn:aws:iam::{ACCOUNT}:role/{body.get('name') or 'patrol'}"
        role = {"arn": arn, "trusted": list(body.get("trusted") or ["*"]),
                "external_id": body.get("external_id"),
                "web_identity_tokens": list(body.get("web_identity_tokens") or []),
                "duration": int(body.get("duration") or 3600), "actions": list(body.get("actions") or ["*"])}
        self.roles[arn] = role
        return role

    @route("POST", r"/_test/aws/imds")
    def ctl_imds(self, req):
        body = req.json()
        self.imds.update({k: body[k] for k in ("role_name", "duration", "actions") if k in body})
        self.imds["creds"] = None
        return {k: v for k, v in self.imds.items() if k != "creds"}

    @route("POST", r"/_test/aws/container")
    def ctl_container(self, req):
        body = req.json()
        path = body.get("path") or "/v2/credentials/" + str(uuid.uuid4())
        if not path.startswith("/") or path.startswith(("/latest/", "/_test/")):
            raise ApiError(400, "invalid_request", "path must start with / (not /latest/ or /_test/)")
        self.containers[path] = {"token": body.get("token"), "duration": int(body.get("duration") or 21600),
                                 "actions": list(body.get("actions") or ["*"]), "creds": None}
        return {"path": path, "token": body.get("token")}

    @route("POST", r"/_test/aws/expire")
    def ctl_expire(self, req):
        body = req.json()
        n = 0
        for i in self.identities.values():
            if i.token and (body.get("all") or i.akid == body.get("access_key_id")):
                i.expires = min(i.expires, self.now() - 1)
                n += 1
        return {"expired": n}

    @route("POST", r"/_test/aws/secrets")
    def ctl_secret_seed(self, req):
        body = req.json()
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "invalid_request", "name is required")
        s = self.secrets.get(name) or {"name": name, "arn": self.arn_of(name), "description": body.get("description"),
                                       "kms_key_id": body.get("kms_key_id"), "tags": {}, "versions": {},
                                       "created": self.now(), "changed": self.now(), "deleted": None}
        s["tags"].update({str(k): str(v) for k, v in (body.get("tags") or {}).items()})
        if body.get("value") is not None:
            self.add_version(s, body.get("version_id") or str(uuid.uuid4()), ("string", body["value"]),
                             body.get("stages"))
        self.secrets[name] = s
        return self.secret_dump(s)

    def secret_dump(self, s):
        return {"name": s["name"], "arn": s["arn"], "tags": dict(s["tags"]), "deleted": s["deleted"],
                "description": s["description"], "kms_key_id": s["kms_key_id"],
                "versions": [{"id": vid, "value": v["value"], "stages": list(v["stages"]), "created": v["created"]}
                             for vid, v in s["versions"].items()]}

    @route("GET", r"/_test/aws/secrets")
    def ctl_secrets(self, req):
        return {"secrets": [self.secret_dump(s) for s in self.secrets.values()]}

    @route("POST", r"/_test/aws/faults")
    def ctl_faults(self, req):
        body = req.json()
        rules = body if isinstance(body, list) else [body]
        for r in rules:
            if not isinstance(r, dict) or not isinstance(r.get("action"), str):
                raise ApiError(400, "invalid_request", "a rule needs an \"action\"")
            self.action_faults.append(dict(r, times=int(r.get("times", 1)), skip=int(r.get("skip", 0)), hits=0))
        return {"faults": self.action_faults}

    @route("GET", r"/_test/aws/faults")
    def ctl_faults_get(self, req):
        return {"faults": self.action_faults}

    @route("DELETE", r"/_test/aws/faults")
    def ctl_faults_clear(self, req):
        self.action_faults = []
        return {"faults": []}

    @route("GET", r"/_test/aws/calls")
    def ctl_calls(self, req):
        return {"calls": self.calls}


if __name__ == "__main__":
    common.main(AWS)
