"""End-to-end: bad input is one clear error naming where, and loses nothing: a
configuration (or @include) that is not a regular file, one secret written by
two integrations, a damaged state.journal."""
import signal

INTEG = ('integrations = (\n'
         '  { name = "a"; account = "svc"; store = "v"; scopes = [ "projects.read" ]; secret = "onplana/x"; },\n'
         '  { name = "b"; account = "svc"; store = "v"; scopes = [ "projects.read" ];\n'
         '    secret = "onplana/x"; }\n);\n')
BASE = ('accounts = ( { name = "svc"; org = "org_a"; client_id = "c"; client_secret = "s"; } );\n'
        'stores = ( { name = "v"; type = "vault"; url = "https://v.example"; '
        'auth = { method = "token"; token = "t"; }; } );\n')


def test_config_that_is_a_directory_is_exit_78_with_its_name(patrol, tmp_path):
    """libconfig's flex scanner hit EISDIR and called exit(2) with "input in flex
    scanner failed": no file named, exit 2 instead of 78."""
    d = tmp_path / "conf.d"
    d.mkdir(mode=0o700)
    r = patrol.run("-c", str(d), "--check-config", config=False)
    assert r.rc == 78, r
    assert r.stderr.strip().splitlines() == [f"patrol: error: {d}: not a regular file"], r


def test_sighup_with_an_include_that_is_a_directory_keeps_the_daemon(patrol, tmp_path):
    """The same through @include at a SIGHUP reload: reported, the old configuration
    kept (SPEC section 6), not exit(2)."""
    inc = tmp_path / "inc.d"
    inc.mkdir(mode=0o700)
    patrol.write_config(f'state_dir = "{patrol.state_dir}";\n')
    d = patrol.spawn()
    try:
        assert d.wait_for(lambda: "started" in d.stderr(), timeout=10), d.stderr()
        patrol.write_config(f'state_dir = "{patrol.state_dir}";\n@include "{inc}"\n')
        d.send_signal(signal.SIGHUP)
        assert d.wait_for(lambda: "keeping the previous configuration" in d.stderr(), timeout=10), d.stderr()
        assert f'{patrol.config_path}:2: @include "{inc}": not a regular file' in d.stderr()
        assert d.proc.poll() is None, d.stderr()
    finally:
        assert d.stop() == 0, d.stderr()


def test_two_integrations_on_one_secret_are_refused(patrol):
    """Each would revoke the token the other just stored."""
    patrol.write_config(f'state_dir = "{patrol.state_dir}";\n' + BASE + INTEG)
    r = patrol.run("--check-config")
    assert r.rc == 78, r
    assert r.stderr.strip().splitlines() == [
        f'patrol: error: {patrol.config_path}:7: integration "b": store "v" secret "onplana/x" '
        f'is already integration "a"\'s (line 5)'], r


def test_a_damaged_journal_line_refuses_to_start_and_keeps_the_journal(patrol):
    """Only the last line can be torn; lines after a bad one used to be dropped and
    the journal folded, forgetting a rotation in flight for good."""
    patrol.write_config(f'state_dir = "{patrol.state_dir}";\n')
    patrol.state_dir.mkdir(mode=0o700)
    journal = patrol.state_dir / "state.journal"
    text = ('{"integration":"a","entry":{"token_id":"pat_A"}}\n'
            '{"integration":"a","entry":{"token_id":"pat_XX\n'
            '{"integration":"b","entry":{"in_flight":{"step":"created","new_token_id":"pat_NEW"}}}\n')
    journal.write_text(text)
    journal.chmod(0o600)
    for args in (["--rotate-now"], ["--status"]):
        r = patrol.run(*args)
        assert r.rc != 0, r
        assert f"{journal}:2: not a journal line" in r.stderr, r
    assert journal.read_text() == text
    assert not (patrol.state_dir / "state.json").exists()
