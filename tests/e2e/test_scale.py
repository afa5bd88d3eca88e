"""Many integrations in one --rotate-now: concurrency up to max_parallel, results
printed in order as they are settled (and a reader of them that goes away), a
slow login holding back only its own account or store, a 429 storm,
max_parallel = 1 behaving as before, a 429 holding back the whole pool, and a
create that libcurl resent over a new connection, and GnuTLS (loaded by
libcurl) left uninitialised and libsystemd left unloaded outside systemd."""
import subprocess

import pytest

from test_rotate_vault import SCOPES, Setup


@pytest.fixture
def vault(start_server):
    return start_server("vault")


@pytest.fixture
def env(patrol, onplana, vault, ca):
    return Setup(patrol, onplana, vault, ca)


def names(n):
    return [f"int-{i:03d}" for i in range(n)]


def check_all_rotated(env, ns, previous=None):
    tokens = env.onplana.tokens(account="cli_wh")
    current = {}
    for name in ns:
        kv = env.kv(f"onplana/{name}")
        data = kv["versions"][str(kv["current_version"])]["data"]
        active = [t for t in tokens if t["state"] == "active" and t["name"].startswith(name + "-")]
        assert [t["id"] for t in active] == [data["token_id"]], name
        assert active[0]["token"] == data["token"]
        current[name] = data["token_id"]
    if previous:
        for name, old in previous.items():
            assert current[name] != old
            assert next(t for t in tokens if t["id"] == old)["state"] == "revoked"
    return current


def logins(server, path):
    return sum(e["method"] == "POST" and e["path"] == path for e in server.log())


@pytest.mark.parametrize("parallel", [1, 6])
def test_many_integrations_rotate_correctly(env, vault, parallel, no_leaks):
    ns = names(24)
    env.configure([env.integration(n) for n in ns], max_parallel=parallel)
    env.onplana.clear_log()
    vault.clear_log()
    r = env.patrol.run("--rotate-now", "--json")
    assert r.rc == 0, r
    # The workers share one Onplana session per account and one Vault login
    # per store, however many run at once.
    assert logins(env.onplana, "/oauth/token") == 1
    assert logins(vault, "/v1/auth/approle/login") == 1
    res = r.json()["results"]
    assert [x["integration"] for x in res] == ns          # configuration order, whatever the threads did
    assert all(x["result"] == "rotated" for x in res)
    first = check_all_rotated(env, ns)
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    check_all_rotated(env, ns, previous=first)
    st = env.patrol.state()["integrations"]
    assert all(st[n]["last_result"] == "rotated" and "in_flight" not in st[n] for n in ns)
    audit = env.patrol.audit()
    assert sum(a["event"] == "rotated" for a in audit) == 2 * len(ns)
    no_leaks(secrets=env.secrets())


def test_results_are_printed_in_order_as_they_finish(env, vault, no_leaks):
    # A slow last integration does not hold back the lines of those before it,
    # and patrol does not keep every result to the end of a long run.
    ns = names(3)
    env.configure([env.integration(n) for n in ns], max_parallel=2)
    vault.faults({"method": "POST", "path": f"/v1/secret/data/onplana/{ns[2]}", "action": "delay",
                  "delay": 4, "times": 1})
    d = env.patrol.spawn("--rotate-now")
    try:
        assert d.wait_for(lambda: f"{ns[1]}: rotated" in d.stdout(), timeout=30), d.stderr()
        assert d.proc.poll() is None, "the run ended before the slow integration was done"
        out = d.stdout()
        assert f"{ns[0]}: rotated" in out and ns[2] not in out
    finally:
        rc = d.proc.wait(60)
    assert rc == 0, d.stderr()
    lines = d.stdout().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ns
    assert all(": rotated " in ln for ln in lines)
    check_all_rotated(env, ns)
    no_leaks(secrets=env.secrets())


def test_a_reader_of_stdout_that_goes_away_does_not_stop_the_run(env, vault, no_leaks):
    # `patrol --rotate-now | head -1`: the lines are written while rotations
    # are in flight, and a closed pipe must not kill patrol between two steps.
    ns = names(4)
    env.configure([env.integration(n) for n in ns], max_parallel=2)
    p = subprocess.Popen(env.patrol.command(["--rotate-now"]), cwd=str(env.patrol.dir),
                         env=env.patrol.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, (p.returncode, err)
    check_all_rotated(env, ns)
    st = env.patrol.state()["integrations"]
    assert all(st[n]["last_result"] == "rotated" and "in_flight" not in st[n] for n in ns)
    no_leaks(secrets=env.secrets())


def test_a_slow_login_holds_back_only_its_own_account(env, vault, no_leaks):
    # Each account's session has its own lock: while one account's login
    # hangs, the worker of another account logs in and rotates.
    other = env.onplana.add_account(client_id="cli_other", org="org_acme", scopes_held=SCOPES)
    accounts = [env.patrol.account("svc", env.acct), env.patrol.account("svc2", other)]
    env.configure([env.integration("a-one"), env.integration("b-two", account="svc2")],
                  accounts=accounts, max_parallel=2)
    env.onplana.clear_log()
    env.onplana.faults({"method": "POST", "path": "/oauth/token", "action": "delay",
                        "delay": 3, "times": 1})
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    log = env.onplana.log()
    logins = [e for e in log if e["method"] == "POST" and e["path"] == "/oauth/token"]
    creates = [e for e in log if e["method"] == "POST" and e["path"] == "/api/v1/tokens"]
    assert len(logins) == 2 and len(creates) == 2
    slow = max(e["seq"] for e in logins)      # entries are logged when answered
    assert creates[0]["seq"] < slow, "the other account waited for the slow login"
    no_leaks(secrets=env.secrets())


def test_a_slow_store_login_holds_back_only_its_own_store(env, vault, no_leaks):
    # The same for stores: two stores (on one Vault), the first login hangs.
    stores = [env.store, dict(env.store, name="vault2")]
    env.configure([env.integration("a-one"), env.integration("b-two", store="vault2")],
                  stores=stores, max_parallel=2)
    vault.clear_log()
    vault.faults({"method": "POST", "path": "/v1/auth/approle/login", "action": "delay",
                  "delay": 3, "times": 1})
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    log = vault.log()
    logins = [e["seq"] for e in log if e["path"] == "/v1/auth/approle/login"]
    writes = [e["seq"] for e in log if e["method"] in ("POST", "PUT") and e["path"].startswith("/v1/secret/data/")]
    assert len(logins) == 2 and len(writes) == 2
    assert writes[0] < max(logins), "the other store waited for the slow login"
    no_leaks(secrets=env.secrets())


def test_a_429_storm_slows_the_pool_and_still_finishes(env, vault, no_leaks):
    ns = names(12)
    env.configure([env.integration(n) for n in ns], max_parallel=4)
    env.onplana.faults({"method": "POST", "path": "/api/v1/tokens", "action": "retry_after",
                        "status": 429, "retry_after": 1, "times": 10})
    vault.faults({"method": "POST", "path": "/v1/secret/data/.*", "action": "retry_after",
                  "status": 429, "retry_after": 1, "times": 6})
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    check_all_rotated(env, ns)
    throttled = [e for e in env.onplana.log() if e["status"] == 429]
    assert len(throttled) == 10
    no_leaks(secrets=env.secrets())


def test_a_429_holds_back_every_worker_until_retry_after(env, no_leaks):
    """A 429 from Onplana slows the whole pool: once patrol has seen it, no worker
    sends to Onplana again until Retry-After has passed."""
    ns = names(6)
    env.configure([env.integration(n) for n in ns], max_parallel=6)
    env.onplana.faults({"method": "POST", "path": "/api/v1/tokens", "action": "retry_after",
                        "status": 429, "retry_after": 2, "times": 1})
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    check_all_rotated(env, ns)
    log = env.onplana.log()
    t429 = next(e["time"] for e in log if e["status"] == 429)
    early = [e for e in log if t429 + 0.5 < e["time"] < t429 + 1.5]
    assert early == [], early
    no_leaks(secrets=env.secrets())


def test_a_create_resent_by_libcurl_leaves_no_duplicate(env, no_leaks):
    """The create's connection is reused and closes after the token was made but
    before the answer: libcurl sends the create again by itself.  patrol notices,
    finds the twin by its unique name and revokes it, and the rotation goes on."""
    env.configure([env.integration("int-000")])
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    first = check_all_rotated(env, ["int-000"])
    env.onplana.clear_log()
    env.onplana.faults({"method": "POST", "path": "/api/v1/tokens", "action": "lose_response",
                        "times": 1})
    r = env.patrol.run("--rotate-now")
    assert r.rc == 0, r
    check_all_rotated(env, ["int-000"], previous=first)
    creates = env.onplana.requests_to("POST", "/api/v1/tokens")
    assert len(creates) == 2 and creates[0]["fault"] == "lose_response", creates
    made = [t for t in env.onplana.tokens(account="cli_wh") if t["name"] != "" and t["id"] != first["int-000"]]
    assert len(made) == 2 and made[0]["name"] == made[1]["name"], made
    assert sorted(t["state"] for t in made) == ["active", "revoked"]
    assert any(e["path"] == "/api/v1/tokens" and "name=" in e["query"] for e in env.onplana.log())
    no_leaks(secrets=env.secrets())


def test_gnutls_loaded_by_libcurl_is_left_uninitialised(patrol):
    """libcurl's own dependencies (librtmp, libldap) load GnuTLS, which patrol
    never uses; its constructor must find patrol's _gnutls_global_init_skip()
    and skip initialising itself (about 0.8 MiB of every patrol process)."""
    r = subprocess.run([str(patrol.binary), "--version"], env={**patrol.env(), "LD_DEBUG": "bindings"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    if "libgnutls" not in r.stderr:
        pytest.skip("this libcurl does not load GnuTLS")
    asked = [line for line in r.stderr.splitlines() if "`_gnutls_global_init_skip'" in line]
    assert asked, "GnuTLS's constructor did not look the symbol up"
    assert all(line.split(" to ")[1].split()[0].endswith("/patrol") for line in asked), asked


def test_libsystemd_is_loaded_only_under_systemd(patrol, tmp_path):
    """A --rotate-now by hand or in CI does not map libsystemd and what it
    links (about 0.7 MiB); started with $NOTIFY_SOCKET (by systemd) it does
    (test_daemon.py checks what it then sends), and says so when it cannot."""
    def version(extra, **env):
        r = subprocess.run([str(patrol.binary), "--version"], env={**patrol.env(extra), **env},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stderr

    assert "libsystemd.so" not in version({}, LD_DEBUG="libs")
    assert "libsystemd.so" in version({"NOTIFY_SOCKET": "/nonexistent/notify"}, LD_DEBUG="libs")
    # A libsystemd.so.0 without the calls patrol makes, found first.
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "libsystemd.so.0"), "-x", "c", "-"],
                   input="int not_libsystemd;\n", text=True, check=True, timeout=60)
    err = version({"NOTIFY_SOCKET": "/nonexistent/notify"}, LD_LIBRARY_PATH=str(tmp_path))
    assert "warning: cannot load libsystemd (libsystemd.so.0: sd_notify" in err, err
