"""pytest fixtures for patrol's end-to-end tests (helpers live in harness.py).

    ca             session: harness.CA (ca_pem, cert, key, wrong_ca; .session())
    start_server   factory: start_server("vault", *args, plain=False, fresh=False) ->
                   FakeServer (or the class registered in harness.SERVER_CLASSES).
                   One process per (module, args, plain) is kept for the whole session
                   and handed to each test after POST /_test/reset (state, faults, log,
                   clock cleared), which saves ~0.1 s of start-up per test. A second
                   server of the same kind in one test, fresh=True, or a pooled server
                   that a test stopped, gets a new process (stopped after the test).
    onplana        the fake Onplana (harness.OnplanaServer), clean for this test
    patrol         harness.Patrol in a private tmp folder, trusting the test CA
    no_leaks       no_leaks(*where, secrets=()): assert_no_secrets over every server this
                   test got, plus the patrol folder's runs and state_dir
"""
import pytest

import harness


@pytest.fixture(scope="session")
def ca(tmp_path_factory):
    return harness.CA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def _server_pool():
    pool = {}
    yield pool
    for srv in pool.values():
        srv.stop()


@pytest.fixture
def _servers():
    """[(server, stop_after_test)] handed to the current test."""
    got = []
    yield got
    for srv, own in reversed(got):
        if own:
            srv.stop()


@pytest.fixture
def start_server(ca, tmp_path_factory, _server_pool, _servers):
    workdir = tmp_path_factory.getbasetemp() / "servers"

    def start(module, *args, plain=False, cls=None, fresh=False):
        cls = cls or harness.SERVER_CLASSES.get(module, harness.FakeServer)
        key = (module, tuple(args), plain, cls)
        srv = _server_pool.get(key)
        if not fresh and srv is not None and srv.alive() \
                and not any(s is srv for s, _ in _servers):
            try:
                srv.reset()
                _servers.append((srv, False))
                return srv
            except Exception:
                srv.stop()
        srv = cls.start(module, ca, workdir, *args, plain=plain)
        pooled = not fresh and not (key in _server_pool and _server_pool[key].alive())
        if pooled:
            _server_pool[key] = srv
        _servers.append((srv, not pooled))
        return srv
    return start


@pytest.fixture
def onplana(start_server):
    return start_server("onplana")


@pytest.fixture
def patrol(ca, tmp_path):
    return harness.Patrol(tmp_path / "patrol", ca)


@pytest.fixture
def no_leaks(_servers, patrol):
    def check(*where, secrets=()):
        harness.assert_no_secrets(patrol, *where, servers=[s for s, _ in _servers],
                                  secrets=secrets)
    return check
