"""End-to-end: patrol as a daemon (no action): scheduling, sd_notify, SIGHUP,
SIGTERM, revoke_after, on_rotate, the metrics file, idleness; and logging to
the journal when stderr is systemd's journal stream."""
import os
import pathlib
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

import harness
from test_rotate_vault import Setup, SCOPES


@pytest.fixture
def vault(start_server):
    return start_server("vault")


@pytest.fixture
def env(patrol, onplana, vault, ca):
    return Setup(patrol, onplana, vault, ca)


class NotifySocket:
    """A NOTIFY_SOCKET that records every sd_notify datagram."""

    def __init__(self, folder):
        self.path = str(pathlib.Path(folder) / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._recv, daemon=True)
        self.thread.start()

    def _recv(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            with self.lock:
                self.messages += data.decode().split("\n")

    def seen(self, prefix):
        with self.lock:
            return [m for m in self.messages if m.startswith(prefix)]

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    n = NotifySocket(tmp_path)
    yield n
    n.close()


JOURNAL_SOCKET = pathlib.Path("/run/systemd/journal/socket")


def journal_fields(datagram):
    """One entry of journald's native protocol: KEY=value lines, or KEY, a
    little-endian 64-bit length and the value for values with newlines."""
    fields, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k, (n,) = line, struct.unpack("<Q", datagram[nl + 1:nl + 9])
            v = datagram[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode()
    return fields


@pytest.fixture
def journal():
    """Stands in for journald at its fixed socket path, where none runs."""
    if JOURNAL_SOCKET.exists():
        pytest.skip("a journald owns the journal socket here")
    made = [d for d in (JOURNAL_SOCKET.parent.parent, JOURNAL_SOCKET.parent) if not d.exists()]
    try:
        for d in made:
            d.mkdir()
    except OSError as e:
        pytest.skip(f"cannot stand in for journald: {e}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(JOURNAL_SOCKET))
    sock.settimeout(0.2)
    try:
        yield sock
    finally:
        sock.close()
        JOURNAL_SOCKET.unlink()
        for d in reversed(made):
            d.rmdir()


def test_logs_go_to_the_journal_when_stderr_is_its_stream(env, journal, no_leaks, tmp_path):
    """Started by systemd with stderr on the journal ($JOURNAL_STREAM names
    it), patrol loads libsystemd and sends structured entries: the rotation
    with its MESSAGE_ID (doc/patrol.catalog) and integration, nothing on
    stderr, no token value anywhere."""
    env.configure([env.integration()])
    err = tmp_path / "stderr"
    with open(err, "wb") as fe:
        st = os.fstat(fe.fileno())
        r = subprocess.run(env.patrol.command(["--rotate-now"]), cwd=str(env.patrol.dir), stderr=fe,
                           stdout=subprocess.PIPE, timeout=120,
                           env=env.patrol.env({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}))
    assert r.returncode == 0, err.read_text()
    entries = []
    while True:
        try:
            entries.append(journal.recv(65536))
        except socket.timeout:
            break
    fields = [journal_fields(e) for e in entries]
    rotated = [f for f in fields if f.get("MESSAGE_ID") == "8ee6c5ae523140e88b72ca0e0f5251bf"]
    assert len(rotated) == 1, fields
    assert rotated[0]["PATROL_INTEGRATION"] == "ci-reader"
    assert rotated[0]["SYSLOG_IDENTIFIER"] == "patrol"
    assert rotated[0]["PRIORITY"] == "5"
    assert rotated[0]["MESSAGE"].startswith("rotated: ")
    assert err.read_text() == ""
    no_leaks(*[e for e in entries], r.stdout, secrets=env.secrets())


def store_token_id(env, name="ci-reader"):
    kv = env.kv(f"onplana/{name}")
    if not kv:
        return None
    return kv["versions"][str(kv["current_version"])]["data"]["token_id"]


def test_daemon_rotates_by_itself_and_keeps_rotating(env, notify, no_leaks):
    # 10 s tokens renewed 6 s before expiry: a rotation every ~4 s
    env.configure([env.integration()], policy=dict(ttl="10s", renew_before="6s", retry_min="1s", retry_max="2s"))
    d = env.patrol.spawn(env={"NOTIFY_SOCKET": notify.path})
    try:
        assert d.wait_for(lambda: notify.seen("READY=1"), timeout=10), d.stderr()
        assert d.wait_for(lambda: store_token_id(env) is not None, timeout=10), d.stderr()
        first = store_token_id(env)
        assert d.wait_for(lambda: store_token_id(env) not in (None, first), timeout=15), d.stderr()
        second = store_token_id(env)
        assert d.wait_for(lambda: store_token_id(env) not in (None, first, second), timeout=15), d.stderr()
        assert env.onplana.token(first)["state"] == "revoked"
        assert d.wait_for(lambda: env.onplana.token(second)["state"] == "revoked", timeout=5)
        st = notify.seen("STATUS=")
        assert st and "1 integrations" in st[-1] and "next rotation: ci-reader" in st[-1]
    finally:
        assert d.stop() == 0, d.stderr()
    assert notify.seen("STOPPING=1")
    active = env.active_tokens("ci-reader")
    assert len(active) == 1 and active[0]["id"] == store_token_id(env)
    no_leaks(d, secrets=env.secrets())


def test_watchdog_pings(env, notify):
    env.configure([env.integration()])
    d = env.patrol.spawn(env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    try:
        assert d.wait_for(lambda: len(notify.seen("WATCHDOG=1")) >= 3, timeout=5), d.stderr()
    finally:
        assert d.stop() == 0


def test_sighup_reloads_a_good_config_and_keeps_the_old_on_a_bad_one(env, notify):
    env.configure([env.integration()])
    d = env.patrol.spawn(env={"NOTIFY_SOCKET": notify.path})
    try:
        assert d.wait_for(lambda: store_token_id(env) is not None, timeout=10), d.stderr()
        env.configure([env.integration(), env.integration("second", scopes=["reports.read"])])
        d.send_signal(signal.SIGHUP)
        assert d.wait_for(lambda: store_token_id(env, "second") is not None, timeout=10), d.stderr()
        assert notify.seen("RELOADING=1")
        assert len(notify.seen("READY=1")) >= 2
        env.patrol.write_config("this is = not libconfig {")
        d.send_signal(signal.SIGHUP)
        assert d.wait_for(lambda: "keeping the previous configuration" in d.stderr(), timeout=5), d.stderr()
        assert "patrol.conf:1:" in d.stderr()
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0, d.stderr()


def test_sigterm_mid_rotation_then_restart_is_consistent(env, no_leaks):
    env.configure([env.integration()])
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    old = store_token_id(env)
    # a slow /me: the rotation is mid-way (token created, not verified) when SIGTERM comes
    env.onplana.faults({"method": "GET", "path": "/api/v1/me", "action": "delay", "delay": 20, "times": 1})
    later = {"PATROL_FAKE_NOW_OFFSET": str(24 * 86400)}   # patrol's clock: 24 days on, rotation due
    env.onplana.clear_log()
    d = env.patrol.spawn(env=later)
    t0 = time.monotonic()
    try:
        # the create was answered; /me (delayed 20 s) is in progress
        assert d.wait_for(lambda: any(e["path"] == "/api/v1/tokens" and e["method"] == "POST"
                                      for e in env.onplana.log()), timeout=10), d.stderr()
        time.sleep(1)
    finally:
        rc = d.stop(timeout=12)
    assert rc == 0, d.stderr()
    assert time.monotonic() - t0 < 10 + 12
    state = env.patrol.state()
    assert state is not None     # records load
    assert store_token_id(env) == old
    assert env.onplana.token(old)["state"] == "active"
    env.onplana.clear_faults()
    # restart: recovery resolves the rotation in flight, then the due rotation completes
    d = env.patrol.spawn(env=later)
    try:
        assert d.wait_for(lambda: store_token_id(env) != old, timeout=15), d.stderr()
        assert d.wait_for(lambda: env.onplana.token(old)["state"] == "revoked", timeout=5)
    finally:
        assert d.stop() == 0
    active = env.active_tokens("ci-reader")
    assert [t["id"] for t in active] == [store_token_id(env)]
    no_leaks(d, secrets=env.secrets())


def test_revoke_after_survives_a_restart(env):
    env.configure([env.integration()], policy=dict(ttl="30d", renew_before="7d", revoke_after="4s",
                                                   retry_min="1s", retry_max="2s"))
    assert env.patrol.run("--rotate-now").rc == 0
    first = store_token_id(env)
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    second = store_token_id(env)
    assert env.onplana.token(first)["state"] == "active"    # grace period
    st = env.patrol.run("--status", "--json").json()["integrations"][0]
    assert st["pending"]["kind"] == "revocation" and st["pending"]["token_id"] == first
    d = env.patrol.spawn()         # a new process carries out the revocation when due
    try:
        assert d.wait_for(lambda: env.onplana.token(first)["state"] == "revoked", timeout=10), d.stderr()
    finally:
        assert d.stop() == 0
    assert env.onplana.token(second)["state"] == "active"
    assert any(a["event"] == "revoked" and a["old_token_id"] == first for a in env.patrol.audit())
    st = env.patrol.run("--status", "--json").json()["integrations"][0]
    assert st["pending"] is None


def test_failing_hook_keeps_old_token_then_succeeds_without_minting_another(env, no_leaks):
    flag = env.patrol.dir / "hook-ok"
    hook = env.patrol.write_file("hook.sh", f"#!/bin/sh\necho hook ran for $PATROL_INTEGRATION\n"
                                            f"test -e {flag}\n", mode=0o700)
    env.configure([env.integration(on_rotate=[str(hook)])])
    flag.touch()
    assert env.patrol.run("--rotate-now").rc == 0
    old = store_token_id(env)
    flag.unlink()
    r = env.patrol.run("--rotate-now")
    assert r.rc == 1, r
    assert "incomplete" in r.stdout and "on_rotate" in r.stdout
    new = store_token_id(env)
    assert new != old                                        # the new token is in the store
    assert env.onplana.token(old)["state"] == "active"      # and the old one kept alive
    assert "hook ran for ci-reader" in r.stderr
    made_before = len(env.onplana.tokens(account="cli_wh"))
    flag.touch()
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    assert len(env.onplana.tokens(account="cli_wh")) == made_before   # no new token minted
    assert store_token_id(env) == new
    assert env.onplana.token(old)["state"] == "revoked"
    no_leaks(secrets=env.secrets())


def parse_prometheus(text):
    """A strict parser of the text format: HELP/TYPE before samples, valid names."""
    import re
    samples, types = {}, {}
    line_rx = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
                         r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*)\})? (-?[0-9.e+]+)$')
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter"), line
            types[name] = kind
            continue
        m = line_rx.match(line)
        assert m, f"bad metrics line: {line!r}"
        assert m.group(1) in types, f"sample before its TYPE: {line!r}"
        samples[(m.group(1), m.group(3) or "")] = float(m.group(5))
    assert text.endswith("\n")
    return samples


def test_metrics_file(env):
    metrics = env.patrol.dir / "patrol.prom"
    env.configure([env.integration()], metrics_file=str(metrics))
    d = env.patrol.spawn()
    try:
        assert d.wait_for(lambda: store_token_id(env) is not None and metrics.exists(), timeout=10), d.stderr()
        assert d.wait_for(lambda: 'patrol_rotations_total{integration="ci-reader",store="vault"} 1'
                          in metrics.read_text(), timeout=5)
        s = parse_prometheus(metrics.read_text())
    finally:
        assert d.stop() == 0
    lbl = 'integration="ci-reader",store="vault"'
    tok = env.onplana.token(store_token_id(env))
    assert s[("patrol_up", "")] == 1
    assert s[("patrol_token_expiry_timestamp_seconds", lbl)] == harness.parse_rfc3339(tok["expiresAt"])
    assert s[("patrol_rotations_total", lbl)] == 1
    assert s[("patrol_rotation_failures_total", lbl)] == 0
    assert abs(s[("patrol_last_success_timestamp_seconds", lbl)] - time.time()) < 30
    nxt = s[("patrol_next_rotation_timestamp_seconds", lbl)]
    assert 0 < harness.parse_rfc3339(tok["expiresAt"]) - nxt <= 7 * 86400


def voluntary_switches(pid):
    total = 0
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                total += int(line.split()[1])
    return total


def test_idle_daemon_does_not_wake_up(env, notify):
    env.configure([env.integration()])
    d = env.patrol.spawn(env={"NOTIFY_SOCKET": notify.path})
    try:
        assert d.wait_for(lambda: store_token_id(env) is not None, timeout=10)
        assert d.wait_for(lambda: len(notify.seen("STATUS=")) >= 2, timeout=5)
        time.sleep(0.5)
        before = voluntary_switches(d.pid)
        time.sleep(3)
        after = voluntary_switches(d.pid)
        # the next rotation is 23 days away: no timer, no polling, nothing to wake for
        assert after - before == 0, f"{after - before} wake-ups in 3 s"
    finally:
        assert d.stop() == 0


# ------------------------------------------------------------------ stopping, hooks and what monitoring sees

def test_sigterm_during_a_slow_on_rotate_hook_stops_within_10_s(env):
    """SPEC §6: SIGTERM stops the daemon within 10 s, leaving records
    consistent.  A hook that takes long (here 40 s; patrol allows 60) must
    not hold the daemon up: it is stopped, and the rotation left at a step
    the next start finishes (the hook runs again, the old token is revoked)."""
    started = env.patrol.dir / "hook-started"
    slow = env.patrol.dir / "hook-slow"
    hook = env.patrol.write_file("hook.sh", f"#!/bin/sh\ntouch {started}\n"
                                            f"if [ -e {slow} ]; then sleep 40; fi\nexit 0\n", mode=0o700)
    env.configure([env.integration(on_rotate=[str(hook)])])
    assert env.patrol.run("--rotate-now").rc == 0
    old = store_token_id(env)
    started.unlink()
    slow.touch()
    later = {"PATROL_FAKE_NOW_OFFSET": str(24 * 86400)}    # rotation due
    d = env.patrol.spawn(env=later)
    try:
        assert d.wait_for(started.exists, timeout=15), d.stderr()
        time.sleep(0.5)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(timeout=12)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - t0
    finally:
        rc = d.stop(timeout=60)
    assert took < 10, f"SIGTERM during on_rotate took {took:.1f} s to stop the daemon\n{d.stderr()}"
    assert rc == 0, d.stderr()
    assert env.patrol.state() is not None
    assert env.onplana.token(old)["state"] == "active"     # the hook never finished
    slow.unlink()
    d = env.patrol.spawn(env=later)
    try:
        assert d.wait_for(lambda: env.onplana.token(old)["state"] == "revoked", timeout=15), d.stderr()
    finally:
        assert d.stop() == 0


def test_metrics_file_says_patrol_is_down_after_it_stops(env):
    """patrol_up is "1 while the patrol daemon runs": once the daemon has
    stopped on SIGTERM, the file the node exporter keeps serving must not
    still claim patrol_up 1 (an alert on patrol_up == 0 could never fire)."""
    metrics = env.patrol.dir / "patrol.prom"
    env.configure([env.integration()], metrics_file=str(metrics))
    d = env.patrol.spawn()
    try:
        assert d.wait_for(lambda: metrics.exists() and 'patrol_rotations_total{integration="ci-reader",'
                          'store="vault"} 1' in metrics.read_text(), timeout=10), d.stderr()
    finally:
        assert d.stop() == 0, d.stderr()
    if metrics.exists():
        s = parse_prometheus(metrics.read_text())
        assert s.get(("patrol_up", "")) == 0, metrics.read_text()


def test_hook_that_exits_0_leaving_a_background_child_succeeds(env):
    """on_rotate's result is its exit status.  A hook that starts something
    in the background (a service restart script, `cmd &`) and exits 0 at
    once must count as success at once, not wait for its descendants to
    close the output pipe and then be reported "killed after 60 s"."""
    pidfile = env.patrol.dir / "bg.pid"
    hook = env.patrol.write_file("hook.sh", f"#!/bin/sh\nsleep 120 &\necho $! > {pidfile}\n"
                                            f"echo started\nexit 0\n", mode=0o700)
    env.configure([env.integration(on_rotate=[str(hook)])])
    try:
        r = env.patrol.run("--rotate-now", timeout=150)
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    assert r.rc == 0, r
    assert "killed after" not in r.stdout + r.stderr, r
    assert r.duration < 30, f"{r.duration:.0f} s for a hook that exited at once"


def test_metrics_next_rotation_follows_a_reloaded_renew_before(env):
    """After SIGHUP changes renew_before, the daemon schedules by the new
    policy (schedule.c), so the metrics file's next-rotation gauge (and
    --status) must show that time, not the one computed under the old policy."""
    metrics = env.patrol.dir / "patrol.prom"
    lbl = 'integration="ci-reader",store="vault"'
    env.configure([env.integration()], metrics_file=str(metrics))      # ttl 30d, renew_before 7d
    d = env.patrol.spawn()
    try:
        assert d.wait_for(lambda: metrics.exists() and f'patrol_rotations_total{{{lbl}}} 1'
                          in metrics.read_text(), timeout=10), d.stderr()
        expiry = parse_prometheus(metrics.read_text())[("patrol_token_expiry_timestamp_seconds", lbl)]
        env.configure([env.integration()], metrics_file=str(metrics),
                      policy=dict(ttl="30d", renew_before="2d", retry_min="1s", retry_max="2s"))
        d.send_signal(signal.SIGHUP)
        assert d.wait_for(lambda: "reloaded" in d.stderr(), timeout=5), d.stderr()
        time.sleep(0.5)
        nxt = parse_prometheus(metrics.read_text())[("patrol_next_rotation_timestamp_seconds", lbl)]
    finally:
        assert d.stop() == 0, d.stderr()
    # renew_before 2d, splay at most 3 % of it: due 2 days (less splay) before expiry
    assert 2 * 86400 - 0.03 * 2 * 86400 <= expiry - nxt <= 2 * 86400, (expiry - nxt) / 86400
    st = env.patrol.run("--status", "--json").json()["integrations"][0]
    assert 2 * 86400 - 0.03 * 2 * 86400 <= expiry - harness.parse_rfc3339(st["next_rotation"]) <= 2 * 86400, st
