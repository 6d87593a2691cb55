"""Sessions, redirects and the login throttle through Flask's test client (the same over real
HTTP, with parallel guesses, is in tests/test_web_attack.py)."""
from __future__ import annotations

import pytest

from tests.panel import PASSWORD, csrf_token, log_in


@pytest.fixture
def accounts(db):
    from actors.accounts import create_account

    return [create_account(f"{role}@example.com", PASSWORD, role) for role in ("admin", "viewer")]


def _copy_session(app, client):
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def test_logout_ends_a_copied_session(app, accounts):
    client = app.test_client()
    assert log_in(client, "admin@example.com").status_code == 302
    thief = _copy_session(app, client)
    assert thief.get("/admin/").status_code == 200
    client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    assert thief.get("/admin/").status_code == 302


@pytest.mark.parametrize("operation", ["set_password", "disable_account", "end_sessions"])
def test_account_operations_end_every_session_of_that_account_only(app, accounts, operation):
    from actors import accounts as ops

    viewer, admin = app.test_client(), app.test_client()
    log_in(viewer, "viewer@example.com")
    log_in(admin, "admin@example.com")
    if operation == "set_password":
        ops.set_password("viewer@example.com", "a-new-long-password")
    elif operation == "disable_account":
        ops.disable_account("viewer@example.com")
    else:
        ops.end_sessions(accounts[1].id)
    assert viewer.get("/admin/").status_code == 302
    assert admin.get("/admin/").status_code == 200


def test_a_disabled_account_cannot_log_in_until_enabled(app, accounts):
    from actors import accounts as ops

    ops.disable_account("viewer@example.com")
    refused = log_in(app.test_client(), "viewer@example.com")
    assert refused.status_code == 401 and "Wrong email or password." in refused.text
    ops.enable_account("viewer@example.com")
    assert log_in(app.test_client(), "viewer@example.com").status_code == 302


def test_a_session_cookie_of_the_old_format_is_not_accepted(app, accounts):
    """A cookie made before session versions (user id only) must log in again."""
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = str(accounts[0].id)
        session["_fresh"] = True
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize("target", ["/%09/evil.example/x", "//evil.example/x", "/%5Cevil.example", "https://evil.example/",
                                    "/%0d%0aSet-Cookie:%20x=1", "javascript:alert(1)", "/healthz", "admin/"])
def test_login_never_redirects_off_the_panel(app, accounts, target):
    client = app.test_client()
    response = client.post(f"/admin/login?next={target}", data={
        "email": "admin@example.com", "password": PASSWORD, "csrf_token": csrf_token(client)})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"


def test_login_follows_a_path_of_the_panel(app, accounts):
    client = app.test_client()
    response = client.post("/admin/login?next=/admin/jobs/%3Fflt0_status_equals%3Dfailed", data={
        "email": "admin@example.com", "password": PASSWORD, "csrf_token": csrf_token(client)})
    assert response.headers["Location"] == "/admin/jobs/?flt0_status_equals=failed"


def test_another_accounts_success_does_not_clear_the_failures(app, accounts):
    client = app.test_client()
    codes = []
    for _ in range(7):
        codes.append(log_in(client, "admin@example.com", "wrong-password").status_code)
        assert log_in(app.test_client(), "viewer@example.com").status_code == 302
    assert codes == [401] * 5 + [429] * 2


def test_forwarded_addresses_are_ignored_unless_proxies_are_trusted(app, accounts):
    """Without FLEET_TRUSTED_PROXIES a client cannot pick its own address to dodge the limit
    (with it, each client behind the proxy has its own: tests/test_web_attack.py, over HTTP)."""
    from admin.throttle import ADDRESS_LIMIT

    for n in range(ADDRESS_LIMIT.amount):
        response = log_in(app.test_client(), f"nobody{n}@example.com", "wrong-password",
                          headers={"X-Forwarded-For": f"10.0.{n}.1"})
        assert response.status_code == 401
    blocked = log_in(app.test_client(), "admin@example.com", headers={"X-Forwarded-For": "10.0.99.1"})
    assert blocked.status_code == 429


def test_unknown_accounts_cost_a_password_check_too(app, accounts, monkeypatch):
    """An attacker cannot tell which emails have accounts from how long a wrong password takes: an
    unknown email costs one check against a hash made the way account hashes are (no timing here,
    the work itself is compared)."""
    import actors.accounts as accounts_module
    from db.models.accounts import PanelAccount

    checked = []

    def counting(pwhash, password):
        checked.append(pwhash.split("$", 1)[0])  # the method and its cost, e.g. "scrypt:32768:8:1"
        return real(pwhash, password)

    real = accounts_module.check_password_hash
    monkeypatch.setattr(accounts_module, "check_password_hash", counting)
    for email in ("nobody@example.com", "admin@example.com"):
        client = app.test_client()
        client.post("/admin/login", data={"email": email, "password": "wrong-password", "csrf_token": csrf_token(client)})
    known_method = PanelAccount.get(PanelAccount.email == "admin@example.com").password_hash.split("$", 1)[0]
    assert checked[:1] == [known_method], (checked, known_method)


# -- idle time and lifetime (FLEET_SESSION_IDLE, FLEET_SESSION_MAX), made a few seconds here ----

def _short_sessions(settings, idle: float, lifetime: float):
    import dataclasses

    from admin.app import create_app

    app = create_app(settings)  # the session's settings: other settings would boot a second broker
    app.config.update(TESTING=True, FLEET_SETTINGS=dataclasses.replace(settings, session_idle=idle,
                                                                         session_max=lifetime))
    return app


def _opens(client, **headers) -> bool:
    return client.get("/admin/", headers=headers).status_code == 200


def _every_second_for(seconds: float, action) -> list:
    import time

    results, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        results.append(action())
        time.sleep(1)
    return results


def test_an_idle_session_ends_and_an_active_one_does_not(db, broker, settings, accounts):
    """Idle 3 s: requests a second apart keep the session past 3 s; then 5 s without one end it
    (a copy of its cookie too), and the login page says why."""
    import time

    app = _short_sessions(settings, idle=3, lifetime=600)
    client = app.test_client()
    assert log_in(client, "admin@example.com").status_code == 302
    assert all(_every_second_for(5, lambda: _opens(client)))
    thief = _copy_session(app, client)
    time.sleep(5)
    assert not _opens(thief) and not _opens(client)
    assert "Your session has expired" in client.get("/admin/login").text
    assert log_in(client, "admin@example.com").status_code == 302 and _opens(client)


def test_the_pages_own_polling_is_not_activity(db, broker, settings, accounts):
    app = _short_sessions(settings, idle=3, lifetime=600)
    client = app.test_client()
    assert log_in(client, "admin@example.com").status_code == 302
    polls = _every_second_for(6, lambda: _opens(client, **{"X-Fleet-Live": "1"}))
    assert polls[0] and not polls[-1]


def test_a_busy_session_still_ends_at_its_lifetime(db, broker, settings, accounts):
    """Lifetime 4 s, idle 3 s: a request every second keeps it open, until 4 s after the login."""
    app = _short_sessions(settings, idle=3, lifetime=4)
    client = app.test_client()
    assert log_in(client, "admin@example.com").status_code == 302
    opened = _every_second_for(7, lambda: _opens(client))
    assert opened[0] and not opened[-1]
    assert opened == sorted(opened, reverse=True)  # open, then closed for good


def test_session_limits_are_settings_with_bounds():
    from core.settings import SettingsError, load_settings

    defaults = load_settings({"FLEET_VAR_DIR": "/tmp/x"})
    assert (defaults.session_idle, defaults.session_max) == (1800, 43200)
    chosen = load_settings({"FLEET_VAR_DIR": "/tmp/x", "FLEET_SESSION_IDLE": "600", "FLEET_SESSION_MAX": "3600"})
    assert (chosen.session_idle, chosen.session_max) == (600, 3600)
    for name, value in (("FLEET_SESSION_IDLE", "0"), ("FLEET_SESSION_MAX", "inf"), ("FLEET_SESSION_MAX", "1e9"),
                        ("FLEET_SESSION_IDLE", "soon")):
        with pytest.raises(SettingsError, match=name):
            load_settings({"FLEET_VAR_DIR": "/tmp/x", name: value})
