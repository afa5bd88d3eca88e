#!/usr/bin/python3
"""Fake HashiCorp Vault for patrol's tests, after Vault's documented HTTP API.

    /usr/bin/python3 tests/servers/vault.py --cert server.pem --key server-key.pem \
            [--port-file FILE] [--root-token TOKEN]

Everything of tests/servers/common.py applies (faults, log, clock, secrets,
reset).  Every API answer has Vault's envelope; errors are {"errors": [...]}
with Vault's own messages and statuses, among them:
    400 "check-and-set parameter did not match the current version"
    400 "check-and-set parameter required for this call"
    400 "invalid role or secret ID"                  (AppRole login)
    403 "permission denied"                          (no/invalid/expired token, ACL)
    404 {"errors": []}                               (no such secret or version)
    404 data null + metadata                         (KV v2 version deleted/destroyed)
    404 "no handler for route \"...\". route entry not found."   (no such mount)

API implemented (all under /v1/, relative to the namespace of the
X-Vault-Namespace header and/or a namespace prefix of the path):
    KV v2 mount M:  GET/POST/PUT/PATCH/DELETE M/data/P (?version=N, options.cas),
                    POST M/delete/P, M/undelete/P, M/destroy/P {"versions": [..]},
                    GET/POST/PUT/PATCH/DELETE/LIST M/metadata/P (custom_metadata,
                    max_versions, cas_required, delete_version_after), GET/POST M/config
    KV v1 mount M:  GET/POST/PUT/DELETE/LIST M/P
    auth:           POST auth/<approle mount>/login {"role_id","secret_id"}
                    POST auth/<kubernetes mount>/login {"role","jwt"}
                    GET auth/token/lookup-self, POST auth/token/renew-self,
                    POST auth/token/revoke-self
    sys:            GET sys/health, GET sys/mounts
Tokens: X-Vault-Token or "Authorization: Bearer".  A token belongs to a
namespace and reaches it and its children.  Policies are Vault-like ACL rules
{"path": "secret/data/onplana/*", "capabilities": ["create","read","update",
"delete","list","patch","deny"]} (exact path, or a trailing "*" for a prefix;
"deny" wins); KV writes need "create" when the key does not exist, "update"
when it does.  Every namespace has two ready policies: "patrol-rw" (everything
but sys/) and "patrol-ro" (read and list).  Login tokens expire after the
role's token_ttl on the service clock (/_test/clock moves it).

Initial state (and after /_test/reset): the root namespace "" with a KV v2
mount "secret", auth mounts "approle" and "kubernetes" without roles, and the
root token (--root-token, default hvs.patrol-test-root-token).

Control API (no auth), besides common.py's:
    POST /_test/namespaces {"path": "team-a"}                 create (parents too)
    POST /_test/mounts {"namespace": "", "path": "kv1", "version": 1|2,
                        "max_versions": 0, "cas_required": false}   (re)create a KV mount
    POST /_test/policies {"namespace": "", "name": "p", "rules": [{"path","capabilities"}]}
    POST /_test/tokens {"namespace": "", "policies": ["patrol-ro"], "ttl": 0, "id": optional}
            -> {"token", "accessor"}                          a token (ttl 0: no expiry)
    POST /_test/approle {"namespace": "", "mount": "approle", "role_name": "patrol",
                         "role_id": opt, "secret_id": opt, "policies": ["patrol-rw"],
                         "token_ttl": 3600}  -> {"role_id", "secret_id"}
            adds the secret_id to the role (earlier ones stay valid unless "replace": true)
    POST /_test/kubernetes {"namespace": "", "mount": "kubernetes", "role": "patrol",
                            "jwt": "...", "policies": ["patrol-rw"], "token_ttl": 3600}
            the JWT values that log in to that role (added; "replace": true to reset)
    POST /_test/revoke {"token": T} | {"accessor": A} | {"source": "login" | "all"}
            revoke tokens server-side ("all" keeps the root token) -> {"revoked": n}
    POST /_test/kv {"namespace": "", "mount": "secret", "path": "p", "data": {...},
                    "custom_metadata": {...} optional}  write a version without auth/CAS
    GET  /_test/kv?namespace=&mount=secret&path=p   the stored record: KV v2
            {"current_version", "versions": {"N": {"data", "deletion_time",
            "destroyed", "created_time"}}, "custom_metadata", ...}; KV v1 {"data"}
            404 when absent.
    GET  /_test/tokens   [{"accessor","namespace","policies","source","expire_time",
                           "revoked"}] (no token values)
"""
import copy
import datetime
import re
import secrets
import uuid

import common
from common import ApiError, json_response, route

DEFAULT_ROOT_TOKEN = "hvs.patrol-test-root-token"
KV1_LEASE = 2764800        # Vault's default 32 days, advisory on KV v1 reads
CAPABILITIES = {"create", "read", "update", "delete", "list", "patch", "sudo", "deny"}
CM_PREFIX = "custom_metadata validation failed"
V2_BAD_PATH = ("Invalid path for a versioned K/V secrets engine. See the API docs for the "
               "appropriate API endpoints to use. If using the Vault CLI, use 'vault kv get' "
               "for this operation.")
FAULT_MESSAGES = {429: "rate limit quota exceeded", 503: "Vault is sealed",
                  500: "internal error", 502: "bad gateway"}
READY_POLICIES = {
    "patrol-rw": [{"path": "*", "capabilities": ["create", "read", "update", "delete",
                                                 "list", "patch"]},
                  {"path": "sys/*", "capabilities": ["deny"]}],
    "patrol-ro": [{"path": "*", "capabilities": ["read", "list"]}],
}


def denied():
    return ApiError(403, "permission_denied", "permission denied")


def multierror(msgs):
    """Go's hashicorp/go-multierror text, which Vault puts in errors[] as is."""
    n = len(msgs)
    head = "1 error occurred:" if n == 1 else f"{n} errors occurred:"
    return head + "\n" + "".join(f"\t* {m}\n" for m in msgs) + "\n"


def join(*parts):
    out = []
    for p in parts:
        if p:
            p = p.strip("/")
            if p:
                out.append(p)
    return "/".join(out)


class Namespace:
    def __init__(self, path):
        self.path = path
        self.mounts = {}                 # "secret" -> Mount
        self.auth = {}                   # "approle" -> {"type", "roles"}
        self.policies = copy.deepcopy(READY_POLICIES)


class Mount:
    def __init__(self, path, version, max_versions=0, cas_required=False):
        self.path, self.version = path, version
        self.config = {"max_versions": max_versions, "cas_required": cas_required,
                       "delete_version_after": "0s"}
        self.keys = {}                   # v2: path -> metadata record; v1: path -> dict


class Token:
    def __init__(self, tid, namespace, policies, ttl, source, now, meta=None, path="auth/token/create"):
        self.id = tid
        self.accessor = secrets.token_hex(12)
        self.namespace, self.policies, self.source = namespace, list(policies), source
        self.ttl = int(ttl or 0)
        self.issued = now
        self.expire = now + self.ttl if self.ttl > 0 else None
        self.meta, self.path = meta or {}, path
        self.revoked = False

    def valid(self, now):
        return not self.revoked and (self.expire is None or now < self.expire)


class Vault(common.Service):
    name = "vault"

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--root-token", default=DEFAULT_ROOT_TOKEN,
                            help="the root token's value")

    # ------------------------------------------------------------ state

    def reset_state(self):
        self.root_token = getattr(self.args, "root_token", None) or DEFAULT_ROOT_TOKEN
        self.namespaces = {}
        root = self.namespace("")
        root.mounts["secret"] = Mount("secret", 2)
        root.auth["approle"] = {"type": "approle", "roles": {}}
        root.auth["kubernetes"] = {"type": "kubernetes", "roles": {}}
        self.tokens = {}
        self.tokens[self.root_token] = Token(self.root_token, "", ["root"], 0, "root", self.now())

    def namespace(self, path, create=True):
        path = path.strip("/")
        if path in self.namespaces or not create:
            return self.namespaces.get(path)
        if path:
            self.namespace(path.rpartition("/")[0])
        ns = self.namespaces[path] = Namespace(path)
        return ns

    def secret_values(self):
        out = [("vault root token", self.root_token)]
        out += [(f"vault token ({t.source})", t.id) for t in self.tokens.values() if t.source != "root"]
        for ns in self.namespaces.values():
            for mname, am in ns.auth.items():
                for rname, role in am["roles"].items():
                    out += [(f"approle secret_id {mname}/{rname}", s) for s in role.get("secret_ids", ())]
                    out += [(f"kubernetes jwt {mname}/{rname}", j) for j in role.get("jwts", ())]
            for m in ns.mounts.values():
                for key, rec in m.keys.items():
                    datas = ([v["data"] for v in rec["versions"].values()] if m.version == 2
                             else [rec["data"]])
                    for d in datas:
                        for k, v in (d or {}).items():
                            if k == "token" and isinstance(v, str):
                                out.append((f"kv token {join(ns.path, m.path, key)}", v))
        return out

    # ------------------------------------------------------------ answers

    def error_response(self, req, status, code, message, headers=None):
        if message == "injected fault":
            message = FAULT_MESSAGES.get(status, message)
        return json_response(status, {"errors": [message] if message else []}, headers)

    def envelope(self, data=None, auth=None, lease=0, warnings=None):
        return {"request_id": common.uuid4_str(), "lease_id": "", "renewable": False,
                "lease_duration": lease, "data": data, "wrap_info": None,
                "warnings": warnings, "auth": auth, "mount_type": ""}

    def ts(self, t=None):
        t = self.now() if t is None else t
        return datetime.datetime.fromtimestamp(t, datetime.timezone.utc) \
                       .strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    # ------------------------------------------------------------ routing

    @route("GET", r"/v1/(?P<rest>.*)")
    def api_get(self, req):
        return self.api(req, "LIST" if req.query.get("list") in ("true", "1") else "GET")

    @route("POST", r"/v1/(?P<rest>.*)")
    def api_post(self, req):
        return self.api(req, "POST")

    @route("PUT", r"/v1/(?P<rest>.*)")
    def api_put(self, req):
        return self.api(req, "POST")          # Vault takes PUT and POST as synonyms

    @route("PATCH", r"/v1/(?P<rest>.*)")
    def api_patch(self, req):
        return self.api(req, "PATCH")

    @route("DELETE", r"/v1/(?P<rest>.*)")
    def api_delete(self, req):
        return self.api(req, "DELETE")

    @route("LIST", r"/v1/(?P<rest>.*)")
    def api_list(self, req):
        return self.api(req, "LIST")

    def resolve(self, req):
        """(namespace, path inside it): the header, then any namespace prefix of the path."""
        hdr = (req.headers.get("X-Vault-Namespace") or "").strip("/")
        return self.remembered(("resolve", hdr, req.params["rest"]), self._resolve, req, hdr)

    def _resolve(self, req, hdr):
        ns = self.namespace(hdr, create=False)
        if ns is None:
            raise ApiError(404, "not_found", f'no handler for route "{req.params["rest"]}". '
                                              "route entry not found.")
        segs = req.params["rest"].split("/")
        while len(segs) > 1 and join(ns.path, segs[0]) in self.namespaces:
            ns = self.namespaces[join(ns.path, segs[0])]
            segs.pop(0)
        return ns, "/".join(segs)

    def api(self, req, method):
        ns, p = self.resolve(req)
        if method == "GET" and p == "sys/health":
            req.auth = "none"
            return {"initialized": True, "sealed": False, "standby": False,
                    "performance_standby": False, "version": "1.15.6+fake",
                    "cluster_name": "patrol-fake", "server_time_utc": int(self.now())}
        if method == "POST" and p.startswith("auth/") and p.endswith("/login"):
            return self.login(req, ns, p[len("auth/"):-len("/login")])
        tok = self.authenticate(req, ns)
        if p.startswith("auth/token/"):
            return self.token_self(req, tok, p[len("auth/token/"):], method)
        if p == "sys/mounts" and method == "GET":
            self.authorize(tok, ns, p, "read")
            return self.envelope({f"{m.path}/": {"type": "kv", "options": {"version": str(m.version)}}
                                  for m in ns.mounts.values()})
        mount, sub = self.find_mount(ns, p)
        if mount.version == 1:
            return self.kv1(req, tok, ns, mount, sub, method)
        return self.kv2(req, tok, ns, mount, sub, method)

    def find_mount(self, ns, p):
        return self.remembered(("mount", ns.path, p), self._find_mount, ns, p)

    def _find_mount(self, ns, p):
        best = None
        for path, m in ns.mounts.items():
            if (p == path or p.startswith(path + "/")) and (best is None or len(path) > len(best.path)):
                best = m
        if best is None:
            raise ApiError(404, "not_found", f'no handler for route "{join(ns.path, p)}". '
                                              "route entry not found.")
        return best, p[len(best.path) + 1:]

    # ------------------------------------------------------------ tokens and ACL

    def authenticate(self, req, ns):
        value = req.headers.get("X-Vault-Token") or req.bearer()
        tok = self.tokens.get(value) if value else None
        if tok is None or not tok.valid(self.now()):
            req.auth = "invalid" if value else "none"
            raise denied()
        req.auth = "root" if tok.source == "root" else f"token:{tok.source}"
        # A token reaches its own namespace and those below it.
        if not (tok.namespace == "" or ns.path == tok.namespace or ns.path.startswith(tok.namespace + "/")):
            raise denied()
        return tok

    def capabilities(self, tok, ns, p):
        if "root" in tok.policies:
            return CAPABILITIES - {"deny"}
        # Policies live in the token's namespace; paths are relative to it.
        home = self.namespaces.get(tok.namespace)
        rel = join(ns.path[len(tok.namespace):], p)
        caps = set()
        for name in tok.policies:
            for rule in (home.policies.get(name, []) if home else []):
                rp = rule["path"]
                if rp == rel or (rp.endswith("*") and rel.startswith(rp[:-1])):
                    caps.update(rule["capabilities"])
        return set() if "deny" in caps else caps

    def authorize(self, tok, ns, p, cap):
        caps = self.remembered(("caps", tuple(tok.policies), tok.namespace, ns.path, p),
                               self.capabilities, tok, ns, p)
        if cap not in caps:
            raise denied()

    def token_self(self, req, tok, what, method):
        now = self.now()
        if what == "lookup-self" and method in ("GET", "POST"):
            ttl = max(0, int(tok.expire - now)) if tok.expire else 0
            return self.envelope({
                "accessor": tok.accessor, "creation_time": int(tok.issued),
                "creation_ttl": tok.ttl, "display_name": tok.source, "entity_id": "",
                "expire_time": self.ts(tok.expire) if tok.expire else None,
                "explicit_max_ttl": 0, "id": tok.id, "issue_time": self.ts(tok.issued),
                "meta": tok.meta or None, "num_uses": 0, "orphan": True, "path": tok.path,
                "policies": tok.policies, "renewable": tok.expire is not None, "ttl": ttl,
                "type": "service", "namespace_path": tok.namespace + "/" if tok.namespace else ""})
        if what == "renew-self" and method == "POST":
            body = req.json(required=False) or {}
            inc = parse_duration(body.get("increment")) or tok.ttl
            if tok.expire is not None:
                tok.expire = now + inc
            return self.envelope(auth=self.auth_block(tok))
        if what == "revoke-self" and method == "POST":
            tok.revoked = True
            return None
        raise ApiError(405, "unsupported_operation", "unsupported operation")

    def auth_block(self, tok):
        return {"client_token": tok.id, "accessor": tok.accessor,
                "policies": ["default"] + tok.policies, "token_policies": ["default"] + tok.policies,
                "identity_policies": None, "metadata": tok.meta or None,
                "lease_duration": tok.ttl, "renewable": tok.ttl > 0, "entity_id": "",
                "token_type": "service", "orphan": True, "mfa_requirement": None,
                "num_uses": 0}

    def issue(self, ns, policies, ttl, source, meta=None, path="auth/token/create", tid=None):
        tid = tid or "hvs." + secrets.token_urlsafe(24)
        tok = Token(tid, ns.path, policies, ttl, source, self.now(), meta, path)
        self.tokens[tid] = tok
        return tok

    # ------------------------------------------------------------ logins

    def login(self, req, ns, mount):
        req.auth = f"login:{mount}"
        am = ns.auth.get(mount)
        if am is None:
            raise ApiError(404, "not_found", f'no handler for route "{join(ns.path, "auth", mount, "login")}". '
                                              "route entry not found.")
        body = req.json(required=False) or {}
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "invalid request")
        if am["type"] == "approle":
            return self.login_approle(ns, mount, am, body)
        return self.login_kubernetes(ns, mount, am, body)

    def login_approle(self, ns, mount, am, body):
        role_id, secret_id = body.get("role_id"), body.get("secret_id")
        if not role_id:
            raise ApiError(400, "invalid_request", "missing role_id")
        for name, role in am["roles"].items():
            if role["role_id"] == role_id:
                break
        else:
            raise ApiError(400, "invalid_request", "invalid role or secret ID")
        if not secret_id:
            raise ApiError(400, "invalid_request", "missing secret_id")
        if secret_id not in role["secret_ids"]:
            raise ApiError(400, "invalid_request", "invalid role or secret ID")
        tok = self.issue(ns, role["policies"], role["token_ttl"], "login", {"role_name": name},
                         f"auth/{mount}/login")
        return self.envelope(auth=self.auth_block(tok))

    def login_kubernetes(self, ns, mount, am, body):
        role_name, jwt = body.get("role"), body.get("jwt")
        if not role_name:
            raise ApiError(400, "invalid_request", "missing role")
        if not jwt:
            raise ApiError(400, "invalid_request", "missing jwt")
        role = am["roles"].get(role_name)
        if role is None:
            raise ApiError(400, "invalid_request", f'invalid role name "{role_name}"')
        if jwt not in role["jwts"]:
            raise denied()
        tok = self.issue(ns, role["policies"], role["token_ttl"], "login",
                         {"role": role_name, "service_account_name": "patrol",
                          "service_account_namespace": "default"}, f"auth/{mount}/login")
        return self.envelope(auth=self.auth_block(tok))

    # ------------------------------------------------------------ KV v1

    def kv1(self, req, tok, ns, m, key, method):
        full = join(m.path, key)
        if method == "LIST":
            self.authorize(tok, ns, full + "/", "list")
            return self.list_keys(m.keys, key)
        if not key:
            raise ApiError(405, "unsupported_operation", "unsupported operation")
        exists = key in m.keys
        if method == "GET":
            self.authorize(tok, ns, full, "read")
            if not exists:
                raise ApiError(404, "not_found", "")
            return self.envelope(m.keys[key]["data"], lease=KV1_LEASE)   # serialized at once
        if method == "POST":
            self.authorize(tok, ns, full, "update" if exists else "create")
            body = req.json()
            if not isinstance(body, dict):
                raise ApiError(400, "invalid_request", "invalid request")
            m.keys[key] = {"data": body}
            return None
        if method == "DELETE":
            self.authorize(tok, ns, full, "delete")
            m.keys.pop(key, None)
            return None
        raise ApiError(405, "unsupported_operation", "unsupported operation")

    def list_keys(self, keys, prefix):
        prefix = prefix.strip("/")
        prefix = prefix + "/" if prefix else ""
        out = set()
        for k in keys:
            if k.startswith(prefix):
                rest = k[len(prefix):]
                head, sep, _ = rest.partition("/")
                out.add(head + sep)
        if not out:
            raise ApiError(404, "not_found", "")
        return self.envelope({"keys": sorted(out)})

    # ------------------------------------------------------------ KV v2

    def kv2(self, req, tok, ns, m, sub, method):
        kind, _, key = sub.partition("/")
        full = join(m.path, kind, key)
        if kind == "config" and not key:
            return self.kv2_config(req, tok, ns, m, method)
        if kind == "metadata" and method == "LIST":
            self.authorize(tok, ns, join(m.path, "metadata", key) + "/", "list")
            return self.list_keys({k: 1 for k, r in m.keys.items()}, key)
        if kind not in ("data", "metadata", "delete", "undelete", "destroy") or not key:
            if method == "GET":
                return json_response(404, dict(self.envelope(), errors=[], warnings=[V2_BAD_PATH]))
            raise ApiError(404, "not_found", V2_BAD_PATH.replace("kv get", "kv put"))
        rec = m.keys.get(key)
        if kind == "data":
            return self.kv2_data(req, tok, ns, m, key, rec, full, method)
        if kind == "metadata":
            return self.kv2_metadata(req, tok, ns, m, key, rec, full, method)
        if method != "POST":
            raise ApiError(405, "unsupported_operation", "unsupported operation")
        self.authorize(tok, ns, full, "update")
        return self.kv2_versions_op(req, rec, kind)

    def kv2_config(self, req, tok, ns, m, method):
        path = join(m.path, "config")
        if method == "GET":
            self.authorize(tok, ns, path, "read")
            return self.envelope(dict(m.config))
        if method == "POST":
            self.authorize(tok, ns, path, "update")
            body = req.json()
            for k in ("max_versions", "cas_required"):
                if k in body:
                    m.config[k] = body[k]
            if "delete_version_after" in body:
                m.config["delete_version_after"] = str(body["delete_version_after"])
            return None
        raise ApiError(405, "unsupported_operation", "unsupported operation")

    def new_record(self):
        now = self.ts()
        return {"versions": {}, "current_version": 0, "oldest_version": 0, "max_versions": 0,
                "cas_required": False, "delete_version_after": "0s", "custom_metadata": None,
                "created_time": now, "updated_time": now}

    def version_meta(self, rec, n):
        vm = rec["versions"][n]
        return {"created_time": vm["created_time"], "custom_metadata": rec["custom_metadata"],
                "deletion_time": vm["deletion_time"], "destroyed": vm["destroyed"], "version": n}

    def gone(self, vm):
        """Deleted (a deletion_time in the past) or destroyed."""
        return vm["destroyed"] or (vm["deletion_time"] != "" and vm["deletion_epoch"] <= self.now())

    def kv2_data(self, req, tok, ns, m, key, rec, full, method):
        if method == "GET":
            self.authorize(tok, ns, full, "read")
            return self.kv2_read(req, rec)
        if method == "POST":
            self.authorize(tok, ns, full, "update" if rec else "create")
            return self.kv2_write(req, m, key, rec)
        if method == "PATCH":
            self.authorize(tok, ns, full, "patch")
            return self.kv2_patch(req, m, key, rec)
        if method == "DELETE":
            self.authorize(tok, ns, full, "delete")
            if rec and rec["current_version"] in rec["versions"]:
                vm = rec["versions"][rec["current_version"]]
                if not vm["destroyed"] and not vm["deletion_time"]:
                    vm["deletion_time"], vm["deletion_epoch"] = self.ts(), self.now()
            return None
        raise ApiError(405, "unsupported_operation", "unsupported operation")

    def kv2_read(self, req, rec):
        try:
            n = int(req.query.get("version") or 0)
        except ValueError:
            raise ApiError(400, "invalid_request", multierror([
                f'error converting input {req.query.get("version")} for field "version": '
                "cannot parse"]))
        if rec is None:
            raise ApiError(404, "not_found", "")
        n = n if n > 0 else rec["current_version"]
        vm = rec["versions"].get(n)
        if vm is None:
            raise ApiError(404, "not_found", "")
        body = self.envelope({"data": None, "metadata": self.version_meta(rec, n)})
        if self.gone(vm):
            return json_response(404, body)
        # dispatch serializes the answer at once, under the lock: no copy of the data needed
        body["data"]["data"] = vm["data"]
        return body

    def check_cas(self, m, rec, options):
        if not isinstance(options, dict):
            options = {}
        if "cas" in options:
            try:
                cas = int(options["cas"])
            except (TypeError, ValueError):
                raise ApiError(400, "invalid_request", "error parsing check-and-set parameter")
            if cas != (rec["current_version"] if rec else 0):
                raise ApiError(400, "invalid_request",
                               "check-and-set parameter did not match the current version")
        elif m.config["cas_required"] or (rec and rec["cas_required"]):
            raise ApiError(400, "invalid_request", "check-and-set parameter required for this call")

    def add_version(self, m, key, rec, data):
        if rec is None:
            rec = m.keys[key] = self.new_record()
        n = rec["current_version"] + 1
        rec["versions"][n] = {"data": data, "created_time": self.ts(), "deletion_time": "",
                              "deletion_epoch": None, "destroyed": False}
        rec["current_version"], rec["updated_time"] = n, self.ts()
        keep = rec["max_versions"] or m.config["max_versions"] or 10
        while len(rec["versions"]) > keep:
            del rec["versions"][min(rec["versions"])]
        rec["oldest_version"] = min(rec["versions"]) if len(rec["versions"]) > 1 else 0
        return rec, n

    def kv2_write(self, req, m, key, rec):
        body = req.json()
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_request", "no data provided")
        self.check_cas(m, rec, body.get("options"))
        # data was parsed from this request's body and nothing else holds it: no copy
        rec, n = self.add_version(m, key, rec, data)
        return self.envelope(self.version_meta(rec, n))

    def kv2_patch(self, req, m, key, rec):
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/merge-patch+json":
            raise ApiError(415, "unsupported_media_type",
                           f"PATCH requires Content-Type of application/merge-patch+json, provided {ctype}")
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise ApiError(400, "invalid_request", "no data provided")
        if rec is None or rec["current_version"] not in rec["versions"]:
            raise ApiError(404, "not_found", "")
        vm = rec["versions"][rec["current_version"]]
        if self.gone(vm):
            return json_response(404, self.envelope(self.version_meta(rec, rec["current_version"])))
        self.check_cas(m, rec, body.get("options"))
        rec, n = self.add_version(m, key, rec, merge_patch(copy.deepcopy(vm["data"]), body["data"]))
        return self.envelope(self.version_meta(rec, n))

    def kv2_versions_op(self, req, rec, kind):
        body = req.json()
        versions = body.get("versions") if isinstance(body, dict) else None
        if not versions:
            raise ApiError(400, "invalid_request", "no version number provided")
        for n in versions:
            vm = rec["versions"].get(int(n)) if rec else None
            if vm is None:
                continue
            if kind == "delete" and not vm["destroyed"] and not vm["deletion_time"]:
                vm["deletion_time"], vm["deletion_epoch"] = self.ts(), self.now()
            elif kind == "undelete" and not vm["destroyed"]:
                vm["deletion_time"], vm["deletion_epoch"] = "", None
            elif kind == "destroy":
                vm["destroyed"], vm["data"] = True, None
        return None

    def kv2_metadata(self, req, tok, ns, m, key, rec, full, method):
        if method == "GET":
            self.authorize(tok, ns, full, "read")
            if rec is None:
                raise ApiError(404, "not_found", "")
            return self.envelope(self.metadata_doc(rec))
        if method == "DELETE":
            self.authorize(tok, ns, full, "delete")
            m.keys.pop(key, None)
            return None
        if method == "POST":
            self.authorize(tok, ns, full, "update" if rec else "create")
            body = req.json(required=False) or {}
            return self.metadata_write(m, key, rec, body, patch=False)
        if method == "PATCH":
            self.authorize(tok, ns, full, "patch")
            if rec is None:
                raise ApiError(404, "not_found", "")
            return self.metadata_write(m, key, rec, req.json(), patch=True)
        raise ApiError(405, "unsupported_operation", "unsupported operation")

    def metadata_doc(self, rec):
        return {"cas_required": rec["cas_required"], "created_time": rec["created_time"],
                "current_version": rec["current_version"],
                "delete_version_after": rec["delete_version_after"],
                "max_versions": rec["max_versions"], "oldest_version": rec["oldest_version"],
                "updated_time": rec["updated_time"], "custom_metadata": rec["custom_metadata"],
                "versions": {str(n): {"created_time": vm["created_time"],
                                      "deletion_time": vm["deletion_time"],
                                      "destroyed": vm["destroyed"]}
                             for n, vm in sorted(rec["versions"].items())}}

    def metadata_write(self, m, key, rec, body, patch):
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "invalid request")
        cm = body.get("custom_metadata")
        if cm is not None:
            if not isinstance(cm, dict):
                raise ApiError(400, "invalid_request", f"{CM_PREFIX}: custom_metadata must be a map")
            base = dict((rec or {}).get("custom_metadata") or {}) if patch else {}
            for k, v in cm.items():
                if v is None and patch:
                    base.pop(k, None)
                else:
                    base[k] = v if isinstance(v, str) else json_scalar(v)
            validate_custom_metadata(base)
            cm = base
        if rec is None:
            rec = m.keys[key] = self.new_record()
        if "max_versions" in body:
            rec["max_versions"] = int(body["max_versions"])
        if "cas_required" in body:
            rec["cas_required"] = bool(body["cas_required"])
        if "delete_version_after" in body:
            rec["delete_version_after"] = str(body["delete_version_after"])
        if "custom_metadata" in body:
            rec["custom_metadata"] = cm
        rec["updated_time"] = self.ts()
        return None

    # ------------------------------------------------------------ control API

    def body(self, req):
        b = req.json()
        if not isinstance(b, dict):
            raise ApiError(400, "invalid_request", "expected a JSON object")
        return b

    @route("POST", r"/_test/namespaces")
    def ctl_namespaces(self, req):
        ns = self.namespace(self.body(req).get("path", ""))
        return {"namespace": ns.path}

    @route("POST", r"/_test/mounts")
    def ctl_mounts(self, req):
        b = self.body(req)
        ns = self.namespace(b.get("namespace", ""))
        path = str(b.get("path", "")).strip("/")
        version = int(b.get("version", 2))
        if not path or version not in (1, 2):
            raise ApiError(400, "invalid_request", "path and version 1|2 required")
        ns.mounts[path] = Mount(path, version, int(b.get("max_versions", 0)),
                                bool(b.get("cas_required", False)))
        return {"namespace": ns.path, "path": path, "version": version}

    @route("POST", r"/_test/policies")
    def ctl_policies(self, req):
        b = self.body(req)
        ns = self.namespace(b.get("namespace", ""))
        rules = b.get("rules")
        if not b.get("name") or not isinstance(rules, list) or any(
                not isinstance(r, dict) or not set(r.get("capabilities", [])) <= CAPABILITIES
                for r in rules):
            raise ApiError(400, "invalid_request", "name and rules [{path, capabilities}] required")
        ns.policies[b["name"]] = rules
        return {"namespace": ns.path, "name": b["name"]}

    @route("POST", r"/_test/tokens")
    def ctl_tokens(self, req):
        b = self.body(req)
        ns = self.namespace(b.get("namespace", ""))
        tok = self.issue(ns, b.get("policies", ["patrol-rw"]), b.get("ttl", 0), "test",
                         tid=b.get("id"))
        return {"token": tok.id, "accessor": tok.accessor}

    @route("GET", r"/_test/tokens")
    def ctl_tokens_list(self, req):
        return {"tokens": [{"accessor": t.accessor, "namespace": t.namespace, "policies": t.policies,
                            "source": t.source, "revoked": t.revoked,
                            "expire_time": self.ts(t.expire) if t.expire else None}
                           for t in self.tokens.values()]}

    def auth_mount(self, b, kind):
        ns = self.namespace(b.get("namespace", ""))
        name = str(b.get("mount", kind)).strip("/")
        am = ns.auth.setdefault(name, {"type": kind, "roles": {}})
        if am["type"] != kind:
            raise ApiError(400, "invalid_request", f"auth mount {name} is {am['type']}")
        return am

    @route("POST", r"/_test/approle")
    def ctl_approle(self, req):
        b = self.body(req)
        am = self.auth_mount(b, "approle")
        name = b.get("role_name", "patrol")
        role = am["roles"].get(name)
        if role is None or b.get("replace"):
            role = am["roles"][name] = {"role_id": b.get("role_id") or str(uuid.uuid4()),
                                        "secret_ids": []}
        if b.get("role_id"):
            role["role_id"] = b["role_id"]
        role["policies"] = b.get("policies", role.get("policies", ["patrol-rw"]))
        role["token_ttl"] = int(b.get("token_ttl", role.get("token_ttl", 3600)))
        sid = b.get("secret_id") or str(uuid.uuid4())
        role["secret_ids"].append(sid)
        return {"role_id": role["role_id"], "secret_id": sid}

    @route("POST", r"/_test/kubernetes")
    def ctl_kubernetes(self, req):
        b = self.body(req)
        am = self.auth_mount(b, "kubernetes")
        name = b.get("role", "patrol")
        role = am["roles"].get(name)
        if role is None or b.get("replace"):
            role = am["roles"][name] = {"jwts": []}
        role["policies"] = b.get("policies", role.get("policies", ["patrol-rw"]))
        role["token_ttl"] = int(b.get("token_ttl", role.get("token_ttl", 3600)))
        if b.get("jwt"):
            role["jwts"].append(b["jwt"])
        return {"role": name}

    @route("POST", r"/_test/revoke")
    def ctl_revoke(self, req):
        b = self.body(req)
        n = 0
        for t in self.tokens.values():
            hit = (t.id == b.get("token") or t.accessor == b.get("accessor") or
                   (b.get("source") == "login" and t.source == "login") or
                   (b.get("source") == "all" and t.source != "root"))
            if hit and not t.revoked:
                t.revoked, n = True, n + 1
        return {"revoked": n}

    def ctl_mount(self, ns_path, mount):
        ns = self.namespace(ns_path or "", create=False)
        m = ns.mounts.get(str(mount).strip("/")) if ns else None
        if m is None:
            raise ApiError(404, "not_found", "no such mount")
        return m

    @route("POST", r"/_test/kv")
    def ctl_kv_write(self, req):
        b = self.body(req)
        m = self.ctl_mount(b.get("namespace"), b.get("mount", "secret"))
        key = str(b.get("path", "")).strip("/")
        if not key or not isinstance(b.get("data"), dict):
            raise ApiError(400, "invalid_request", "path and data required")
        if m.version == 1:
            m.keys[key] = {"data": b["data"]}
            return {"version": None}
        rec, n = self.add_version(m, key, m.keys.get(key), copy.deepcopy(b["data"]))
        if "custom_metadata" in b:
            rec["custom_metadata"] = b["custom_metadata"]
        return {"version": n}

    @route("GET", r"/_test/kv")
    def ctl_kv_read(self, req):
        m = self.ctl_mount(req.query.get("namespace"), req.query.get("mount", "secret"))
        rec = m.keys.get(req.query.get("path", "").strip("/"))
        if rec is None:
            raise ApiError(404, "not_found", "no such secret")
        if m.version == 1:
            return {"data": rec["data"]}
        doc = self.metadata_doc(rec)
        for n, vm in rec["versions"].items():
            doc["versions"][str(n)]["data"] = vm["data"]
        return doc


# ---------------------------------------------------------------- helpers

def json_scalar(v):
    """Vault's mapstructure.WeakDecode of a non-string custom_metadata value."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, float)):
        return str(v)
    raise ApiError(400, "invalid_request", f"{CM_PREFIX}: '' expected type 'string', got unconvertible "
                                           f"type '{type(v).__name__}'")


def validate_custom_metadata(cm):
    errs = []
    if len(cm) > 64:
        errs.append(f"{CM_PREFIX}: payload must contain at most 64 keys, provided {len(cm)}")
    for k, v in cm.items():
        if not 0 < len(k.encode()) <= 128:
            errs.append(f"{CM_PREFIX}: length of key \"{k}\" is {len(k.encode())} but must be "
                        "0 < len(key) <= 128")
        if not 0 < len(v.encode()) <= 512:
            errs.append(f"{CM_PREFIX}: length of value for key \"{k}\" is {len(v.encode())} but must "
                        "be 0 < len(value) <= 512")
        if not v.isprintable():
            errs.append(f"{CM_PREFIX}: value for key \"{k}\" contains unprintable characters")
    if errs:
        raise ApiError(400, "invalid_request", multierror(errs))


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge_patch(target.get(k), v)
    return target


def parse_duration(v):
    """Seconds from an int or a Go-style duration ("1h30m", "90s")."""
    if v in (None, ""):
        return 0
    if isinstance(v, (int, float)):
        return int(v)
    total, units = 0, {"h": 3600, "m": 60, "s": 1}
    for num, unit in re.findall(r"(\d+)([hms]?)", str(v)):
        total += int(num) * units.get(unit or "s", 1)
    return total


if __name__ == "__main__":
    common.main(Vault)
