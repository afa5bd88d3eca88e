"""pytest fixtures for patrol's end-to-end tests (helpers live in harness.py).

    ca             session: harness.CA (ca_pem, cert, key, wrong_ca; .session())
    start_server   factory: start_server("vault", *args, plain=False) -> FakeServer (or the
                   class registered in harness.SERVER_CLASSES); stopped after the test
    onplana        a fresh fake Onplana (harness.OnplanaServer) for this test
    patrol         harness.Patrol in a private tmp folder, trusting the test CA
    no_leaks       no_leaks(*where, secrets=()): assert_no_secrets over every server
                   this test started, plus the patrol folder's runs and state_dir
"""
import pytest

import harness


@pytest.fixture(scope="session")
def ca(tmp_path_factory):
    return harness.CA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def _servers():
    started = []
    yield started
    for s in reversed(started):
        s.stop()


@pytest.fixture
def start_server(ca, tmp_path_factory, _servers):
    workdir = tmp_path_factory.mktemp("servers")

    def start(module, *args, plain=False, cls=None):
        cls = cls or harness.SERVER_CLASSES.get(module, harness.FakeServer)
        srv = cls.start(module, ca, workdir, *args, plain=plain)
        _servers.append(srv)
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
        harness.assert_no_secrets(patrol, *where, servers=list(_servers), secrets=secrets)
    return check
