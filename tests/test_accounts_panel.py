"""The Accounts page (admins only) and the audit log: create, role, disable, password reset,
tokens; sessions of a changed account end; every action of the panel, the API and the CLI
leaves its audit row, which the Audit page filters and exports."""
from __future__ import annotations

import getpass
import re

import pytest

import actors.workouts  # noqa: F401  (the panel's retry dispatches generate_user_workout_plan)
from actors import accounts, tokens
from db.models.accounts import PanelAccount
from db.models.audit import AuditEvent
from db.models.tokens import ApiToken
from tests.helpers import fleet
from tests.panel import PASSWORD, csrf_token, day_ids, failed_plan, flashes, log_in


def post(client, path: str, **data):
    return client.post(path, data={"csrf_token": csrf_token(client, "/admin/"), **data})


def account_id(email: str) -> int:
    return PanelAccount.get(PanelAccount.email == email).id


def shown_secret(page: str) -> str:
    return re.search(r'<pre [^>]*id="secret">([^<]+)</pre>', page).group(1)


def signed_in(client) -> bool:
    return client.get("/admin/jobs/").status_code == 200


def test_a_viewer_cannot_reach_accounts_tokens_or_the_audit_log(app, admin_client, viewer_client):
    for path in ("/admin/accounts/", "/admin/audit/", "/admin/audit/export/csv/"):
        assert viewer_client.get(path).status_code == 403, path
    for path in ("/admin/accounts/create/", f"/admin/accounts/{account_id('admin@example.com')}/disable/",
                 "/admin/accounts/tokens/create/"):
        assert post(viewer_client, path, email="x@y.io", name="t", scope="operate").status_code == 403, path
    assert "/admin/accounts/" not in viewer_client.get("/admin/").text
    assert "/admin/accounts/" in admin_client.get("/admin/").text
    assert app.test_client().get("/admin/accounts/").status_code == 302  # anonymous: to the login
    assert PanelAccount.select().count() == 2 and ApiToken.select().count() == 0
    assert AuditEvent.select().count() == 0


def test_create_with_a_generated_password_shown_once(app, admin_client):
    page = post(admin_client, "/admin/accounts/create/", email="New@Example.com", role="viewer", password="")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    password = shown_secret(page.text)
    assert len(password) >= 12 and "Created viewer account new@example.com." in flashes(page.text)
    assert password not in admin_client.get("/admin/accounts/").text
    assert log_in(app.test_client(), "new@example.com", password).status_code == 302
    weak = post(admin_client, "/admin/accounts/create/", email="weak@example.com", role="viewer", password="password1234")
    assert "most common passwords" in " ".join(flashes(admin_client.get(weak.headers["Location"]).text))
    event = AuditEvent.get()  # the refused one left no row
    assert (event.action, event.who, event.role, event.target, event.source, event.address) == (
        "accounts.create", "admin@example.com", "admin", "email=new@example.com role=viewer", "panel", "127.0.0.1")


def test_a_disabled_account_session_ends_and_it_cannot_log_in(app, admin_client, viewer_client):
    assert signed_in(viewer_client)
    post(admin_client, f"/admin/accounts/{account_id('viewer@example.com')}/disable/")
    assert viewer_client.get("/admin/jobs/").status_code == 302
    assert log_in(app.test_client(), "viewer@example.com").status_code == 401
    post(admin_client, f"/admin/accounts/{account_id('viewer@example.com')}/enable/")
    assert log_in(app.test_client(), "viewer@example.com").status_code == 302
    assert [e.action for e in AuditEvent.select().order_by(AuditEvent.id)] == ["accounts.disable", "accounts.enable"]


def test_a_password_reset_ends_the_sessions_and_only_the_new_password_opens(app, admin_client, viewer_client):
    page = post(admin_client, f"/admin/accounts/{account_id('viewer@example.com')}/reset-password/")
    password = shown_secret(page.text)
    assert not signed_in(viewer_client)
    assert log_in(app.test_client(), "viewer@example.com", PASSWORD).status_code == 401
    assert log_in(app.test_client(), "viewer@example.com", password).status_code == 302
    assert AuditEvent.get().action == "accounts.reset_password"


def test_a_role_change_ends_the_sessions_and_the_last_admin_stays(app, admin_client, viewer_client):
    post(admin_client, f"/admin/accounts/{account_id('viewer@example.com')}/role/", role="admin")
    assert not signed_in(viewer_client)
    assert PanelAccount.get(PanelAccount.email == "viewer@example.com").role == "admin"
    accounts.set_role("viewer@example.com", "viewer")
    me = account_id("admin@example.com")
    refused = post(admin_client, f"/admin/accounts/{me}/disable/")
    assert "is the last enabled admin" in " ".join(flashes(admin_client.get(refused.headers["Location"]).text))
    post(admin_client, f"/admin/accounts/{me}/role/", role="viewer")
    assert PanelAccount.get_by_id(me).role == "admin" and PanelAccount.get_by_id(me).disabled_at is None
    assert [e.action for e in AuditEvent.select()] == ["accounts.set_role"]


def test_tokens_made_and_revoked_on_the_accounts_page(app, admin_client):
    page = post(admin_client, "/admin/accounts/tokens/create/", name="grafana", scope="read", expires="30d")
    secret = shown_secret(page.text)
    assert secret.startswith("fleet_") and ApiToken.get().token_hash == tokens.digest(secret)
    assert app.test_client().get("/api/jobs", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    listed = admin_client.get("/admin/accounts/").text
    assert secret not in listed and 'data-token="grafana"' in listed and "127.0.0.1" in listed
    post(admin_client, f"/admin/accounts/tokens/{ApiToken.get().id}/revoke/")
    assert app.test_client().get("/api/jobs", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert [(e.action, e.rows) for e in AuditEvent.select().order_by(AuditEvent.id)] == [
        ("tokens.create", 1), ("tokens.revoke", 1)]


def test_panel_actions_are_audited_centrally_with_the_filter_and_the_rows(admin_client, broker):
    a, b = failed_plan("a@x.io", days=2, code="ERR_API_TIMEOUT"), failed_plan("b@x.io", code="ERR_AUTH")
    post(admin_client, "/admin/failed-plans/action/", action="reset", rowid=day_ids(a))
    matching = admin_client.post("/admin/failed-plans/retry-matching/?flt0_error_code_equals=ERR_AUTH",
                                 data={"csrf_token": csrf_token(admin_client, "/admin/")})
    assert matching.status_code == 302
    reset, retried = AuditEvent.select().order_by(AuditEvent.id)
    assert (reset.action, reset.rows, reset.source) == ("failed_plans.reset", 2, "panel")
    assert reset.target == "ids=" + ",".join(map(str, day_ids(a)))
    assert (retried.action, retried.target, retried.rows) == ("failed_plans.retry_matching", "error_code=ERR_AUTH", 1)
    assert len(day_ids(b)) == 1


def test_the_audit_page_filters_and_exports(admin_client):
    from actors import audit

    audit.record("jobs.retry", who="ops@example.com", role="admin", target="actor=x", rows=3, address="203.0.113.9")
    audit.record("tokens.create", who="alice", role="cli", target="name=grafana", source="cli")
    page = admin_client.get("/admin/audit/?flt0_source_equals=cli").text
    assert "name=grafana" in page and "actor=x" not in page
    export = admin_client.get("/admin/audit/export/csv/?flt0_action_equals=jobs.retry")
    assert export.status_code == 200 and "203.0.113.9" in export.text and "grafana" not in export.text


@pytest.fixture
def fleet_env(fleet_env):
    assert fleet("db", "migrate", env=fleet_env).returncode == 0
    return fleet_env


def test_cli_commands_are_audited_as_the_os_user(fleet_env):
    from db.database import open_database

    made = fleet("tokens", "create", "ci", "--scope", "operate", "--expires", "7d", env=fleet_env)
    assert made.returncode == 0 and made.stdout.startswith("fleet_") and "not shown again" in made.stderr
    listed = fleet("tokens", "list", env=fleet_env).stdout
    assert "ci" in listed and "operate" in listed and made.stdout.strip() not in listed
    assert fleet("tokens", "revoke", "ci", env=fleet_env).returncode == 0
    assert fleet("jobs", "cleanup", env=fleet_env).returncode == 0
    with AuditEvent.bind_ctx(open_database(fleet_env["DATABASE_URL"])):
        events = [(e.action, e.target, e.who, e.role, e.source) for e in AuditEvent.select().order_by(AuditEvent.id)]
    user = getpass.getuser()
    assert events == [
        ("db.migrate", "", user, "cli", "cli"),  # the fixture's
        ("tokens.create", events[1][1], user, "cli", "cli"),
        ("tokens.revoke", "name=ci", user, "cli", "cli"),
        ("jobs.cleanup", "days=7.0 keep=100", user, "cli", "cli"),
    ]
    assert events[1][1].startswith("name=ci scope=operate expires=")


def test_a_bad_expiry_is_a_usage_error():
    from click.testing import CliRunner

    from fleet.cli.tokens import tokens_group

    result = CliRunner().invoke(tokens_group, ["create", "x", "--scope", "read", "--expires", "soon"])
    assert result.exit_code == 2 and "is not a span like 30d" in result.output
