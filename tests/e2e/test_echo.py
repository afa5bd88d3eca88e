"""A service's error answer that quotes a credential patrol sent in that very request
(an OAuth error_description naming the client secret, a Vault error naming the
secret_id) must not carry the credential into patrol's output, state.json or
audit.jsonl (SPEC 4: no client secret or store credential in a record or log line)."""
import pytest

from test_faults import make_env  # noqa: F401  (fixture)


def test_session_error_quoting_the_client_secret_is_not_echoed(make_env, no_leaks):  # noqa: F811
    env = make_env()
    secret = env.acct["client_secret"]
    env.onplana.faults(dict(method="POST", path=r"/oauth/token", action="status", status=401,
                            times=-1, body={"error": "invalid_client",
                                            "error_description": f"client_secret '{secret}' "
                                                                 "does not match client cli_wh"}))
    r = env.patrol.run("--rotate-now")
    assert r.rc == 1, r
    assert "onplana: session" in r.stdout + r.stderr, r
    no_leaks(secrets=env.store.secrets)


def test_vault_login_error_quoting_the_secret_id_is_not_echoed(make_env, no_leaks):  # noqa: F811
    env = make_env()
    secret_id = env.store.role["secret_id"]
    env.store.srv.faults(dict(method="POST", path=r"/v1/auth/approle/login", action="status",
                              status=400, times=-1,
                              body={"errors": [f"invalid secret id \"{secret_id}\" for role patrol"]}))
    r = env.patrol.run("--rotate-now")
    assert r.rc == 1, r
    assert "vault: login" in r.stdout + r.stderr, r
    no_leaks(secrets=env.store.secrets)
