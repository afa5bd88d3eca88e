#!/usr/bin/python3
"""Fake Azure for patrol's end-to-end tests: Key Vault secrets (REST 7.x), the Microsoft
Entra token endpoint (client credentials), IMDS managed identity and the App Service
identity endpoint, following the public REST documentation.

    /usr/bin/python3 tests/servers/azure.py --cert server.pem --key server-key.pem --port-file F

Besides the TLS port (Key Vault and Entra), a second, plain-http listener on 127.0.0.1
serves the same routes for IMDS and App Service (which speak plain http); its port is in
GET /_test/info. Use https://localhost:<port> as the vault URL where a client insists on a
host name (the test certificate covers localhost and 127.0.0.1).

Key Vault (every call needs ?api-version= one of API_VERSIONS; Bearer token from this
server, issued for the configured resource; errors {"error":{"code","message",
"innererror":{"code"}}}):
    PUT    /secrets/{name}                {value, contentType?, attributes?{enabled,nbf,exp},
                                          tags?} -> 200 secret bundle; a new 32-hex version
                                          each time; 409 Conflict/ObjectIsDeletedButRecoverable
                                          when the name is soft-deleted
    GET    /secrets/{name}[/{version}]    200 bundle {value, id, contentType?, attributes
                                          {enabled, created, updated, recoveryLevel,
                                          recoverableDays, exp?, nbf?}, tags?}; 404
                                          SecretNotFound; 403 Forbidden/SecretDisabled
    PATCH  /secrets/{name}/{version}      update contentType, attributes, tags
    GET    /secrets, /secrets/{name}/versions   lists {"value": [...], "nextLink": null}
    DELETE /secrets/{name}                soft delete -> deleted bundle (recoveryId, ...)
    GET    /deletedsecrets/{name}; POST /deletedsecrets/{name}/recover; DELETE (purge) 204
    Without a bearer token, or with an unknown/expired one or one for another resource:
    401 with WWW-Authenticate: Bearer authorization="https://{Host}/{tenant}",
    resource="{resource}" (authority and resource can be overridden by /_test/config).

Entra token endpoint:
    POST /{tenant}/oauth2/v2.0/token      form grant_type=client_credentials, client_id,
                                          scope=<resource>/.default, and client_secret, or
                                          client_assertion_type=urn:ietf:params:oauth:
                                          client-assertion-type:jwt-bearer + client_assertion
                                          (a federated token seeded for the app) -> 200
                                          {token_type, expires_in, ext_expires_in,
                                          access_token}; errors {"error","error_description"
                                          "AADSTSnnnn: ...\\r\\nTrace ID: ...","error_codes",...}
    GET  /{tenant}/v2.0/.well-known/openid-configuration   for MSAL-based clients
IMDS:
    GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=R[&client_id=C]
        header "Metadata: true" (else 400) -> {access_token, expires_in, expires_on,
        not_before (strings), resource, token_type, client_id}; 400 "Identity not found"
App Service (api-version=2019-08-01):
    GET /msi/token?api-version=2019-08-01&resource=R[&client_id=C], header
        X-IDENTITY-HEADER = the identity header (GET /_test/info) -> {access_token,
        expires_on, resource, token_type, client_id}; wrong/missing header 401

Control API (plus common.py's faults, log, clock, secrets, reset):
    GET  /_test/info          {"plain_port", "plain_url", "tenant", "resource",
                              "identity_header", "config"}
    POST /_test/config        {"tenant": "...", "resource": "https://vault.azure.net",
                              "token_lifetime": 3600, "challenge_authority": null (URL that
                              the challenge names instead of this server), "challenge_resource":
                              null, "challenge_scope": false (add scope="<resource>/.default"),
                              "recovery_level": "Recoverable+Purgeable", "soft_delete": true}
    POST /_test/apps          {"client_id", "client_secret"?, "tenant"?} or a list -> with
                              generated secrets; re-seeding replaces
    POST /_test/federated     {"client_id", "token"?, "tenant"?, "expires_at"?} a federated
                              token (the client assertion) accepted for that app -> {"token"}
    POST /_test/identities    {"client_id": null (system-assigned) | "...", "principal"?}
                              a managed identity usable through IMDS and App Service
    POST /_test/access        {"principal": client id, "deny": ["get", "set", ...]} forbid
                              operations (403 Forbidden/AccessDenied)
    GET  /_test/vault         every secret with every version, values included, and
                              deleted state: {"secrets": {name: {"deleted", "versions": [..]}}}
    POST /_test/vault/{name}  seed a version: {"value", "contentType"?, "tags"?, "attributes"?}
                              -> the bundle (no auth, not logged)
    POST /_test/vault/{name}/delete   soft-delete the secret (it then answers 404 to GET and
                              409 ObjectIsDeletedButRecoverable to PUT)
    GET  /_test/tokens        issued access tokens {"tokens": [{"access_token", "principal",
                              "kind", "resource", "expires_at"}]}
    DELETE /_test/tokens      invalidate every issued access token (next use: 401)
Request log `auth` notes: "none", "bearer", "client_secret", "client_assertion", "imds",
"app_service".
"""
import json
import os
import re
import secrets
import sys
import threading
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import ApiError, json_response, route  # noqa: E402

API_VERSIONS = {"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6"}
NAME_RE = re.compile(r"[0-9a-zA-Z-]{1,127}")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_CONFIG = {"tenant": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                  "resource": "https://vault.azure.net", "token_lifetime": 3600,
                  "challenge_authority": None, "challenge_resource": None,
                  "challenge_scope": False, "recovery_level": "Recoverable+Purgeable",
                  "soft_delete": True}
KV_CODES = {400: "BadParameter", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 409: "Conflict", 429: "Throttled",
            500: "InternalServerError", 503: "ServiceUnavailable"}
OAUTH_CODES = {400: "invalid_request", 401: "invalid_client", 403: "unauthorized_client",
               429: "temporarily_unavailable", 503: "temporarily_unavailable"}
TOKEN_PATH_RE = re.compile(r"/[^/]+/oauth2/v2\.0/token")
MSI_PATHS = ("/metadata/identity/oauth2/token", "/msi/token")


def rand(n=40):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


def aadsts(code, text):
    """Entra's error_description: the message, then trace lines (CRLF-separated)."""
    return (f"AADSTS{code}: {text}\r\nTrace ID: {uuid.uuid4()}\r\n"
            f"Correlation ID: {uuid.uuid4()}\r\nTimestamp: 2026-11-28 07:00:00Z")


class OAuthError(ApiError):
    def __init__(self, status, code, aad, text):
        super().__init__(status, code, aadsts(aad, text))
        self.aad = aad


class Azure(common.Service):
    name = "azure"

    def __init__(self, args=None):
        super().__init__(args)
        self.plain_port = None
        if args is not None and not getattr(args, "plain", False):
            self._start_plain(args)

    def _start_plain(self, args):
        """IMDS and App Service speak plain http: a second listener, same state."""
        srv = common.Server((args.host, 0), self, None, args.verbose)
        self.plain_port = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5},
                         daemon=True).start()

    def reset_state(self):
        self.config = dict(DEFAULT_CONFIG)
        self.apps = {}            # client_id -> {"client_id", "client_secret", "tenant"}
        self.federated = {}       # assertion -> {"client_id", "tenant", "expires_at"}
        self.identities = {}      # client_id or "" (system) -> {"client_id", "principal"}
        self.denied = {}          # principal -> set(ops)
        self.tokens = {}          # access token -> {"principal", "kind", "resource", ...}
        self.vault = {}           # name -> {"deleted": None|time, "versions": [bundle...]}
        self.identity_header = rand(32)

    # ------------------------------------------------------------ error shapes
    @staticmethod
    def _is_oauth(req):
        return TOKEN_PATH_RE.fullmatch(req.path) is not None or req.path in MSI_PATHS

    def error_response(self, req, status, code, message, headers=None):
        if self._is_oauth(req):
            body = {"error": code, "error_description": message}
            m = re.match(r"AADSTS(\d+)", message or "")
            if m:
                body.update(error_codes=[int(m.group(1))], trace_id=str(uuid.uuid4()),
                            correlation_id=str(uuid.uuid4()), timestamp="2026-11-28 07:00:00Z")
            return json_response(status, body, dict(headers or {}, **{"Cache-Control": "no-store"}))
        outer, _, inner = code.partition("/")
        err = {"code": outer, "message": message}
        if inner:
            err["innererror"] = {"code": inner}
        return json_response(status, {"error": err}, headers)

    def error_code_for_status(self, req, status):
        if self._is_oauth(req):
            return OAUTH_CODES.get(status, "server_error")
        return KV_CODES.get(status, "InternalServerError" if status >= 500 else "BadRequest")

    def secret_values(self):
        out = []
        for a in self.apps.values():
            out.append((f"client_secret of app {a['client_id']}", a["client_secret"]))
        for tok, f in self.federated.items():
            out.append((f"federated token of {f['client_id']}", tok))
        for tok, t in self.tokens.items():
            out.append((f"access token of {t['principal']} ({t['kind']})", tok))
        out.append(("App Service identity header", self.identity_header))
        for name, s in self.vault.items():
            for b in s["versions"]:
                out.append((f"Key Vault {name}/{self.version_of(b)}", self.token_in(b["value"])))
        return out

    @staticmethod
    def token_in(value):
        """The token a stored value holds: the "token" field of a JSON object, else all."""
        try:
            v = json.loads(value)
            if isinstance(v, dict) and isinstance(v.get("token"), str):
                return v["token"]
        except ValueError:
            pass
        return value

    # ------------------------------------------------------------ issuing tokens
    def issue(self, principal, kind, resource, tenant):
        lifetime = int(self.config["token_lifetime"])
        tok = "eyJ0eXAiOiJKV1QifQ." + rand(60)
        now = self.now()
        self.tokens[tok] = {"principal": principal, "kind": kind, "resource": resource,
                            "tenant": tenant, "issued_at": now, "expires_at": now + lifetime}
        return tok, lifetime, now

    @route("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token")
    def entra_token(self, req):
        tenant = req.params["tenant"]
        try:
            form = req.form()
        except ApiError:
            raise OAuthError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'grant_type'.")
        if form.get("grant_type") != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", 70003,
                             "The app requested an unsupported grant type.")
        cid, scope = form.get("client_id"), form.get("scope") or ""
        if not cid:
            raise OAuthError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'client_id'.")
        if not scope.endswith("/.default") or len(scope) <= len("/.default"):
            raise OAuthError(400, "invalid_scope", 1002012,
                             f"The provided value for scope {scope} is not valid. Client "
                             "credential flows must have a scope value with /.default suffixed.")
        app = self.apps.get(cid)
        if app is None or app["tenant"] != tenant:
            raise OAuthError(400, "unauthorized_client", 700016,
                             f"Application with identifier '{cid}' was not found in the "
                             f"directory '{tenant}'.")
        kind = self.client_auth(req, form, app)
        tok, lifetime, _ = self.issue(cid, kind, scope[:-len("/.default")], tenant)
        return json_response(200, {"token_type": "Bearer", "expires_in": lifetime,
                                   "ext_expires_in": lifetime, "access_token": tok},
                             {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def client_auth(self, req, form, app):
        if "client_secret" in form:
            req.auth = "client_secret"
            if not secrets.compare_digest(form["client_secret"].encode(),
                                          app["client_secret"].encode()):
                raise OAuthError(401, "invalid_client", 7000215,
                                 "Invalid client secret provided. Ensure the secret being sent "
                                 "in the request is the client secret value, not the client "
                                 f"secret ID, for a secret added to app '{app['client_id']}'.")
            return "client_secret"
        if "client_assertion" in form:
            req.auth = "client_assertion"
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise OAuthError(400, "invalid_request", 50027,
                                 "client_assertion_type must be " + ASSERTION_TYPE)
            fed = self.federated.get(form["client_assertion"])
            if fed is None or fed["client_id"] != app["client_id"] or fed["tenant"] != app["tenant"]:
                raise OAuthError(401, "invalid_client", 70021,
                                 "No matching federated identity record found for presented "
                                 "assertion.")
            if fed["expires_at"] is not None and fed["expires_at"] <= self.now():
                raise OAuthError(400, "invalid_client", 700024,
                                 "Client assertion is not within its valid time range.")
            return "client_assertion"
        req.auth = "none"
        raise OAuthError(401, "invalid_client", 7000218,
                         "The request body must contain the following parameter: "
                         "'client_assertion' or 'client_secret'.")

    @route("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration")
    def openid_configuration(self, req):
        base = f"https://{req.headers.get('Host')}/{req.params['tenant']}"
        return {"token_endpoint": base + "/oauth2/v2.0/token",
                "authorization_endpoint": base + "/oauth2/v2.0/authorize",
                "issuer": base + "/v2.0", "token_endpoint_auth_methods_supported":
                    ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "tenant_region_scope": None}

    # ------------------------------------------------------------ managed identity
    def msi_identity(self, req):
        if not req.query.get("api-version"):
            raise ApiError(400, "invalid_request", "Required query variable 'api-version' is missing")
        resource = req.query.get("resource")
        if not resource:
            raise ApiError(400, "invalid_request", "Required query variable 'resource' is missing")
        ident = self.identities.get(req.query.get("client_id") or "")
        if ident is None:
            raise ApiError(400, "invalid_request", "Identity not found")
        return ident, resource.rstrip("/")

    @route("GET", r"/metadata/identity/oauth2/token")
    def imds_token(self, req):
        req.auth = "imds"
        if (req.headers.get("Metadata") or "").lower() != "true":
            raise ApiError(400, "invalid_request", "Required metadata header not specified")
        if req.headers.get("X-Forwarded-For"):
            raise ApiError(400, "invalid_request", "Request must not carry X-Forwarded-For")
        if req.query.get("api-version") not in (None, "2018-02-01", "2019-08-01", "2021-02-01"):
            raise ApiError(400, "invalid_request", "Invalid api-version")
        ident, resource = self.msi_identity(req)
        tok, lifetime, now = self.issue(ident["principal"], "imds", resource, self.config["tenant"])
        return json_response(200, {"access_token": tok, "refresh_token": "",
                                   "expires_in": str(lifetime), "expires_on": str(int(now + lifetime)),
                                   "ext_expires_in": str(lifetime), "not_before": str(int(now)),
                                   "resource": resource, "token_type": "Bearer",
                                   "client_id": ident["client_id"]})

    @route("GET", r"/msi/token")
    def app_service_token(self, req):
        req.auth = "app_service"
        hdr = req.headers.get("X-IDENTITY-HEADER") or ""
        if not secrets.compare_digest(hdr.encode(), self.identity_header.encode()):
            return json_response(401, {"statusCode": 401,
                                       "message": "Unauthorized: missing or wrong X-IDENTITY-HEADER"})
        if req.query.get("api-version") != "2019-08-01":
            raise ApiError(400, "invalid_request", "api-version must be 2019-08-01")
        ident, resource = self.msi_identity(req)
        tok, lifetime, now = self.issue(ident["principal"], "app_service", resource,
                                        self.config["tenant"])
        return json_response(200, {"access_token": tok, "expires_on": str(int(now + lifetime)),
                                   "resource": resource, "token_type": "Bearer",
                                   "client_id": ident["client_id"]})

    # ------------------------------------------------------------ Key Vault plumbing
    def challenge(self, req):
        authority = self.config["challenge_authority"] or \
            f"https://{req.headers.get('Host', '127.0.0.1')}/{self.config['tenant']}"
        resource = self.config["challenge_resource"] or self.config["resource"]
        value = f'Bearer authorization="{authority}", resource="{resource}"'
        if self.config["challenge_scope"]:
            value += f', scope="{resource}/.default"'
        return {"WWW-Authenticate": value}

    def kv_auth(self, req, op):
        """The principal behind the bearer token; 401 with the challenge otherwise."""
        api = req.query.get("api-version")
        if api not in API_VERSIONS:
            raise ApiError(400, "BadParameter",
                           f"The specified version ({api}) is not recognized. Consider using "
                           f"the latest supported version ({max(API_VERSIONS)}).")
        bearer = req.bearer()
        if bearer is None:
            req.auth = "none"
            raise ApiError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.",
                           self.challenge(req))
        req.auth = "bearer"
        t = self.tokens.get(bearer)
        if t is None:
            raise ApiError(401, "Unauthorized", "AKV10032: Invalid issuer or unknown token.",
                           self.challenge(req))
        if t["expires_at"] <= self.now():
            raise ApiError(401, "Unauthorized", "AKV10013: Token expired.", self.challenge(req))
        if t["resource"] != self.config["resource"].rstrip("/"):
            raise ApiError(401, "Unauthorized", "AKV10022: Invalid audience.", self.challenge(req))
        if op in self.denied.get(t["principal"], ()):
            raise ApiError(403, "Forbidden/AccessDenied",
                           f"The user, group or application 'appid={t['principal']}' does not "
                           f"have secrets {op} permission on key vault.")
        return t["principal"]

    def base(self, req):
        return f"https://{req.headers.get('Host', '127.0.0.1')}"

    @staticmethod
    def version_of(b):
        return b["id"].rsplit("/", 1)[1]

    def bundle_out(self, req, name, b, with_value=True, with_version=True):
        out = {"id": f"{self.base(req)}/secrets/{name}" + (f"/{self.version_of(b)}" if with_version else ""),
               "attributes": dict(b["attributes"])}
        if with_value:
            out["value"] = b["value"]
        if b.get("contentType") is not None:
            out["contentType"] = b["contentType"]
        if b.get("tags"):
            out["tags"] = dict(b["tags"])
        return out

    def check_name(self, name):
        if not NAME_RE.fullmatch(name):
            raise ApiError(400, "BadParameter",
                           "The request URI contains an invalid name: " + name[:130])

    def live(self, name, version=None):
        """The bundle of name (latest, or version): 404 SecretNotFound otherwise."""
        s = self.vault.get(name)
        if s is None or s["deleted"] is not None or not s["versions"]:
            raise ApiError(404, "SecretNotFound",
                           f"A secret with (name/id) {name} was not found in this key vault. If "
                           "you recently deleted this secret you may be able to recover it using "
                           "the correct recovery command.")
        if not version:
            return s["versions"][-1]
        for b in s["versions"]:
            if self.version_of(b) == version:
                return b
        raise ApiError(404, "SecretNotFound",
                       f"A secret with (name/id) {name}/{version} was not found in this key vault.")

    def new_version(self, name, body):
        """Validate a Set Secret body and store a new version (raises on bad input)."""
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise ApiError(400, "BadParameter", "Property 'value' is required and must be a string.")
        attrs_in = body.get("attributes") or {}
        tags = body.get("tags") or {}
        ctype = body.get("contentType")
        if not isinstance(attrs_in, dict) or not isinstance(tags, dict) or \
                (ctype is not None and not isinstance(ctype, str)):
            raise ApiError(400, "BadParameter", "attributes and tags must be objects")
        if len(tags) > 15 or any(not isinstance(v, str) or len(k) > 512 or len(v) > 256
                                 for k, v in tags.items()):
            raise ApiError(400, "BadParameter", "Tags: at most 15, string values up to 256 chars.")
        for k in ("exp", "nbf"):
            if k in attrs_in and attrs_in[k] is not None and \
                    (isinstance(attrs_in[k], bool) or not isinstance(attrs_in[k], int)):
                raise ApiError(400, "BadParameter", f"attributes.{k} must be an integer (unix time)")
        if len(body["value"].encode()) > 25 * 1024:
            raise ApiError(400, "BadParameter", "Secret value too large (25 KB maximum).")
        s = self.vault.setdefault(name, {"deleted": None, "versions": []})
        if s["deleted"] is not None:
            raise ApiError(409, "Conflict/ObjectIsDeletedButRecoverable",
                           f"Secret {name} is currently in a deleted but recoverable state, and "
                           "its name cannot be reused; in this state, the secret can only be "
                           "recovered or purged.")
        now = int(self.now())
        attrs = {"enabled": bool(attrs_in.get("enabled", True)), "created": now, "updated": now,
                 "recoveryLevel": self.config["recovery_level"], "recoverableDays": 90}
        for k in ("exp", "nbf"):
            if attrs_in.get(k) is not None:
                attrs[k] = attrs_in[k]
        b = {"id": f"/secrets/{name}/{uuid.uuid4().hex}", "value": body["value"],
             "contentType": ctype, "attributes": attrs, "tags": {k: v for k, v in tags.items()}}
        s["versions"].append(b)
        return b

    # ------------------------------------------------------------ Key Vault API
    @route("PUT", r"/secrets/(?P<name>[^/]+)")
    def set_secret(self, req):
        self.kv_auth(req, "set")
        name = req.params["name"]
        self.check_name(name)
        try:
            body = req.json()
        except ApiError as e:
            raise ApiError(400, "BadParameter", e.message)
        return self.bundle_out(req, name, self.new_version(name, body))

    @route("GET", r"/secrets/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?")
    def get_secret(self, req):
        self.kv_auth(req, "get")
        name = req.params["name"]
        if req.params.get("version") == "versions":
            return self.list_versions(req, name)
        self.check_name(name)
        b = self.live(name, req.params.get("version"))
        if not b["attributes"]["enabled"]:
            raise ApiError(403, "Forbidden/SecretDisabled",
                           "Operation get is not allowed on a disabled secret.")
        return self.bundle_out(req, name, b)

    def list_versions(self, req, name):
        self.live(name)
        return {"value": [self.bundle_out(req, name, b, with_value=False)
                          for b in self.vault[name]["versions"]], "nextLink": None}

    @route("GET", r"/secrets/?")
    def list_secrets(self, req):
        self.kv_auth(req, "list")
        out = []
        for name, s in sorted(self.vault.items()):
            if s["deleted"] is None and s["versions"]:
                out.append(self.bundle_out(req, name, s["versions"][-1], with_value=False,
                                           with_version=False))
        return {"value": out, "nextLink": None}

    @route("PATCH", r"/secrets/(?P<name>[^/]+)/(?P<version>[^/]+)")
    def update_secret(self, req):
        self.kv_auth(req, "set")
        b = self.live(req.params["name"], req.params["version"])
        body = req.json()
        if not isinstance(body, dict):
            raise ApiError(400, "BadParameter", "body must be an object")
        if "contentType" in body:
            b["contentType"] = body["contentType"]
        if isinstance(body.get("tags"), dict):
            b["tags"] = dict(body["tags"])
        for k, v in (body.get("attributes") or {}).items():
            if k in ("enabled", "exp", "nbf"):
                b["attributes"][k] = v
        b["attributes"]["updated"] = int(self.now())
        return self.bundle_out(req, req.params["name"], b, with_value=False)

    def deleted_out(self, req, name):
        s = self.vault[name]
        out = self.bundle_out(req, name, s["versions"][-1], with_value=False)
        out.update(recoveryId=f"{self.base(req)}/deletedsecrets/{name}",
                   deletedDate=int(s["deleted"]), scheduledPurgeDate=int(s["deleted"]) + 90 * 86400)
        return out

    def soft_delete(self, name):
        self.live(name)
        if self.config["soft_delete"]:
            self.vault[name]["deleted"] = self.now()
        else:
            del self.vault[name]

    @route("DELETE", r"/secrets/(?P<name>[^/]+)")
    def delete_secret(self, req):
        self.kv_auth(req, "delete")
        name = req.params["name"]
        b = self.live(name)
        self.soft_delete(name)
        if name in self.vault:
            return self.deleted_out(req, name)
        return self.bundle_out(req, name, b, with_value=False)

    def deleted(self, name):
        s = self.vault.get(name)
        if s is None or s["deleted"] is None:
            raise ApiError(404, "SecretNotFound", f"Deleted Secret not found: {name}")
        return s

    @route("GET", r"/deletedsecrets/(?P<name>[^/]+)")
    def get_deleted(self, req):
        self.kv_auth(req, "get")
        self.deleted(req.params["name"])
        return self.deleted_out(req, req.params["name"])

    @route("POST", r"/deletedsecrets/(?P<name>[^/]+)/recover")
    def recover_deleted(self, req):
        self.kv_auth(req, "recover")
        s = self.deleted(req.params["name"])
        s["deleted"] = None
        return self.bundle_out(req, req.params["name"], s["versions"][-1], with_value=False)

    @route("DELETE", r"/deletedsecrets/(?P<name>[^/]+)")
    def purge_deleted(self, req):
        self.kv_auth(req, "purge")
        self.deleted(req.params["name"])
        del self.vault[req.params["name"]]
        return common.Response(204)

    # ------------------------------------------------------------ control
    @route("GET", r"/_test/info")
    def ctl_info(self, req):
        return {"plain_port": self.plain_port,
                "plain_url": f"http://127.0.0.1:{self.plain_port}" if self.plain_port else None,
                "tenant": self.config["tenant"], "resource": self.config["resource"],
                "identity_header": self.identity_header, "config": dict(self.config)}

    @route("POST", r"/_test/config")
    def ctl_config(self, req):
        body = req.json()
        if not isinstance(body, dict) or set(body) - set(DEFAULT_CONFIG):
            raise ApiError(400, "invalid_request", f"keys: {sorted(DEFAULT_CONFIG)}")
        self.config.update(body)
        return {"config": dict(self.config)}

    def _list(self, body):
        return body if isinstance(body, list) else [body]

    @route("POST", r"/_test/apps")
    def ctl_apps(self, req):
        out = []
        for spec in self._list(req.json()):
            if not isinstance(spec, dict) or not spec.get("client_id"):
                raise ApiError(400, "invalid_request", "an app needs client_id")
            app = {"client_id": spec["client_id"],
                   "client_secret": spec.get("client_secret") or rand(40),
                   "tenant": spec.get("tenant") or self.config["tenant"]}
            self.apps[app["client_id"]] = app
            out.append(dict(app))
        return {"apps": out}

    @route("POST", r"/_test/federated")
    def ctl_federated(self, req):
        spec = req.json()
        if not isinstance(spec, dict) or spec.get("client_id") not in self.apps:
            raise ApiError(400, "invalid_request", "client_id must be a seeded app")
        tok = spec.get("token") or ("eyJhbGciOiJSUzI1NiJ9.fed-" + rand(50))
        self.federated[tok] = {"client_id": spec["client_id"],
                               "tenant": spec.get("tenant") or self.apps[spec["client_id"]]["tenant"],
                               "expires_at": spec.get("expires_at")}
        return {"token": tok}

    @route("POST", r"/_test/identities")
    def ctl_identities(self, req):
        out = []
        for spec in self._list(req.json()):
            cid = (spec or {}).get("client_id") or ""
            ident = {"client_id": cid or str(uuid.uuid4()),
                     "principal": spec.get("principal") or cid or "system-assigned"}
            self.identities[cid] = ident
            out.append(ident)
        return {"identities": out}

    @route("POST", r"/_test/access")
    def ctl_access(self, req):
        spec = req.json()
        self.denied[spec["principal"]] = set(spec.get("deny") or [])
        return {"denied": {k: sorted(v) for k, v in self.denied.items()}}

    @route("GET", r"/_test/vault")
    def ctl_vault(self, req):
        return {"secrets": {name: {"deleted": s["deleted"],
                                   "versions": [self.bundle_out(req, name, b) for b in s["versions"]]}
                            for name, s in self.vault.items()}}

    @route("POST", r"/_test/vault/(?P<name>[^/]+)")
    def ctl_vault_seed(self, req):
        self.check_name(req.params["name"])
        return self.bundle_out(req, req.params["name"], self.new_version(req.params["name"], req.json()))

    @route("POST", r"/_test/vault/(?P<name>[^/]+)/delete")
    def ctl_vault_delete(self, req):
        self.soft_delete(req.params["name"])
        return {"deleted": req.params["name"]}

    @route("GET", r"/_test/tokens")
    def ctl_tokens(self, req):
        return {"tokens": [dict(t, access_token=k) for k, t in self.tokens.items()]}

    @route("DELETE", r"/_test/tokens")
    def ctl_tokens_clear(self, req):
        self.tokens.clear()
        return {"tokens": []}


if __name__ == "__main__":
    common.main(Azure)
