"""Helpers for patrol's end-to-end tests: fake servers, the patrol binary, leak checks.

Used through the fixtures in conftest.py; importable directly (`import harness`).

    srv = FakeServer.start("onplana", ca, workdir)      # or the start_server fixture
    srv.url, srv.port, srv.ctl("POST", "/_test/faults", [...]), srv.faults(...), srv.log()
    p = Patrol(tmp_path, ca); p.write_config({...}); r = p.run("--check-config")
    assert_no_secrets(r, p.state_dir, servers=[onplana], secrets=["extra"])
"""
import base64
import datetime
import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time

import requests

HERE = pathlib.Path(__file__).resolve().parent
SRCDIR = pathlib.Path(os.environ.get("PATROL_SRCDIR") or HERE.parent.parent)
BUILDDIR = pathlib.Path(os.environ.get("PATROL_BUILDDIR") or SRCDIR)
SERVERS = SRCDIR / "tests" / "servers"
PYTHON = "/usr/bin/python3"

sys.path.insert(0, str(SERVERS))
import mkca  # noqa: E402


# ------------------------------------------------------------------ time

def rfc3339(t):
    """Epoch seconds (or a datetime) -> '2027-02-26T07:00:00Z'."""
    if isinstance(t, datetime.datetime):
        t = t.timestamp()
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s):
    """'2027-02-26T07:00:00Z' (fraction and offsets allowed) -> epoch seconds."""
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()


DAY = 86400


# ------------------------------------------------------------------ TLS material

class CA:
    """Paths of the test CA (mkca.py): ca_pem, cert, key, wrong_ca (all str)."""

    def __init__(self, folder):
        self.dir = pathlib.Path(folder)
        paths = mkca.make_ca(str(self.dir))
        self.ca_pem, self.cert, self.key = paths["ca"], paths["cert"], paths["key"]
        self.wrong_ca = paths["wrong_ca"]

    def session(self):
        """A requests.Session that trusts the test CA."""
        return control_session(self.ca_pem)


def control_session(ca_pem):
    s = requests.Session()
    s.verify = ca_pem
    s.trust_env = False          # never go through a proxy from the environment
    return s


# ------------------------------------------------------------------ fake servers

class ServerError(AssertionError):
    pass


class FakeServer:
    """A tests/servers/<module>.py process and its control API."""

    def __init__(self, module, proc, port, ca, log_path, plain=False):
        self.module, self.proc, self.port, self.ca = module, proc, port, ca
        self.log_path = log_path
        self.plain = plain
        self.url = f"{'http' if plain else 'https'}://127.0.0.1:{port}"
        self.http = control_session(ca.ca_pem if ca else True)

    @classmethod
    def start(cls, module, ca, workdir, *args, plain=False, timeout=15):
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        port_file = workdir / f"{module}.{os.getpid()}.{time.monotonic_ns()}.port"
        log_path = workdir / f"{module}.{port_file.stem.split('.')[-1]}.log"
        cmd = [PYTHON, str(SERVERS / f"{module}.py"), "--port-file", str(port_file)]
        cmd += ["--plain"] if plain else ["--cert", ca.cert, "--key", ca.key]
        cmd += list(args)
        logf = open(log_path, "wb")
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=str(SRCDIR))
        logf.close()
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise ServerError(f"{module} server did not start ({' '.join(cmd)}):\n"
                                  + log_path.read_text(errors="replace")[-4000:])
            time.sleep(0.01)
        port = int(port_file.read_text())
        return cls(module, proc, port, ca, log_path, plain)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()

    def server_output(self):
        """What the server printed (tracebacks of fake-server bugs land here)."""
        return pathlib.Path(self.log_path).read_text(errors="replace")

    # -- control API
    def ctl(self, method, path, body=None, ok=(200, 201, 204), **kw):
        """Call the control API; the decoded JSON answer (None for 204)."""
        r = self.http.request(method, self.url + path, json=body, timeout=30, **kw)
        if r.status_code not in ok:
            raise ServerError(f"{self.module} {method} {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None

    def faults(self, *rules):
        """Append fault rules (dicts; see common.py); returns the current rule list."""
        return self.ctl("POST", "/_test/faults", list(rules))["faults"]

    def fault_state(self):
        return self.ctl("GET", "/_test/faults")["faults"]

    def clear_faults(self):
        self.ctl("DELETE", "/_test/faults")

    def log(self, since=0):
        """Requests seen: [{seq,time,method,path,query,status,fault,auth}]."""
        return self.ctl("GET", f"/_test/log?since={int(since)}")["requests"]

    def clear_log(self):
        self.ctl("DELETE", "/_test/log")

    def requests_to(self, method, path_regex, since=0):
        rx = re.compile(path_regex)
        return [e for e in self.log(since) if e["method"] == method and rx.fullmatch(e["path"])]

    def set_clock(self, offset):
        """The service's clock = real time + offset seconds."""
        return self.ctl("POST", "/_test/clock", {"offset": offset})

    def advance_clock(self, seconds):
        return self.ctl("POST", "/_test/clock", {"advance": seconds})

    def now(self):
        return self.ctl("GET", "/_test/clock")["now"]

    def reset(self):
        self.ctl("POST", "/_test/reset")

    def secrets(self):
        """[(label, value)] of every secret the service knows."""
        return [(s["label"], s["value"]) for s in self.ctl("GET", "/_test/secrets")["secrets"]]


class OnplanaServer(FakeServer):
    """The fake Onplana API with helpers for its own control endpoints."""

    def add_account(self, client_id="cli_test", org="org_acme",
                    scopes_held=("projects.read", "tasks.read"), client_secret=None, **extra):
        """Seed a service account; returns it (with client_secret)."""
        spec = dict(client_id=client_id, org=org, scopes_held=list(scopes_held), **extra)
        if client_secret is not None:
            spec["client_secret"] = client_secret
        return self.ctl("POST", "/_test/accounts", spec)["accounts"][0]

    def add_token(self, account, **fields):
        """Seed a token for a client_id: name, scopes, projectIds, expiresAt, createdAt,
        lastUsedAt (RFC 3339, epoch seconds or None), revoked. Returns it with "token"."""
        fields = {k: (rfc3339(v) if k.endswith("At") and isinstance(v, (int, float)) else v)
                  for k, v in fields.items()}
        return self.ctl("POST", "/_test/tokens", dict(fields, account=account))

    def tokens(self, **filters):
        """Every token with value and state; filters: account, name, orgId."""
        q = "&".join(f"{k}={requests.utils.quote(str(v))}" for k, v in filters.items())
        return self.ctl("GET", "/_test/tokens" + (f"?{q}" if q else ""))["tokens"]

    def token(self, token_id):
        for t in self.tokens():
            if t["id"] == token_id:
                return t
        return None

    def update_token(self, token_id, **fields):
        return self.ctl("PATCH", f"/_test/tokens/{token_id}", fields)

    def configure(self, **config):
        """page_size, max_ttl_days, session_expires_in, fractional_times."""
        return self.ctl("POST", "/_test/config", config)

    def drop_sessions(self):
        self.ctl("DELETE", "/_test/sessions")

    def api(self, account=None, bearer=None):
        """A requests.Session for the API itself, with a fresh session of `account`
        (the dict add_account returned) or the given bearer."""
        s = control_session(self.ca.ca_pem)
        if account is not None:
            r = s.post(self.url + "/oauth/token", timeout=30,
                       data={"grant_type": "client_credentials",
                             "client_id": account["client_id"],
                             "client_secret": account["client_secret"]})
            assert r.status_code == 200, r.text
            bearer = r.json()["access_token"]
        if bearer is not None:
            s.headers["Authorization"] = f"Bearer {bearer}"
        return s


SERVER_CLASSES = {"onplana": OnplanaServer}


# ------------------------------------------------------------------ libconfig

LIST_KEYS = {"accounts", "stores", "integrations"}


def _lc_string(s):
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _lc_value(v, key, indent):
    pad = "  " * (indent + 1)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) + ("L" if not -2**31 <= v < 2**31 else "")
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return _lc_string(v)
    if isinstance(v, pathlib.PurePath):
        return _lc_string(str(v))
    if isinstance(v, dict):
        inner = _lc_settings(v, indent + 1)
        return "{\n" + inner + "  " * indent + "}"
    if isinstance(v, (list, tuple)):
        if key in LIST_KEYS or any(isinstance(x, (dict, list, tuple)) for x in v):
            items = [pad + _lc_value(x, None, indent + 1) for x in v]
            return "(\n" + ",\n".join(items) + ("\n" if items else "") + "  " * indent + ")"
        return "[ " + ", ".join(_lc_value(x, None, indent) for x in v) + " ]"
    raise TypeError(f"cannot write {type(v).__name__} ({key}) to libconfig")


def _lc_settings(d, indent):
    pad = "  " * indent
    return "".join(f"{pad}{k} = {_lc_value(v, k, indent)};\n"
                   for k, v in d.items() if v is not None)


def libconfig(d):
    """A python dict -> libconfig text. None values are left out; lists of dicts and the
    accounts/stores/integrations keys become lists `( )`, other lists arrays `[ ]`."""
    return _lc_settings(d, 0)


# ------------------------------------------------------------------ the binary

class Result:
    """One patrol run: rc, stdout, stderr, args, duration."""

    def __init__(self, args, rc, stdout, stderr, duration):
        self.args, self.rc, self.stdout, self.stderr = args, rc, stdout, stderr
        self.duration = duration

    def json(self):
        return json.loads(self.stdout)

    def __str__(self):
        return (f"patrol {shlex.join(self.args)} -> rc={self.rc} in {self.duration:.2f}s\n"
                f"--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-6000:]}")

    __repr__ = __str__


class Patrol:
    """A patrol setup in its own folder: config, credential files, state_dir.

    PATROL_WRAPPER (env) prefixes every run, e.g. "valgrind -q --error-exitcode=99"."""

    def __init__(self, workdir, ca=None):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.ca = ca
        self.config_path = self.dir / "patrol.conf"
        self.state_dir = self.dir / "state"
        self.home = self.dir / "home"
        self.home.mkdir(exist_ok=True)
        self.binary = BUILDDIR / "src" / "patrol"
        self.runs = []

    # -- files
    def write_file(self, name, content, mode=0o600):
        """A file beside the config (credentials etc.), created with `mode`."""
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        os.chmod(path, mode)
        return path

    def write_config(self, config, credentials=None, mode=0o600):
        """Write patrol.conf from a dict (libconfig(); state_dir defaults to self.state_dir)
        or verbatim text, plus credential files {name: content} (mode 0600)."""
        for name, content in (credentials or {}).items():
            self.write_file(name, content)
        if isinstance(config, dict):
            config = dict({"state_dir": str(self.state_dir)}, **config)
            config = libconfig(config)
        self.write_file(self.config_path.name, config, mode)
        return self.config_path

    def onplana_config(self, server, **extra):
        """The `onplana` group for a fake server."""
        return dict(url=server.url, ca_file=self.ca.ca_pem if self.ca else None, **extra)

    def account(self, name, acct, org=None, **extra):
        """An `accounts` entry for a seeded account, writing its secret file."""
        secret_file = f"{name}.secret"
        self.write_file(secret_file, acct["client_secret"])
        return dict(name=name, org=org or acct["org"], client_id=acct["client_id"],
                    client_secret_file=secret_file, **extra)

    # -- running
    def env(self, extra=None):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "LANG": "C.UTF-8",
               # Not UTC on purpose: every time patrol writes must still be UTC.
               "TZ": "EST5EDT"}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS", "MALLOC_CHECK_",
                  "MALLOC_PERTURB_"):
            if k in os.environ:
                env[k] = os.environ[k]
        env.update(extra or {})
        return {k: v for k, v in env.items() if v is not None}

    def command(self, args, config=True):
        if not self.binary.exists():
            raise AssertionError(f"patrol binary not built: {self.binary} (run make)")
        wrapper = shlex.split(os.environ.get("PATROL_WRAPPER", ""))
        cmd = wrapper + [str(self.binary)]
        if config and self.config_path.exists():
            cmd += ["-c", str(self.config_path)]
        return cmd + [str(a) for a in args]

    def run(self, *args, config=True, env=None, timeout=120, input=None):
        """Run patrol [-c patrol.conf] ARGS; returns a Result (never raises on rc)."""
        cmd = self.command(args, config)
        t0 = time.monotonic()
        p = subprocess.run(cmd, cwd=str(self.dir), env=self.env(env), timeout=timeout,
                           input=input, capture_output=True, text=True, errors="replace")
        res = Result(cmd[len(cmd) - len(args):], p.returncode, p.stdout, p.stderr,
                     time.monotonic() - t0)
        self.runs.append(res)
        return res

    def spawn(self, *args, config=True, env=None):
        """Start patrol in the background (daemon mode); a Daemon handle."""
        n = len(self.runs)
        out, err = self.dir / f"daemon{n}.stdout", self.dir / f"daemon{n}.stderr"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(self.command(args, config), cwd=str(self.dir),
                                    env=self.env(env), stdout=fo, stderr=fe,
                                    stdin=subprocess.DEVNULL)
        return Daemon(proc, out, err)

    # -- records
    def state(self):
        """state.json decoded, or None when absent."""
        p = self.state_dir / "state.json"
        return json.loads(p.read_text()) if p.exists() else None

    def audit(self):
        """audit.jsonl as a list of dicts ([] when absent)."""
        p = self.state_dir / "audit.jsonl"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class Daemon:
    def __init__(self, proc, stdout_path, stderr_path):
        self.proc, self.stdout_path, self.stderr_path = proc, stdout_path, stderr_path

    @property
    def pid(self):
        return self.proc.pid

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal and wait; returns the exit code (kills after timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stdout(self):
        return pathlib.Path(self.stdout_path).read_text(errors="replace")

    def stderr(self):
        return pathlib.Path(self.stderr_path).read_text(errors="replace")

    def wait_for(self, predicate, timeout=10, interval=0.05):
        """Poll predicate() until true; False on timeout or when the daemon exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self.proc.poll() is not None:
                return bool(predicate())
            time.sleep(interval)
        return False


# ------------------------------------------------------------------ leak checks

def _variants(label, value):
    """The secret, plus pieces long enough to count as a leak (tokens: more than the
    12-char public prefix)."""
    out = [(label, value)]
    if value.startswith("onp_pat_") and len(value) > 20:
        out.append((label + " (first 16 chars)", value[:16]))
        out.append((label + " (without prefix)", value[12:]))
    elif len(value) >= 24:
        out.append((label + " (first 16 chars)", value[:16]))
        out.append((label + " (last 16 chars)", value[-16:]))
    return out


def _texts(item):
    """[(where, text)] for a str/bytes, a Result, a Daemon, a Patrol, a file or a folder."""
    if isinstance(item, Result):
        return [(f"stdout of patrol {shlex.join(item.args)}", item.stdout),
                (f"stderr of patrol {shlex.join(item.args)}", item.stderr)]
    if isinstance(item, Daemon):
        return [("daemon stdout", item.stdout()), ("daemon stderr", item.stderr())]
    if isinstance(item, Patrol):
        out = []
        for r in item.runs:
            out += _texts(r)
        return out + _texts(item.state_dir)
    if isinstance(item, bytes):
        return [("text", item.decode("utf-8", "replace"))]
    if isinstance(item, str):
        return [("text", item)]
    if isinstance(item, pathlib.PurePath):
        p = pathlib.Path(item)
        if p.is_dir():
            out = []
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    out += _texts(f)
            return out
        if p.is_file():
            return [(str(p), p.read_bytes().decode("utf-8", "replace"))]
        return []
    raise TypeError(f"assert_no_secrets: cannot read {type(item).__name__}")


def assert_no_secrets(*where, servers=(), secrets=()):
    """Fail when any secret shows up in any of `where`.

    where:   strings/bytes, pathlib.Path files or folders (missing ones are skipped),
             Result objects (stdout+stderr), Daemon handles, Patrol objects (every run's
             output and every file in its state_dir).
    servers: fake servers whose /_test/secrets are collected (Onplana: every token value
             ever issued or seeded, sessions, client secrets).
    secrets: extra secret strings (vault tokens, AWS keys, ...)."""
    found = []
    for s in servers:
        found += s.secrets()
    found += [(f"extra secret #{i}", v) for i, v in enumerate(secrets)]
    needles = []
    for label, value in found:
        if value and len(value) >= 6:
            needles += _variants(label, value)
    leaks = []
    for item in where:
        for place, text in _texts(item):
            for label, needle in needles:
                i = text.find(needle)
                if i >= 0:
                    leaks.append(f"{label} found in {place} at offset {i}: "
                                 f"...{text[max(0, i - 60):i]}<SECRET>...")
                    break
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def b64(s):
    return base64.b64encode(s.encode()).decode()
