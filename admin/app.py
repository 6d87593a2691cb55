"""The Flask app factory: panel under /admin, /healthz, later /metrics and /api."""
from __future__ import annotations

from flask import Flask
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme
from flask_wtf.csrf import CSRFProtect

from admin import auth, health
from admin.views import DashboardView
from db.database import database
from fleet.runtime import boot
from fleet.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    settings = boot(settings)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        WTF_CSRF_TIME_LIMIT=None,
        FLEET_SETTINGS=settings,
    )
    CSRFProtect(app)
    auth.init_app(app)
    app.register_blueprint(health.blueprint)
    Admin(app, name="Fleet", index_view=DashboardView(url="/admin"), theme=Bootstrap4Theme())

    @app.before_request
    def _open_db():
        database.connect(reuse_if_open=True)

    @app.teardown_request
    def _close_db(exc):
        if not database.is_closed():
            database.close()

    return app
