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


def json_bytes(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(status, obj, headers=None):
    return Response(status, json_bytes(obj), headers, "application/json")


class Request:
    def __init__(self, method, path, query_string, headers, body):
        self.method, self.path, self.query_string = method, path, query_string
        self.headers, self.body = headers, body
        self.query_all = parse_qs(query_string, keep_blank_values=True)
        self.query = {k: v[0] for k, v in self.query_all.items()}
        self.params = {}
        self.auth = None           # service's note on the credential kind, for the log
        self._json = None

    def json(self, required=True):
        """The body as JSON; ApiError 400 invalid_request when it is not."""
        if self._json is None:
            if not self.body:
                if not required:
                    return None
                raise ApiError(400, "invalid_request", "request body required")
            try:
                self._json = json.loads(self.body)
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
    def __init__(self):
        self.lock = threading.Lock()
        self.entries = collections.deque(maxlen=LOG_MAX)
        self.seq = 0

    def add(self, method, path, query, status, fault, auth):
        with self.lock:
            self.seq += 1
            self.entries.append({"seq": self.seq, "time": round(time.time(), 3),
                                 "method": method, "path": path, "query": query,
                                 "status": status, "fault": fault, "auth": auth})

    def since(self, seq):
        with self.lock:
            return [e for e in self.entries if e["seq"] > seq]

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
        self._routes = []
        for attr in dir(type(self)):
            fn = getattr(type(self), attr, None)
            for method, pattern in getattr(fn, "_routes", ()):
                self._routes.append((method, re.compile(pattern), getattr(self, attr)))
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
    def dispatch(self, req):
        allowed = False
        for method, rx, fn in self._routes:
            m = rx.fullmatch(req.path)
            if m is None:
                continue
            if method != req.method:
                allowed = True
                continue
            req.params = m.groupdict()
            try:
                with self.lock:
                    out = fn(req)
            except ApiError as e:
                return self.error_response(req, e.status, e.code, e.message, e.headers)
            if isinstance(out, Response):
                return out
            if out is None:
                return Response(204)
            return json_response(200, out)
        if allowed:
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
    __slots__ = ("_pairs",)

    def __init__(self, pairs):
        self._pairs = pairs

    def get(self, name, failobj=None):
        n = name.lower()
        for k, v in self._pairs:
            if k.lower() == n:
                return v
        return failobj

    __getitem__ = get

    def get_all(self, name, failobj=None):
        n = name.lower()
        return [v for k, v in self._pairs if k.lower() == n] or failobj

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
        if not sep or not name or any(c in name for c in " \t"):
            break
        pairs.append((name, value.lstrip(" \t").rstrip("\r\n")))
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
        url = urlsplit(self.path)
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
        rule = svc.faults.take(self.command, path)
        action = rule.action if rule else None
        if rule and rule.delay:
            generation = svc.generation
            time.sleep(rule.delay)
            if generation != svc.generation:     # a reset happened meanwhile: the test is over
                self._drop()
                return
        resp = self._safe(svc, req) if (rule is None or rule.perform) else None
        if resp is None and action == "delay":
            resp = Response(204)
        status = None
        if action in ("drop", "lose_response"):
            self._drop()
        else:
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
            if rule and rule.retry_after is not None and action not in ("status", "retry_after"):
                resp.headers["Retry-After"] = str(rule.retry_after)
            status = resp.status
            try:
                self._send(resp)
            except OSError:
                status = None
        svc.log.add(self.command, path, query, status, action, req.auth)

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
