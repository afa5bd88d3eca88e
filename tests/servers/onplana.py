#!/usr/bin/python3
"""Fake Onplana API for patrol's end-to-end tests: SPEC.md section 5, nothing more.

    /usr/bin/python3 tests/servers/onplana.py --cert server.pem --key server-key.pem --port-file F

API (Bearer = an OAuth session from /oauth/token, except /me which takes a PAT):
    POST   /oauth/token            form grant_type=client_credentials, client_id, client_secret
                                   (or HTTP Basic) -> 200 {access_token, token_type, expires_in};
                                   errors RFC 6749: {"error": "invalid_client", "error_description"}
    POST   /api/v1/tokens          create -> 201 {id, token, prefix, name, orgId, scopes,
                                   projectIds, expiresAt, createdAt}
    GET    /api/v1/tokens?orgId=&name=&cursor=   the caller's tokens in that org, including
                                   revoked and expired ones, oldest first, page_size per page,
                                   -> {tokens: [...], nextCursor: null at the end}
    GET    /api/v1/tokens/{id}     one of the caller's tokens, else 404
    DELETE /api/v1/tokens/{id}     204 for a known token of the caller whatever its state; 404
    GET    /api/v1/me              Bearer PAT -> {user: {id, email}, orgId, token: {id, scopes,
                                   projectIds, expiresAt}}; 401 token_revoked / token_expired /
                                   invalid_credentials; sets lastUsedAt. A session bearer gets
                                   token: null.
Errors {"error": {"code", "message"}}. Validation of create, in this order: session
(missing/unknown/expired: 401 invalid_credentials; a PAT: 403 token_cannot_manage_tokens),
body an object, name (1-128 chars, no control characters) and orgId strings (400
invalid_request), orgId the account is in (404 not_found), scopes a non-empty list of
`resource.action` or WILDCARD (400 invalid_scope), every scope held by the account (WILDCARD
held = everything; 403 scope_not_held), projectIds a list of strings (400 invalid_request),
expiresAt RFC 3339 with zone, in the future (400 invalid_request), at most max_ttl_days
ahead (400 expiry_too_long; null expiresAt is expiry_too_long too unless max_ttl_days is null).
Ids: "pat_" + 26-char ULID; token "onp_pat_" + 40 [A-Za-z0-9]; prefix = token[:12].
Times are RFC 3339 UTC, whole seconds ("2027-02-26T07:00:00Z"; fractional_times -> ".123Z").

Control API (plus the generic one in common.py: faults, log, clock, secrets, reset):
    POST   /_test/accounts   an account or a list: {"client_id", "client_secret", "org",
                             "orgs": [more orgs], "user_email", "user_id", "scopes_held": [..],
                             "session_expires_in": N, "disabled": false}; client_secret, user_*
                             are generated when absent. Re-seeding a client_id replaces it.
                             -> {"accounts": [...]} (with secrets)
    GET    /_test/accounts
    POST   /_test/tokens     seed a token: {"account": client_id (or "client_id"), "name",
                             "orgId" (default the account's org), "scopes", "projectIds",
                             "expiresAt", "createdAt", "lastUsedAt", "revokedAt" (RFC 3339,
                             epoch seconds or null), "revoked": bool, "id", "token"} -> the
                             token with its value. No validation against the account's scopes.
    GET    /_test/tokens     [?account=&name=&orgId=] every token WITH its value:
                             {"tokens": [{..., "token", "account", "state"}]} state is
                             active | expired | revoked (by the service clock)
    PATCH  /_test/tokens/{id}  change expiresAt, createdAt, lastUsedAt, revokedAt, revoked,
                             name, scopes, projectIds behind patrol's back
    DELETE /_test/tokens/{id}  forget a token entirely (later calls on it get 404)
    GET    /_test/sessions   {"sessions": [{"access_token", "account", "expires_at"}]}
    DELETE /_test/sessions   invalidate every session (next use: 401 invalid_credentials)
    GET    /_test/config, POST /_test/config  {"page_size": 2, "max_ttl_days": 365,
                             "session_expires_in": 3600, "fractional_times": false}
"""
import base64
import datetime
import functools
import json
import os
import re
import secrets
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import ApiError, json_response, route  # noqa: E402

DEFAULT_CONFIG = {"page_size": 2, "max_ttl_days": 365, "session_expires_in": 3600,
                  "fractional_times": False}
SCOPE_RE = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")
RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
B32_PAIRS = [a + b for a in B32 for b in B32]      # 10 bits -> 2 characters
OAUTH_CODES = {400: "invalid_request", 401: "invalid_client", 403: "unauthorized_client",
               429: "temporarily_unavailable", 503: "temporarily_unavailable"}


def ulid(t):
    """26 Crockford base-32 characters of the low 130 bits of (ms << 80 | 80 random bits),
    most significant first (two characters per table lookup)."""
    n = (int(t * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join([B32_PAIRS[(n >> s) & 1023] for s in range(120, -1, -10)])


_ALNUM_TABLE = bytes(ord(ALNUM[b % 62]) for b in range(248)) + bytes(8)
_ALNUM_DROP = bytes(range(248, 256))


def random_alnum(n):
    """n characters of ALNUM, uniformly (bytes >= 248 = 4 * 62 are dropped), from one
    urandom read rather than one per character (byte b gives ALNUM[b % 62])."""
    out = ""
    while len(out) < n:
        out += os.urandom(n + 8).translate(_ALNUM_TABLE, _ALNUM_DROP).decode("ascii")
    return out[:n]


def parse_time(value, field, allow_null=True):
    """RFC 3339 (with zone) or epoch seconds -> epoch float; None stays None."""
    if type(value) is str:                  # a string always gives the same time
        return _parse_time_str(value, field)
    return _parse_time(value, field, allow_null)


def _parse_time(value, field, allow_null=True):
    if value is None:
        if allow_null:
            return None
        raise ApiError(400, "invalid_request", f"{field} is required")
    if isinstance(value, bool):
        raise ApiError(400, "invalid_request", f"{field} must be an RFC 3339 time")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or not RFC3339_RE.fullmatch(value):
        raise ApiError(400, "invalid_request", f"{field} must be an RFC 3339 time with a zone")
    s = value.upper().replace("Z", "+00:00")
    frac = re.search(r"\.(\d+)", s)
    if frac and len(frac.group(1)) > 6:     # datetime takes at most microseconds
        s = s.replace(frac.group(0), "." + frac.group(1)[:6])
    try:
        return datetime.datetime.fromisoformat(s).timestamp()
    except ValueError:
        raise ApiError(400, "invalid_request", f"{field} is not a valid time")


_parse_time_str = functools.lru_cache(maxsize=4096)(_parse_time)


@functools.lru_cache(maxsize=4096)
def _whole_second(s):
    return datetime.datetime.fromtimestamp(s, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Onplana(common.Service):
    name = "onplana"

    def reset_state(self):
        self.config = dict(DEFAULT_CONFIG)
        self.accounts = {}       # client_id -> account
        self.sessions = {}       # access_token -> {"account", "expires_at"}
        self.tokens = {}         # id -> token record (with "token" value and "account")
        self.by_value = {}       # token value -> id

    # ------------------------------------------------------------ helpers
    def fmt(self, t):
        if t is None:
            return None
        if not self.config["fractional_times"] and type(t) is float and 0 <= t < 1e11:
            s = int(t)
            if t - s < 0.999:
                # fromtimestamp rounds to microseconds: this far from the next second, the
                # answer is that of the whole second s, which is remembered
                return _whole_second(s)
        dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
        if self.config["fractional_times"]:
            return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")

    def state_of(self, tok):
        if tok["revokedAt"] is not None:
            return "revoked"
        if tok["expiresAt"] is not None and tok["expiresAt"] <= self.now():
            return "expired"
        return "active"

    def public(self, tok):
        return {"id": tok["id"], "prefix": tok["prefix"], "name": tok["name"],
                "orgId": tok["orgId"], "scopes": list(tok["scopes"]),
                "projectIds": list(tok["projectIds"]), "expiresAt": self.fmt(tok["expiresAt"]),
                "createdAt": self.fmt(tok["createdAt"]), "lastUsedAt": self.fmt(tok["lastUsedAt"]),
                "revokedAt": self.fmt(tok["revokedAt"])}

    def full(self, tok):
        d = self.public(tok)
        d.update(token=tok["token"], account=tok["account"], state=self.state_of(tok))
        return d

    def error_response(self, req, status, code, message, headers=None):
        if req.path == "/oauth/token":
            return json_response(status, {"error": code, "error_description": message},
                                 dict(headers or {}, **{"Cache-Control": "no-store"}))
        return super().error_response(req, status, code, message, headers)

    def error_code_for_status(self, req, status):
        if req.path == "/oauth/token":
            return OAUTH_CODES.get(status, "server_error")
        return super().error_code_for_status(req, status)

    def secret_values(self):
        out = []
        for a in self.accounts.values():
            out.append((f"client_secret of {a['client_id']}", a["client_secret"]))
            basic = base64.b64encode(f"{a['client_id']}:{a['client_secret']}".encode()).decode()
            out.append((f"basic auth of {a['client_id']}", basic))
        for t, s in self.sessions.items():
            out.append((f"session of {s['account']}", t))
        for tok in self.tokens.values():
            out.append((f"token value of {tok['id']} ({tok['name']})", tok["token"]))
        return out

    def session_account(self, req):
        """The account behind a session bearer; errors the way token endpoints answer."""
        bearer = req.bearer()
        if bearer is None:
            req.auth = "none"
            raise ApiError(401, "invalid_credentials", "a Bearer session is required")
        if bearer in self.by_value or bearer.startswith("onp_pat_"):
            req.auth = "pat"
            raise ApiError(403, "token_cannot_manage_tokens",
                           "personal access tokens cannot manage tokens")
        req.auth = "session"
        sess = self.sessions.get(bearer)
        if sess is None:
            raise ApiError(401, "invalid_credentials", "unknown session")
        if sess["expires_at"] <= self.now():
            raise ApiError(401, "invalid_credentials", "session expired")
        acct = self.accounts.get(sess["account"])
        if acct is None or acct["disabled"]:
            raise ApiError(401, "invalid_credentials", "account disabled")
        return acct

    def check_org(self, acct, org):
        if not isinstance(org, str) or not org:
            raise ApiError(400, "invalid_request", "orgId is required")
        if org not in acct["orgs"]:
            raise ApiError(404, "not_found", f"organisation {org} not found")

    def new_token(self, acct, name, org, scopes, projects, expires, created):
        while True:
            tid = "pat_" + ulid(created)
            if tid not in self.tokens:
                break
        value = "onp_pat_" + random_alnum(40)
        tok = {"id": tid, "token": value, "prefix": value[:12], "name": name, "orgId": org,
               "scopes": list(scopes), "projectIds": list(projects), "expiresAt": expires,
               "createdAt": created, "lastUsedAt": None, "revokedAt": None,
               "account": acct["client_id"]}
        self.tokens[tid] = tok
        self.by_value[value] = tid
        return tok

    def own_token(self, acct, tid):
        tok = self.tokens.get(tid)
        if tok is None or tok["account"] != acct["client_id"]:
            raise ApiError(404, "not_found", f"token {tid} not found")
        return tok

    # ------------------------------------------------------------ OAuth
    @route("POST", r"/oauth/token")
    def oauth_token(self, req):
        req.auth = "client"
        try:
            form = req.form()
        except ApiError as e:
            raise ApiError(400, "invalid_request", e.message)
        grant = form.get("grant_type")
        if not grant:
            raise ApiError(400, "invalid_request", "grant_type is required")
        if grant != "client_credentials":
            raise ApiError(400, "unsupported_grant_type", f"grant_type {grant} not supported")
        basic = req.basic()
        cid, csec = basic if basic else (form.get("client_id"), form.get("client_secret"))
        if not cid or csec is None:
            raise ApiError(401, "invalid_client", "client authentication required")
        acct = self.accounts.get(cid)
        if acct is None or acct["disabled"] or not secrets.compare_digest(
                acct["client_secret"].encode(), csec.encode()):
            raise ApiError(401, "invalid_client", "client authentication failed")
        lifetime = acct["session_expires_in"] or self.config["session_expires_in"]
        access = "onp_sess_" + random_alnum(40)
        self.sessions[access] = {"account": cid, "expires_at": self.now() + lifetime}
        return json_response(200, {"access_token": access, "token_type": "Bearer",
                                   "expires_in": int(lifetime)},
                             {"Cache-Control": "no-store", "Pragma": "no-cache"})

    # ------------------------------------------------------------ tokens
    @route("POST", r"/api/v1/tokens")
    def create(self, req):
        acct = self.session_account(req)
        body = req.json()
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 128 or CONTROL_RE.search(name):
            raise ApiError(400, "invalid_request", "name must be 1-128 printable characters")
        self.check_org(acct, body.get("orgId"))
        scopes = body.get("scopes")
        if not isinstance(scopes, list) or not scopes:
            raise ApiError(400, "invalid_scope", "scopes must be a non-empty list")
        for s in scopes:
            if not isinstance(s, str) or not (s == "WILDCARD" or SCOPE_RE.fullmatch(s)):
                raise ApiError(400, "invalid_scope", f"malformed scope {s!r}")
        held = acct["scopes_held"]
        for s in scopes:
            if s not in held and "WILDCARD" not in held:
                raise ApiError(403, "scope_not_held", f"the account does not hold {s}")
        projects = body.get("projectIds", [])
        if projects is None:
            projects = []
        if not isinstance(projects, list) or not all(isinstance(p, str) and p for p in projects):
            raise ApiError(400, "invalid_request", "projectIds must be a list of ids")
        now = self.now()
        expires = parse_time(body.get("expiresAt"), "expiresAt")
        max_days = self.config["max_ttl_days"]
        if expires is None:
            if max_days is not None:
                raise ApiError(400, "expiry_too_long",
                               f"tokens must expire within {max_days} days")
        else:
            if expires <= now:
                raise ApiError(400, "invalid_request", "expiresAt must be in the future")
            if max_days is not None and expires > now + max_days * 86400:
                raise ApiError(400, "expiry_too_long",
                               f"expiresAt is beyond the organisation's {max_days}-day maximum")
        tok = self.new_token(acct, name, body["orgId"], scopes, projects, expires, now)
        out = {k: v for k, v in self.public(tok).items() if k not in ("lastUsedAt", "revokedAt")}
        out["token"] = tok["token"]
        return json_response(201, out)

    @route("GET", r"/api/v1/tokens")
    def list_tokens(self, req):
        acct = self.session_account(req)
        org = req.query.get("orgId")
        self.check_org(acct, org)
        name = req.query.get("name")
        mine = sorted((t for t in self.tokens.values()
                       if t["account"] == acct["client_id"] and t["orgId"] == org
                       and (name is None or t["name"] == name)),
                      key=lambda t: (t["createdAt"], t["id"]))
        start = 0
        cursor = req.query.get("cursor")
        if cursor:
            try:
                after = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=="))
                after = (float(after[0]), str(after[1]))
            except (ValueError, TypeError, IndexError, json.JSONDecodeError):
                raise ApiError(400, "invalid_request", "malformed cursor")
            while start < len(mine) and (mine[start]["createdAt"], mine[start]["id"]) <= after:
                start += 1
        size = max(1, int(self.config["page_size"]))
        page = mine[start:start + size]
        nxt = None
        if start + size < len(mine):
            last = page[-1]
            nxt = base64.urlsafe_b64encode(
                json.dumps([last["createdAt"], last["id"]]).encode()).decode().rstrip("=")
        return {"tokens": [self.public(t) for t in page], "nextCursor": nxt}

    @route("GET", r"/api/v1/tokens/(?P<id>[^/]+)")
    def get_token(self, req):
        acct = self.session_account(req)
        return self.public(self.own_token(acct, req.params["id"]))

    @route("DELETE", r"/api/v1/tokens/(?P<id>[^/]+)")
    def revoke(self, req):
        acct = self.session_account(req)
        tok = self.own_token(acct, req.params["id"])
        if tok["revokedAt"] is None:
            tok["revokedAt"] = self.now()
        return common.Response(204)

    @route("GET", r"/api/v1/me")
    def me(self, req):
        bearer = req.bearer()
        if bearer is None:
            req.auth = "none"
            raise ApiError(401, "invalid_credentials", "a Bearer token is required")
        sess = self.sessions.get(bearer)
        if sess is not None:
            req.auth = "session"
            acct = self.session_account(req)
            return {"user": {"id": acct["user_id"], "email": acct["user_email"]},
                    "orgId": acct["org"], "token": None}
        req.auth = "pat"
        tid = self.by_value.get(bearer)
        tok = self.tokens.get(tid) if tid else None
        if tok is None:
            raise ApiError(401, "invalid_credentials", "unknown token")
        acct = self.accounts.get(tok["account"])
        if acct is None or acct["disabled"]:
            raise ApiError(401, "invalid_credentials", "account disabled")
        state = self.state_of(tok)
        if state == "revoked":
            raise ApiError(401, "token_revoked", "token has been revoked")
        if state == "expired":
            raise ApiError(401, "token_expired", "token has expired")
        tok["lastUsedAt"] = self.now()
        return {"user": {"id": acct["user_id"], "email": acct["user_email"]},
                "orgId": tok["orgId"],
                "token": {"id": tok["id"], "scopes": list(tok["scopes"]),
                          "projectIds": list(tok["projectIds"]),
                          "expiresAt": self.fmt(tok["expiresAt"])}}

    # ------------------------------------------------------------ test control
    def seed_account(self, spec):
        if not isinstance(spec, dict) or not isinstance(spec.get("client_id"), str):
            raise ApiError(400, "invalid_request", "an account needs a client_id")
        cid = spec["client_id"]
        org = spec.get("org")
        orgs = list(spec.get("orgs") or [])
        if org is None and orgs:
            org = orgs[0]
        if not isinstance(org, str):
            raise ApiError(400, "invalid_request", "an account needs an org")
        if org not in orgs:
            orgs.insert(0, org)
        held = spec.get("scopes_held", [])
        if not isinstance(held, list):
            raise ApiError(400, "invalid_request", "scopes_held must be a list")
        uid = spec.get("user_id") or "usr_" + ulid(self.now())
        acct = {"client_id": cid,
                "client_secret": spec.get("client_secret") or "cs_" + random_alnum(32),
                "org": org, "orgs": orgs, "user_id": uid,
                "user_email": spec.get("user_email") or f"{cid}@svc.example.test",
                "scopes_held": list(held),
                "session_expires_in": spec.get("session_expires_in"),
                "disabled": bool(spec.get("disabled", False))}
        self.accounts[cid] = acct
        return dict(acct)

    @route("POST", r"/_test/accounts")
    def ctl_accounts_add(self, req):
        body = req.json()
        specs = body if isinstance(body, list) else [body]
        return {"accounts": [self.seed_account(s) for s in specs]}

    @route("GET", r"/_test/accounts")
    def ctl_accounts(self, req):
        return {"accounts": [dict(a) for a in self.accounts.values()]}

    @route("POST", r"/_test/tokens")
    def ctl_tokens_add(self, req):
        spec = req.json()
        if not isinstance(spec, dict):
            raise ApiError(400, "invalid_request", "expected a JSON object")
        acct = self.accounts.get(spec.get("account") or spec.get("client_id"))
        if acct is None:
            raise ApiError(400, "invalid_request", "account (a seeded client_id) is required")
        now = self.now()
        created = parse_time(spec.get("createdAt"), "createdAt")
        created = now if created is None else created
        tok = self.new_token(acct, spec.get("name") or "seeded-" + random_alnum(6).lower(),
                             spec.get("orgId") or acct["org"], spec.get("scopes", []),
                             spec.get("projectIds", []),
                             parse_time(spec.get("expiresAt"), "expiresAt"), created)
        if spec.get("id") or spec.get("token"):
            del self.tokens[tok["id"]]
            del self.by_value[tok["token"]]
            if spec.get("id"):
                tok["id"] = spec["id"]
            if spec.get("token"):
                tok["token"] = spec["token"]
                tok["prefix"] = spec["token"][:12]
            self.tokens[tok["id"]] = tok
            self.by_value[tok["token"]] = tok["id"]
        self.patch_token(tok, spec)
        return json_response(201, self.full(tok))

    def patch_token(self, tok, spec):
        for f in ("expiresAt", "createdAt", "lastUsedAt", "revokedAt"):
            if f in spec and not (f == "createdAt" and spec[f] is None):
                tok[f] = parse_time(spec[f], f)
        if "revoked" in spec:
            if spec["revoked"] and tok["revokedAt"] is None:
                tok["revokedAt"] = self.now()
            elif not spec["revoked"]:
                tok["revokedAt"] = None
        for f in ("name", "scopes", "projectIds"):
            if f in spec:
                tok[f] = spec[f]

    @route("GET", r"/_test/tokens")
    def ctl_tokens(self, req):
        q = req.query
        return {"tokens": [self.full(t) for t in sorted(self.tokens.values(),
                                                         key=lambda t: (t["createdAt"], t["id"]))
                           if (not q.get("account") or t["account"] == q["account"])
                           and (not q.get("name") or t["name"] == q["name"])
                           and (not q.get("orgId") or t["orgId"] == q["orgId"])]}

    @route("PATCH", r"/_test/tokens/(?P<id>[^/]+)")
    def ctl_token_patch(self, req):
        tok = self.tokens.get(req.params["id"])
        if tok is None:
            raise ApiError(404, "not_found", "no such token")
        spec = req.json()
        if not isinstance(spec, dict):
            raise ApiError(400, "invalid_request", "expected a JSON object")
        self.patch_token(tok, spec)
        return self.full(tok)

    @route("DELETE", r"/_test/tokens/(?P<id>[^/]+)")
    def ctl_token_forget(self, req):
        tok = self.tokens.pop(req.params["id"], None)
        if tok is None:
            raise ApiError(404, "not_found", "no such token")
        self.by_value.pop(tok["token"], None)
        return common.Response(204)

    @route("GET", r"/_test/sessions")
    def ctl_sessions(self, req):
        return {"sessions": [{"access_token": t, "account": s["account"],
                              "expires_at": self.fmt(s["expires_at"])}
                             for t, s in self.sessions.items()]}

    @route("DELETE", r"/_test/sessions")
    def ctl_sessions_clear(self, req):
        self.sessions.clear()
        return common.Response(204)

    @route("GET", r"/_test/config")
    def ctl_config(self, req):
        return dict(self.config)

    @route("POST", r"/_test/config")
    def ctl_config_set(self, req):
        body = req.json()
        if not isinstance(body, dict) or set(body) - set(DEFAULT_CONFIG):
            raise ApiError(400, "invalid_request", f"config keys: {sorted(DEFAULT_CONFIG)}")
        self.config.update(body)
        return dict(self.config)


if __name__ == "__main__":
    common.main(Onplana)
