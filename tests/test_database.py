import pytest
from peewee import IntegrityError, InterfaceError, OperationalError

from db import migrate as migrations
from db.database import database, open_database
from db.models.accounts import PanelAccount


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/m.db"
    else:
        url = request.getfixturevalue("postgres_url")
    db = open_database(url)
    db.connect()
    if request.param == "postgresql":
        for table in db.get_tables():
            db.execute_sql(f'DROP TABLE "{table}" CASCADE')
    yield db
    db.close()


def test_migrate_creates_every_table_once(fresh_db):
    assert [s.applied_at for s in migrations.status(fresh_db)] == [None] * len(migrations.available())
    applied = migrations.migrate(fresh_db)
    assert applied == migrations.available()
    assert "panel_account" in fresh_db.get_tables()
    assert migrations.migrate(fresh_db) == []
    assert all(s.applied_at is not None for s in migrations.status(fresh_db))


def test_models_work_on_both_databases(fresh_db):
    migrations.migrate(fresh_db)
    with PanelAccount.bind_ctx(fresh_db):
        account = PanelAccount(email="a@example.com", role="admin")
        account.set_password("s3cret-pass")
        account.save()
        stored = PanelAccount.get(PanelAccount.email == "a@example.com")
        assert stored.password_hash != "s3cret-pass" and stored.check_password("s3cret-pass")
        assert not stored.check_password("wrong")
        with pytest.raises(IntegrityError), fresh_db.atomic():
            PanelAccount.create(email="a@example.com", password_hash="x")


def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/sub/w.db")
    db.connect()
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 10000
    db.close()


def test_a_terminated_backend_never_poisons_the_pool(own_postgres_url):
    """The pool checks a connection it hands out and one it takes back (not just its type)."""
    from tests.helpers import terminate_backends

    db = open_database(own_postgres_url, max_connections=2)
    db.connect()
    db.execute_sql("SELECT 1")
    db.close()  # back to the pool, idle
    assert terminate_backends(own_postgres_url) == 1
    db.connect()  # the pool finds the idle connection dead and opens a new one
    assert db.execute_sql("SELECT 1").fetchone() == (1,)

    terminate_backends(own_postgres_url)  # now while it is checked out
    with pytest.raises((OperationalError, InterfaceError)):
        db.execute_sql("SELECT 1")
    db.close()  # a broken connection goes back: the pool closes it instead of keeping it
    db.connect()
    assert db.execute_sql("SELECT 1").fetchone() == (1,)
    db.close_all()


def test_global_binding_is_used_by_models(db):
    assert database.obj is not None
    assert PanelAccount.select().count() == 0


def test_unreachable_database_is_one_clear_line(fleet_env):
    from core.net import free_port
    from tests.helpers import fleet

    url = f"postgresql://postgres:pw-secret@127.0.0.1:{free_port()}/fleet"
    result = fleet("db", "migrate", env=dict(fleet_env, DATABASE_URL=url))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("fleet: database unreachable at postgresql://postgres:***@127.0.0.1:")
    assert "pw-secret" not in result.stderr
