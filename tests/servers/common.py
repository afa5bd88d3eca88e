"""Shared base of patrol's fake service servers (Onplana, Vault, AWS, Azure).

A server module defines a Service subclass with @route handlers and ends with
    if __name__ == "__main__": common.main(MyService)

Command line (every server):
    /usr/bin/python3 tests/servers/X.py --cert server.pem --key server-key.pem
            [--port-file FILE] [--port 0] [--host 127.0.0.1] [--plain] [--verbose] [--bench]
It listens on 127.0.0.1 (port 0 = any free port; TLS unless --plain, which is for
plain-http loopback endpoints such as IMDS; --bench: same answers, cheaper checks where a
service has them, for `make bench`), writes the port to --port-file
(atomically: tmp + rename) and prints "READY <port>" on stdout. SIGTERM/SIGINT exit.
Unhandled exceptions in handlers answer 500 and print a traceback on stderr.

Writing a service:
    class Vault(common.Service):
        name = "vault"
        def reset_state(self): self.kv = {}            # called at start and on /_test/reset
        @common.route("GET", r"/v1/(?P<mount>[^/]+)/data/(?P<path>.+)")
        def kv_read(self, req):                        # runs under self.lock
            req.auth = "token"                         # optional note for /_test/log
            raise common.ApiError(404, "not_found", "no secret")   # -> self.error_response
            return common.json_response(200, {...}, headers={...})
    Request: method, path, query_string, query (first value of each name), query_all,
    headers, body (bytes), params (named regex groups), json(), form(), bearer(), basic().
    Handlers return Response / json_response(...) or a dict (= 200 JSON).
    Override error_response(req, status, code, message) for the service's error shape,
    error_code_for_status(req, status) for the codes used by injected faults, and
    secret_values() to list the secrets the tests must never find in patrol's output.
    self.now() is the service's clock (real time + the offset set by /_test/clock).
    Methods dispatched: GET HEAD POST PUT PATCH DELETE LIST OPTIONS.

Control API, on the same port, no auth, never faulted and never logged:
    POST   /_test/faults   a rule or a list of rules, APPENDED to the current ones:
             {"method": "POST",                 optional, default any ("*")
              "path": "/api/v1/tokens",         regex, full match of the path (no query)
              "action": "status" | "retry_after" | "delay" | "drop" | "lose_response"
                      | "bad_json" | "wrong_shape" | "huge",
              "status": 503,                    answer status (status: 500, retry_after: 429)
              "retry_after": 1,                 Retry-After seconds (any action that answers)
              "delay": 2.0,                     seconds to sleep before handling (any action)
              "times": 1,                       matching requests it applies to; -1 = forever
              "skip": 0,                        let this many matching requests through first
              "body": {...},                    answer body (status, retry_after, wrong_shape)
              "headers": {...},                 extra answer headers
              "perform": bool,                  override whether the operation is carried out
              "size": 3145728}                  body size for "huge"
           Actions that answer instead of the service (operation NOT performed unless
           perform=true): status, retry_after (429 + Retry-After, the service's
           rate-limit error body), drop (connection closed, no answer).
           Actions that alter the answer (operation performed unless perform=false):
           delay (sleep, then normal), lose_response (operation done, connection
           closed without an answer), bad_json (the operation's status, a truncated
           JSON body), wrong_shape (the operation's status, body `body` or
           {"unexpected": "shape"}), huge (200, valid JSON > 2 MiB).
           The first rule that matches (and has times left) applies; one per request.
           NB: libcurl silently re-sends a request once when a REUSED connection
           closes with no answer, so drop/lose_response with times=1 may be invisible
           to the client; use times=2 or -1 to make the failure stick.
           Answers {"faults": [current rules with "remaining" and "hits"]}.
    GET    /_test/faults   the current rules
    DELETE /_test/faults   clear every rule
    GET    /_test/log      [?since=SEQ] requests seen, oldest first:
             {"requests": [{"seq","time","method","path","query","status","fault","auth"}]}
             status is null when no answer was sent (drop, lose_response); fault is the
             action applied or null; auth is the service's note on the credential kind
             (no values). No bodies, no headers.
    DELETE /_test/log      clear the log
    POST   /_test/clock    {"offset": seconds} sets, {"advance": seconds} adds to, the
                           service's clock offset; answers {"now", "offset"}
    GET    /_test/clock    {"now": epoch seconds, "offset"}
    GET    /_test/secrets  {"secrets": [{"label", "value"}]} every secret the service
                           knows (for leak checks)
    POST   /_test/reset    state, faults, log and clock back to the start; requests still
                           sleeping in a delay fault are dropped unperformed (the harness
                           reuses one server per module across tests through this)
A service adds its own /_test/ routes the same way it adds API routes.
"""
import argparse
import base64
import collections
import functools
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
import http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_REQUEST_BODY = 16 << 20
HUGE_DEFAULT = 3 << 20
LOG_MAX = 200000

_STALE = object()    # _faulted: the test that set the rule is over; answer nothing

ACTIONS = ("status", "retry_after", "delay", "drop", "lose_response",
           "bad_json", "wrong_shape", "huge")
# Actions that replace the service's answer, so by default the operation is not done.
_REPLACING = ("status", "retry_after", "drop")

REASONS = {100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
           400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 412: "Precondition Failed",
           413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}


# ---------------------------------------------------------------- requests, answers

class ApiError(Exception):
    """Raise from a handler: answered through Service.error_response."""

    def __init__(self, status, code, message="", headers=None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


class Response:
    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(self, status=200, body=b"", headers=None, content_type=None):
        self.status = status
        self.headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json_bytes(body)
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            body = body.encode()
        self.body = body or b""
        self.content_type = content_type or ("application/json" if self.body else None)


# json.dumps(obj, separators=(",", ":")) builds a JSONEncoder per call, whose encode()
# then builds a C encoder (json.encoder.c_make_encoder) per call: each thread keeps the C
# encoder that encode() would build (its circular-reference marks are per thread, and it
# is dropped after an error, which can leave marks behind).
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"))
_JSON_DECODER = json.JSONDecoder()      # json.loads's own default decoder
_JSON_SCAN = _JSON_DECODER.scan_once
_JSON_LOCAL = threading.local()


def _c_json_encoder():
    e = _JSON_ENCODER
    return json.encoder.c_make_encoder(
        {}, e.default, json.encoder.encode_basestring_ascii, e.indent, e.key_separator,
        e.item_separator, e.sort_keys, e.skipkeys, e.allow_nan)


def json_bytes(obj):
    if isinstance(obj, str) or json.encoder.c_make_encoder is None:
        return _JSON_ENCODER.encode(obj).encode()
    enc = getattr(_JSON_LOCAL, "encoder", None)
    if enc is None:
        enc = _JSON_LOCAL.encoder = _c_json_encoder()
    try:
        return "".join(enc(obj, 0)).encode()
    except BaseException:
        _JSON_LOCAL.encoder = None
        raise


def json_decode(text):
    """_JSON_DECODER.decode(text): without JSON blanks at either end, the document must
    run from the first character to the last (else ValueError, as decode raises)."""
    if text and text[0] not in " \t\n\r" and text[-1] not in " \t\n\r":
        try:
            obj, end = _JSON_SCAN(text, 0)
        except StopIteration as err:
            raise json.JSONDecodeError("Expecting value", text, err.value) from None
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
        return obj
    return _JSON_DECODER.decode(text)


def uuid4_str(hex_only=False):
    """str(uuid.uuid4()) (or uuid.uuid4().hex) without the UUID object: the same 16 bytes of
    os.urandom with the same version and variant bits."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    if hex_only:
        return h
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def json_response(status, obj, headers=None):
    return Response(status, json_bytes(obj), headers, "application/json")


@functools.lru_cache(maxsize=4096)
def _parse_query(query_string):
    """{name: first value} of a query string (parse_qs): the same every time, so parsed
    once; callers copy it."""
    return {k: v[0] for k, v in parse_qs(query_string, keep_blank_values=True).items()}


class Request:
    def __init__(self, method, path, query_string, headers, body):
        self.method, self.path, self.query_string = method, path, query_string
        self.headers, self.body = headers, body
        # what parse_qs answers for "", without its work
        self.query = dict(_parse_query(query_string)) if query_string else {}
        self._query_all = None
        self.params = {}
        self.auth = None           # service's note on the credential kind, for the log
        self._json = None

    @property
    def query_all(self):
        """Every value of each name (parse_qs), computed when first asked for."""
        if self._query_all is None:
            self._query_all = (parse_qs(self.query_string, keep_blank_values=True)
                               if self.query_string else {})
        return self._query_all

    @query_all.setter
    def query_all(self, value):
        self._query_all = value

    def json(self, required=True):
        """The body as JSON; ApiError 400 invalid_request when it is not."""
        if self._json is None:
            if not self.body:
                if not required:
                    return None
                raise ApiError(400, "invalid_request", "request body required")
            body = self.body
            try:
                if len(body) >= 4 and 0 < body[0] < 0x80 and body[1]:
                    # json.loads(body) without its layers: these first bytes are what its
                    # detect_encoding takes for UTF-8 (no BOM, no NUL of UTF-16/32)
                    self._json = json_decode(body.decode("utf-8", "surrogatepass"))
                else:
                    self._json = json.loads(body)
            except ValueError:
                raise ApiError(400, "invalid_request", "body is not valid JSON")
        return self._json

    def form(self):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise ApiError(400, "invalid_request", "expected application/x-www-form-urlencoded")
        try:
            pairs = parse_qs(self.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_request", "form is not UTF-8")
        return {k: v[0] for k, v in pairs.items()}

    def bearer(self):
        auth = self.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return value.strip()

    def basic(self):
        """(user, password) from HTTP Basic auth, or None."""
        auth = self.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, pw = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return (user, pw) if sep else None


def _literal_prefix(pattern):
    """The characters every full match of the regex pattern starts with ("" when unsure):
    the leading run of plain characters, without the last one when a quantifier follows,
    and nothing at all when the pattern has an alternation."""
    if "|" in pattern:
        return ""
    n = 0
    while n < len(pattern) and pattern[n] not in ".^$*+?{}[]\\|()":
        n += 1
    if n < len(pattern) and pattern[n] in "*+?{":
        n -= 1
    return pattern[:max(n, 0)]


def route(method, pattern):
    """Decorator: handle METHOD on paths fully matching the regex PATTERN."""
    def deco(fn):
        fn.__dict__.setdefault("_routes", []).append((method.upper(), pattern))
        return fn
    return deco


# ---------------------------------------------------------------- faults and log

class FaultRule:
    def __init__(self, spec):
        if not isinstance(spec, dict):
            raise ApiError(400, "invalid_request", "a fault rule is a JSON object")
        unknown = set(spec) - {"method", "path", "action", "status", "retry_after", "delay",
                               "times", "skip", "body", "headers", "perform", "size"}
        if unknown:
            raise ApiError(400, "invalid_request", f"unknown fault keys: {sorted(unknown)}")
        self.spec = dict(spec)
        self.action = spec.get("action")
        if self.action not in ACTIONS:
            raise ApiError(400, "invalid_request", f"action must be one of {ACTIONS}")
        self.method = str(spec.get("method") or "*").upper()
        try:
            self.path = re.compile(spec.get("path", ".*"))
        except re.error as e:
            raise ApiError(400, "invalid_request", f"bad path regex: {e}")
        self.status = spec.get("status")
        self.retry_after = spec.get("retry_after")
        self.delay = float(spec.get("delay") or 0)
        self.times = int(spec.get("times", 1))
        self.skip = int(spec.get("skip", 0))
        self.body = spec.get("body")
        self.headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
        self.perform = spec.get("perform", self.action not in _REPLACING)
        self.size = int(spec.get("size", HUGE_DEFAULT))
        self.hits = 0

    def matches(self, method, path):
        return (self.method in ("*", method)) and self.path.fullmatch(path) is not None

    def describe(self):
        return dict(self.spec, remaining=self.times, hits=self.hits)


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []

    def add(self, specs):
        if isinstance(specs, dict) and "rules" in specs:
            specs = specs["rules"]
        if isinstance(specs, dict):
            specs = [specs]
        if not isinstance(specs, list):
            raise ApiError(400, "invalid_request", "expected a rule or a list of rules")
        rules = [FaultRule(s) for s in specs]
        with self.lock:
            self.rules.extend(rules)

    def clear(self):
        with self.lock:
            self.rules = []

    def describe(self):
        with self.lock:
            return [r.describe() for r in self.rules]

    def take(self, method, path):
        """The rule that applies to this request, consuming one of its uses."""
        if not self.rules:
            return None
        with self.lock:
            for r in self.rules:
                if r.times == 0 or not r.matches(method, path):
                    continue
                if r.skip > 0:
                    r.skip -= 1
                    continue
                if r.times > 0:
                    r.times -= 1
                r.hits += 1
                return r
        return None


class RequestLog:
    """Entries are kept as tuples (seq, time, method, path, query, status, fault, auth)
    and become the /_test/log dicts only when asked for: a request pays one tuple."""
    def __init__(self):
        self.lock = threading.Lock()
        self.entries = collections.deque(maxlen=LOG_MAX)
        self.seq = 0

    def add(self, method, path, query, status, fault, auth):
        with self.lock:
            self.seq += 1
            self.entries.append((self.seq, time.time(), method, path, query, status, fault, auth))

    def since(self, seq):
        with self.lock:
            entries = [e for e in self.entries if e[0] > seq] if seq > 0 else list(self.entries)
        return [{"seq": e[0], "time": round(e[1], 3), "method": e[2], "path": e[3],
                 "query": e[4], "status": e[5], "fault": e[6], "auth": e[7]} for e in entries]

    def clear(self):
        with self.lock:
            self.entries.clear()


# ---------------------------------------------------------------- the service base

class Service:
    name = "fake"

    def __init__(self, args=None):
        self.args = args
        self.bench = bool(getattr(args, "bench", False))   # --bench: cheaper checks
        self.lock = threading.RLock()
        self.faults = Faults()
        self.log = RequestLog()
        self.clock_offset = 0.0
        self.generation = 0      # bumped by /_test/reset: requests from before it are void
        self.control_generation = 0   # bumped by every control (/_test/) request: see memo()
        self._memo, self._memo_generation = {}, 0
        self._routes = []
        # The routes never change, so the answer for a (method, path) is found once.
        self.find_route = functools.lru_cache(maxsize=8192)(self.find_route)
        for attr in dir(type(self)):
            fn = getattr(type(self), attr, None)
            for method, pattern in getattr(fn, "_routes", ()):
                self._routes.append((method, re.compile(pattern), getattr(self, attr),
                                     _literal_prefix(pattern)))
        with self.lock:
            self.reset_state()

    @classmethod
    def add_arguments(cls, parser):
        """Hook: extra command-line options for this service."""

    # -- hooks a service overrides
    def reset_state(self):
        pass

    def secret_values(self):
        """[(label, value)] of every secret patrol must never print or record."""
        return []

    def error_response(self, req, status, code, message, headers=None):
        return json_response(status, {"error": {"code": code, "message": message}}, headers)

    def error_code_for_status(self, req, status):
        return {400: "invalid_request", 401: "invalid_credentials", 403: "forbidden",
                404: "not_found", 409: "conflict", 429: "rate_limited"}.get(
                    status, "internal_error" if status >= 500 else "error")

    # -- clock
    def now(self):
        return time.time() + self.clock_offset

    # -- dispatch
    def find_route(self, method, path):
        """(handler, params) of the first route whose regex fully matches path and whose
        method is method; (None, True) when only other methods match (405), (None, False)
        when nothing does (404)."""
        hit = (None, False)
        for rmethod, rx, fn, prefix in self._routes:
            if not path.startswith(prefix):        # cannot match: skip the regex
                continue
            m = rx.fullmatch(path)
            if m is None:
                continue
            if rmethod != method:
                hit = (None, True)
                continue
            hit = (fn, m.groupdict())
            break
        return hit

    def memo(self):
        """A dict for a service to remember answers that only the control API changes
        (call under self.lock): it is emptied after any control request."""
        if self._memo_generation != self.control_generation or len(self._memo) >= 16384:
            self._memo, self._memo_generation = {}, self.control_generation
        return self._memo

    def remembered(self, key, compute, *args):
        """memo()[key], computed as compute(*args) when missing (call under self.lock)."""
        memo = self.memo()
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = compute(*args)
        return hit

    def dispatch(self, req):
        fn, params = self.find_route(req.method, req.path)
        if fn is not None:
            req.params = dict(params)
            try:
                with self.lock:
                    if req.path.startswith("/_test/"):
                        self.control_generation += 1
                    out = fn(req)
            except ApiError as e:
                return self.error_response(req, e.status, e.code, e.message, e.headers)
            if isinstance(out, Response):
                return out
            if out is None:
                return Response(204)
            return json_response(200, out)
        if params:
            return self.error_response(req, 405, "method_not_allowed",
                                       f"{req.method} not allowed on {req.path}")
        return self.error_response(req, 404, "not_found", f"no route for {req.path}")

    def fault_answer(self, req, rule):
        status = rule.status or (429 if rule.action == "retry_after" else 500)
        headers = dict(rule.headers)
        if rule.retry_after is not None:
            ra = rule.retry_after
            headers["Retry-After"] = str(int(ra)) if isinstance(ra, (int, float)) and ra == int(ra) else str(ra)
        if rule.body is not None:
            return Response(status, rule.body, headers)
        resp = self.error_response(req, status, self.error_code_for_status(req, status),
                                   "injected fault")
        resp.headers.update(headers)
        return resp

    # -- generic control routes
    @route("POST", r"/_test/faults")
    def _ctl_faults_add(self, req):
        self.faults.add(req.json())
        return {"faults": self.faults.describe()}

    @route("GET", r"/_test/faults")
    def _ctl_faults_get(self, req):
        return {"faults": self.faults.describe()}

    @route("DELETE", r"/_test/faults")
    def _ctl_faults_clear(self, req):
        self.faults.clear()
        return {"faults": []}

    @route("GET", r"/_test/log")
    def _ctl_log(self, req):
        try:
            since = int(req.query.get("since", 0))
        except ValueError:
            raise ApiError(400, "invalid_request", "since must be an integer")
        return {"requests": self.log.since(since)}

    @route("DELETE", r"/_test/log")
    def _ctl_log_clear(self, req):
        self.log.clear()
        return {"requests": []}

    @route("GET", r"/_test/clock")
    def _ctl_clock_get(self, req):
        return {"now": self.now(), "offset": self.clock_offset}

    @route("POST", r"/_test/clock")
    def _ctl_clock(self, req):
        body = req.json()
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "expected {\"offset\"} or {\"advance\"}")
        try:
            if "offset" in body:
                self.clock_offset = float(body["offset"])
            if "advance" in body:
                self.clock_offset += float(body["advance"])
        except (TypeError, ValueError):
            raise ApiError(400, "invalid_request", "offset/advance must be numbers")
        return {"now": self.now(), "offset": self.clock_offset}

    @route("GET", r"/_test/secrets")
    def _ctl_secrets(self, req):
        return {"secrets": [{"label": l, "value": v} for l, v in self.secret_values() if v]}

    @route("POST", r"/_test/reset")
    def _ctl_reset(self, req):
        self.generation += 1
        self.faults.clear()
        self.log.clear()
        self.clock_offset = 0.0
        self.reset_state()
        return {"reset": True}


# ---------------------------------------------------------------- HTTP plumbing

_HUGE_CACHE = {}


def _huge_body(size):
    body = _HUGE_CACHE.get(size)
    if body is None:
        body = b'{"padding":"' + b"x" * max(size, 16) + b'"}'
        _HUGE_CACHE[size] = body
    return body


class FastHeaders:
    """Request headers as --bench parses them (fast_parse_headers): the part of
    email.message.Message the servers use, with its answers (case-insensitive names,
    first match for get, every match in order for get_all)."""
    __slots__ = ("_pairs", "_lower", "_first")

    def __init__(self, pairs):
        self._pairs = pairs
        self._lower = lower = [(k.lower(), v) for k, v in pairs]
        self._first = dict(reversed(lower))    # lower-case name -> its first value

    def get(self, name, failobj=None):
        return self._first.get(name.lower(), failobj)

    __getitem__ = get

    def get_all(self, name, failobj=None):
        n = name.lower()
        if len(self._first) == len(self._lower):     # no name twice: one value at most
            v = self._first.get(n)
            return failobj if v is None else [v]
        return [v for k, v in self._lower if k == n] or failobj

    def __contains__(self, name):
        return self.get(name) is not None

    def keys(self):
        return [k for k, _ in self._pairs]

    def values(self):
        return [v for _, v in self._pairs]

    def items(self):
        return list(self._pairs)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._pairs)


def fast_parse_headers(fp, _class=None):
    """http.client.parse_headers without the email parser, which costs more than the
    rest of a request (--bench only).  The same lines are read (and the same limits
    apply); each "Name: value" gives the value email's compat32 policy would: leading
    blanks dropped, a continuation line appended; a line that is no header ends them."""
    pairs = []
    for line in http.client._read_headers(fp):
        text = line.decode("iso-8859-1")
        if text in ("\r\n", "\n"):
            break
        if text[:1] in (" ", "\t") and pairs:
            k, v = pairs[-1]
            pairs[-1] = (k, v + "\r\n" + text.rstrip("\r\n"))
            continue
        name, sep, value = text.partition(":")
        if not sep or not name or " " in name or "\t" in name:
            break
        pairs.append((name, value.lstrip(" \t").rstrip("\r\n")))
    return FastHeaders(pairs)


def fast_header_block(fp):
    """fast_parse_headers for the usual case, in one piece: when the whole header block
    is already in fp's buffer and is made of plain CRLF-ended lines (fewer than the line
    reader's limit), it is consumed and taken apart at once, with the same answers.
    None (nothing consumed) otherwise: the line reader then does it."""
    peek = getattr(fp, "peek", None)
    if peek is None:
        return None
    buf = peek()
    if buf[:2] == b"\r\n":                   # no header at all
        fp.read(2)
        return FastHeaders([])
    end = buf.find(b"\r\n\r\n")
    if end < 0 or end > 60000:
        return None
    block = buf[:end]
    n = block.count(b"\n")
    if n >= 98 or block.count(b"\r\n") != n or block.count(b"\r") != n:
        return None
    fp.read(end + 4)
    pairs = []
    for text in block.decode("iso-8859-1").split("\r\n"):
        if text[:1] in (" ", "\t") and pairs:
            k, v = pairs[-1]
            pairs[-1] = (k, v + "\r\n" + text)
            continue
        name, sep, value = text.partition(":")
        if not sep or not name or " " in name or "\t" in name:
            break
        pairs.append((name, value.lstrip(" \t")))
    return FastHeaders(pairs)


_DATE = [0, ""]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 120                      # idle keep-alive connections close after this
    server_version = "patrol-fake/1"
    sys_version = ""

    def date_time_string(self, timestamp=None):
        """The Date header, formatted once a second."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        if _DATE[0] != now:
            _DATE[1] = super().date_time_string(now)
            _DATE[0] = now
        return _DATE[1]

    def bench_parse_request(self):
        """parse_request for --bench: a "METHOD TARGET HTTP/1.1" request line and a header
        block already buffered (fast_header_block) are taken apart here, with the same
        answers as BaseHTTPRequestHandler.parse_request, which does everything else."""
        raw = self.raw_requestline
        if raw[-11:] != b" HTTP/1.1\r\n":
            return BaseHTTPRequestHandler.parse_request(self)
        requestline = str(raw, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if len(words) != 3:
            return BaseHTTPRequestHandler.parse_request(self)
        headers = fast_header_block(self.rfile)
        if headers is None:
            return BaseHTTPRequestHandler.parse_request(self)
        self.requestline = requestline
        self.request_version = "HTTP/1.1"
        self.close_connection = False          # HTTP/1.1 keeps the connection by default
        self.command, path = words[0], words[1]
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        self.path = path
        self.headers = headers
        conntype = headers.get("Connection", "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive":
            self.close_connection = False
        if headers.get("Expect", "").lower() == "100-continue":
            if not self.handle_expect_100():
                return False
        return True

    def log_request(self, code="-", size="-"):
        if self.server.verbose:             # else log_message prints nothing: skip the work
            super().log_request(code, size)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (self.server.service.name, fmt % args))

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    return None
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += n
                if total > MAX_REQUEST_BODY:
                    return None
                chunks.append(self.rfile.read(n))
                self.rfile.readline(1024)
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if n < 0 or n > MAX_REQUEST_BODY:
            return None
        return self.rfile.read(n) if n else b""

    def _send(self, resp):
        status = resp.status
        body = resp.body if status not in (204, 304) and self.command != "HEAD" else b""
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
                 f"Server: {self.server_version}",
                 f"Date: {self.date_time_string()}"]
        if resp.content_type and body:
            lines.append(f"Content-Type: {resp.content_type}")
        if status not in (204, 304):
            lines.append(f"Content-Length: {len(resp.body)}")
        for k, v in resp.headers.items():
            lines.append(f"{k}: {v}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + body)    # one write: no delayed-ACK stall
        self.log_request(status, len(body))

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dispatch(self):
        svc = self.server.service
        raw = self.path
        if raw[:1] == "/" and raw[:2] != "//" and "#" not in raw:
            path, _, query = raw.partition("?")     # what urlsplit answers for these
        else:
            url = urlsplit(raw)
            path, query = url.path, url.query
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._send(Response(400, b"bad request framing", content_type="text/plain"))
            return
        req = Request(self.command, path, query, self.headers, body)
        if path.startswith("/_test/"):
            self._send(self._safe(svc, req))
            return
        rule = svc.faults.take(self.command, path) if svc.faults.rules else None
        resp = self._safe(svc, req) if rule is None else self._faulted(svc, req, rule)
        if resp is _STALE:
            return
        status = None
        if resp is not None:
            status = resp.status
            try:
                self._send(resp)
            except OSError:
                status = None
        svc.log.add(self.command, path, query, status, rule.action if rule else None, req.auth)

    def _faulted(self, svc, req, rule):
        """What a fault rule makes of req: the Response to send, None when the
        connection was dropped, _STALE when a reset happened during its delay."""
        action = rule.action
        if rule.delay:
            generation = svc.generation
            time.sleep(rule.delay)
            if generation != svc.generation:     # a reset happened meanwhile: the test is over
                self._drop()
                return _STALE
        resp = self._safe(svc, req) if rule.perform else None
        if action in ("drop", "lose_response"):
            self._drop()
            return None
        if resp is None and action == "delay":
            resp = Response(204)
        if action in ("status", "retry_after"):
            resp = svc.fault_answer(req, rule)
        elif action == "bad_json":
            st = rule.status or (resp.status if resp else 200)
            resp = Response(200 if st == 204 else st, b'{"id": "pat_01', rule.headers,
                            "application/json")
        elif action == "wrong_shape":
            st = rule.status or (resp.status if resp else 200)
            resp = Response(200 if st == 204 else st,
                            rule.body if rule.body is not None else {"unexpected": "shape"},
                            rule.headers)
        elif action == "huge":
            resp = Response(rule.status or 200, _huge_body(rule.size), rule.headers,
                            "application/json")
        if rule.retry_after is not None and action not in ("status", "retry_after"):
            resp.headers["Retry-After"] = str(rule.retry_after)
        return resp

    def _safe(self, svc, req):
        try:
            return svc.dispatch(req)
        except Exception:
            traceback.print_exc()
            return svc.error_response(req, 500, "internal_error", "fake server bug (see its stderr)")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_LIST = do_OPTIONS = _dispatch


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr, service, ssl_ctx=None, verbose=False):
        self.service, self.ssl_ctx, self.verbose = service, ssl_ctx, verbose
        super().__init__(addr, Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake happens here, in the connection's own thread, so a slow or
        # failing client (wrong-CA tests) never stalls the accept loop.
        if self.ssl_ctx is None:
            return super().finish_request(request, client_address)
        try:
            request.settimeout(30)
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            if self.verbose:
                sys.stderr.write(f"{self.service.name}: TLS handshake failed: {e}\n")
            return
        try:
            tls.settimeout(None)
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, socket.timeout, TimeoutError)):
            return
        super().handle_error(request, client_address)


def write_port_file(path, port):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main(service_cls, argv=None):
    ap = argparse.ArgumentParser(description=f"fake {service_cls.name} server for patrol tests")
    ap.add_argument("--cert", help="server certificate (PEM)")
    ap.add_argument("--key", help="server key (PEM)")
    ap.add_argument("--port-file", help="write the listening port here")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--plain", action="store_true", help="plain HTTP (loopback metadata endpoints)")
    ap.add_argument("--verbose", action="store_true", help="log every request on stderr")
    ap.add_argument("--bench", action="store_true",
                    help="benchmark mode: the same answers, cheaper checks (see the service)")
    service_cls.add_arguments(ap)
    args = ap.parse_args(argv)
    ctx = None
    if not args.plain:
        if not (args.cert and args.key):
            ap.error("--cert and --key are required unless --plain")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
    if args.bench:
        http.client.parse_headers = fast_parse_headers
        Handler.parse_request = Handler.bench_parse_request
    service = service_cls(args)
    server = Server((args.host, args.port), service, ctx, args.verbose)
    port = server.server_address[1]

    def stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"READY {port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except SystemExit:
        pass
    finally:
        server.server_close()
