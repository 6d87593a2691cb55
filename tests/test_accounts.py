import pytest

from db.models.accounts import PanelAccount
from tests.helpers import fleet, migrated


@pytest.fixture
def fleet_env(fleet_env):
    migrated(fleet_env["DATABASE_URL"])
    return fleet_env


def test_create_account_from_stdin_hashes_the_password(fleet_env):
    result = fleet("accounts", "create", "Ops@Example.com", "--role", "admin", "--password-stdin",
                   env=fleet_env, input="correct horse\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Created admin account ops@example.com"
    listed = fleet("accounts", "list", env=fleet_env)
    assert "ops@example.com" in listed.stdout and "admin" in listed.stdout
    from db.database import open_database

    db = open_database(fleet_env["DATABASE_URL"])
    with PanelAccount.bind_ctx(db):
        account = PanelAccount.get(PanelAccount.email == "ops@example.com")
        assert "correct horse" not in account.password_hash
        assert account.check_password("correct horse")


def test_duplicate_account_is_refused(fleet_env):
    assert fleet("accounts", "create", "a@b.io", "--password-stdin", env=fleet_env, input="a-long-password\n").returncode == 0
    again = fleet("accounts", "create", "a@b.io", "--password-stdin", env=fleet_env, input="a-long-password\n")
    assert again.returncode == 1
    assert again.stderr.strip() == "fleet: an account for a@b.io already exists"


@pytest.mark.parametrize("args,stdin,message", [
    (["not-an-email"], "a-long-password\n", "is not an email address"),
    (["x@y.io"], "short\n", "at least 12 characters"),
    (["x@y.io"], "eleven-char\n", "at least 12 characters"),
    (["x@y.io"], "            \n", "the password is blank"),
    (["mail-address@y.io"], "Mail-Address@y.io\n", "may not be the email address"),
    (["mail-address@y.io"], "mail-address\n", "may not be the email address"),
    (["x@y.io"], "passwordpassword\n", "one of the most common passwords"),
    (["x@y.io"], "Password1234!\n", "one of the most common passwords"),
    (["x@y.io"], "123456789012\n", "one of the most common passwords"),
])
def test_bad_account_input_is_a_usage_error(fleet_env, args, stdin, message):
    result = fleet("accounts", "create", *args, "--password-stdin", env=fleet_env, input=stdin)
    assert result.returncode == 2
    assert message in result.stderr


def test_unknown_role_is_a_usage_error(fleet_env):
    result = fleet("accounts", "create", "x@y.io", "--role", "root", "--password-stdin", env=fleet_env, input="a-long-password\n")
    assert result.returncode == 2 and "'root' is not one of" in result.stderr


def test_unmigrated_database_is_named(tmp_path, redis_url):
    import os

    (tmp_path / "new.db").touch()  # a database without the schema (a missing one is another error)
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path}/new.db", FLEET_VAR_DIR=str(tmp_path))
    result = fleet("accounts", "list", env=env)
    assert result.returncode == 1
    assert "migration(s) pending" in result.stderr and "fleet db migrate" in result.stderr
