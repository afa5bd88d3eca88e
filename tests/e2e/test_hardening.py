"""End-to-end process hardening (SECURITY.md): no core dumps and not dumpable, files in
state_dir 0600 whatever the umask, a state_dir others can write is refused, and
on_rotate children get neither patrol's descriptors nor any secret in their
environment nor a blocked signal -- from --rotate-now and from the daemon."""
import json
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import time

import pytest

import harness
from test_crash import INTEG, Env, VaultKV

HOOK = r"""#!/usr/bin/python3 -IS
import json, os, sys
fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))   # listdir's own fd is in here
with open(sys.argv[1], "a") as out:
    # the environment execve() gave (python adds LC_CTYPE to os.environ by itself)
    raw = open("/proc/self/environ", "rb").read().split(b"\0")
    env = dict(e.decode().split("=", 1) for e in raw if e)
    # the signal mask execve() kept (python blocks nothing by itself)
    blocked = [l.split()[1] for l in open("/proc/self/status") if l.startswith("SigBlk:")][0]
    out.write(json.dumps({"fds": fds, "env": env, "blocked": blocked,
                          "argv": sys.argv[1:], "uid": os.getuid()}) + "\n")
"""
ALLOWED_ENV = {"PATH", "PATROL_INTEGRATION", "PATROL_TOKEN_ID", "PATROL_SECRET"}


@pytest.fixture
def env(patrol, onplana, start_server, ca):
    e = Env(patrol, onplana, VaultKV(start_server, patrol, ca))
    return e


def hook_setup(env):
    out = env.patrol.dir / "hook.out"
    script = env.patrol.write_file("hook.py", HOOK, mode=0o700)
    return out, [str(script), str(out)]


def hook_runs(out):
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def check_hook_run(env, run):
    # 0, 1, 2 and the folder listdir opened: nothing patrol held (records, lock,
    # journal, sockets, signalfd/timerfd, an inherited descriptor)
    assert len(run["fds"]) == 4 and run["fds"][:3] == [0, 1, 2], run["fds"]
    assert set(run["env"]) == ALLOWED_ENV, sorted(run["env"])
    # the daemon blocks SIGTERM, SIGINT and SIGHUP for itself: not for the hook
    assert int(run["blocked"], 16) == 0, run["blocked"]
    assert run["env"]["PATROL_INTEGRATION"] == INTEG
    assert run["env"]["PATROL_SECRET"] == env.secret
    tok = env.in_store()
    assert run["env"]["PATROL_TOKEN_ID"] == tok["id"]
    for v in run["env"].values():
        assert tok["token"] not in v
        assert tok["token"][12:] not in v


def test_hook_gets_no_descriptors_and_no_secrets(env, no_leaks):
    out, argv = hook_setup(env)
    env.configure(on_rotate=argv)
    # patrol itself inherits an open descriptor: it must not reach the hook
    extra = os.open(env.patrol.dir / "inherited", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        cmd = env.patrol.command(["--rotate-now"])
        p = subprocess.run(cmd, cwd=str(env.patrol.dir), env=env.patrol.env(), pass_fds=(extra,),
                           capture_output=True, text=True, timeout=60)
    finally:
        os.close(extra)
    assert p.returncode == 0, p.stderr
    runs = hook_runs(out)
    assert len(runs) == 1, runs
    check_hook_run(env, runs[0])
    no_leaks(out, secrets=env.store.secrets)


def test_daemon_hook_gets_no_descriptors(env, no_leaks):
    """The daemon holds more (signalfd, timerfd, the notify socket, the lock)."""
    out, argv = hook_setup(env)
    env.configure(on_rotate=argv)
    d = env.patrol.spawn()
    try:
        assert d.wait_for(lambda: hook_runs(out), timeout=20), d.stderr()
        time.sleep(0.2)
    finally:
        rc = d.stop()
    assert rc == 0, d.stderr()
    check_hook_run(env, hook_runs(out)[0])
    no_leaks(d, out, secrets=env.store.secrets)


def limits(pid):
    for line in pathlib.Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6]
    raise AssertionError("no core limit line")


def test_daemon_has_core_dumps_off(env):
    env.configure()
    d = env.patrol.spawn()
    try:
        assert d.wait_for(lambda: (env.patrol.state_dir / "lock").exists(), timeout=20), d.stderr()
        assert limits(d.pid) == ["0", "0"], pathlib.Path(f"/proc/{d.pid}/limits").read_text()
        # children (on_rotate) inherit the limit too: nothing checks it there
    finally:
        assert d.stop() == 0, d.stderr()


def test_daemon_is_not_dumpable(env, tmp_path):
    """PR_SET_DUMPABLE 0: /proc/PID/environ, mem, ... belong to root, so other processes
    of the same user (and ptrace) cannot read patrol's memory.  Visible only when patrol
    runs as a non-root user: as root, the daemon is started as nobody through setpriv."""
    env.configure()
    if os.getuid() == 0:
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.skip("running as root and setpriv (util-linux) is missing")
        # A private copy readable by nobody: the config, its secrets and CA file, state_dir.
        home = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"patrol-nobody-{os.getpid()}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(mode=0o700)
        for f in env.patrol.dir.iterdir():
            if f.is_file():
                shutil.copy(f, home / f.name)
        shutil.copy(env.patrol.ca.ca_pem, home / "ca.pem")
        conf = (home / "patrol.conf").read_text()
        conf = conf.replace(str(env.patrol.state_dir), str(home / "state"))
        conf = conf.replace(env.patrol.ca.ca_pem, str(home / "ca.pem"))
        (home / "patrol.conf").write_text(conf)
        for f in [home, *home.iterdir()]:
            os.chown(f, 65534, 65534)
        cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
               str(env.patrol.binary), "-c", str(home / "patrol.conf")]
        state = home / "state"
        uid = 65534
    else:
        home, cmd, state, uid = None, env.patrol.command([]), env.patrol.state_dir, os.getuid()
    proc = subprocess.Popen(cmd, env=env.patrol.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (state / "lock").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        status = pathlib.Path(f"/proc/{proc.pid}/status").read_text()
        real_uid = int(next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1])
        assert real_uid == uid, "patrol does not run as the expected user"
        env_owner = os.stat(f"/proc/{proc.pid}/environ").st_uid
        assert env_owner == 0, "patrol is dumpable: /proc/PID/environ belongs to its user"
        assert limits(proc.pid) == ["0", "0"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        if home:
            shutil.rmtree(home, ignore_errors=True)


def test_state_files_are_0600_whatever_the_umask(env):
    env.configure()
    old = os.umask(0)
    try:
        env.rotate()
        # with crash points: a crash before the snapshot's rename leaves state.json.tmp
        r = env.patrol.run("--rotate-now", env={"PATROL_CRASH_AT": "records-before-rename"})
        assert r.rc in (0, 99), r
    finally:
        os.umask(old)
    sd = env.patrol.state_dir
    assert stat.S_IMODE(sd.stat().st_mode) == 0o700, oct(sd.stat().st_mode)
    names = sorted(p.name for p in sd.iterdir())
    for must in ("state.json", "audit.jsonl", "lock", "state.journal"):
        assert must in names, names
    if r.rc == 99:
        assert "state.json.tmp" in names, names
    for p in sd.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, (p.name, oct(p.stat().st_mode))


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777, 0o720])
def test_state_dir_writable_by_others_is_refused(env, mode):
    env.configure()
    env.patrol.state_dir.mkdir(mode=0o700)
    os.chmod(env.patrol.state_dir, mode)
    r = env.patrol.run("--rotate-now")
    assert r.rc != 0, r
    assert "writable by group or others" in r.stderr + r.stdout, r
    assert env.created() == [], "patrol made a token with records it cannot trust"
    assert list(env.patrol.state_dir.iterdir()) == []
    d = env.patrol.spawn()
    try:
        d.proc.wait(15)
    except subprocess.TimeoutExpired:
        pass
    rc = d.stop()
    assert rc != 0 and "writable by group or others" in d.stderr(), (rc, d.stderr())


def test_metrics_file_is_world_readable_and_holds_no_secret(env, no_leaks, tmp_path):
    """0644 on purpose (node_exporter reads it): so no secret may be in it."""
    metrics = env.patrol.dir / "metrics" / "patrol.prom"
    metrics.parent.mkdir()
    env.configure()
    cfg = env.patrol.config_path.read_text() + f'metrics_file = "{metrics}";\n'
    env.patrol.write_config(cfg)
    d = env.patrol.spawn()
    try:
        assert d.wait_for(lambda: metrics.exists() and env.patrol.audit(), timeout=20), d.stderr()
        time.sleep(0.3)
    finally:
        assert d.stop() == 0, d.stderr()
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644
    no_leaks(metrics, d, secrets=env.store.secrets)


def test_check_config_has_core_dumps_off(env):
    """--check-config reads every credential file too: hardened before it does.  The
    Vault secret_id file is a FIFO, so patrol waits in its open() until it is fed."""
    env.configure()
    fifo = env.patrol.dir / "vault-secret-id"
    secret_id = fifo.read_text()
    fifo.unlink()
    os.mkfifo(fifo, 0o600)
    proc = subprocess.Popen(env.patrol.command(["--check-config"]), env=env.patrol.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while limits(proc.pid) != ["0", "0"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        assert limits(proc.pid) == ["0", "0"]
        with open(fifo, "w") as f:
            f.write(secret_id)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, (out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
