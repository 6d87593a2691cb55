"""The Flask app factory: panel under /admin, JSON under /api, /healthz, /metrics."""
from __future__ import annotations

from flask import Flask, g, request
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

import actors.all  # noqa: F401  (every actor declared: their queues are the ones the panel reads)
from actors.runtime import boot
from admin import access, api, api_jobs, audit_trail, auth, bearer, errors, headers, health, metrics, throttle
from admin.views import register_views
from admin.views.dashboard import DashboardView
from admin.views.translations import MAX_UPLOAD_BYTES
from core import formats, trace
from core.settings import Settings
from db.database import database

MAX_BODY = 1024 * 1024  # a form of the panel is a few kB; anything bigger is refused with 413
UPLOAD_FORM = "/admin/translations/"  # the one form that takes files
# The largest body the app reads: the upload form's, twice its limit (so the form can say it is
# too large). The server refuses a bigger one from its Content-Length, before reading the body
# into a temporary file (`fleet web` gives waitress LARGEST_BODY + 1: it refuses at the limit).
LARGEST_BODY = 2 * MAX_UPLOAD_BYTES


def trust_proxies(app: Flask, n: int) -> None:
    """Read the client's address, scheme and host as the `n` proxies in front of us saw them."""
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)


def create_app(settings: Settings | None = None) -> Flask:
    settings = boot(settings)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=MAX_BODY,
        FLEET_SETTINGS=settings,
    )
    if settings.trusted_proxies:
        trust_proxies(app, settings.trusted_proxies)

    @app.before_request
    def _upload_limit():
        # Before CSRF reads the form: an upload up to twice the form's limit is read, so the form
        # can say it is too large; a bigger one gets the 413 page.
        if request.path == UPLOAD_FORM:
            request.max_content_length = LARGEST_BODY

    CSRFProtect(app)
    bearer.init_app(app)
    headers.init_app(app)
    throttle.init_app(app)
    auth.init_app(app)
    errors.init_app(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(metrics.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(api_jobs.blueprint)
    admin = Admin(app, name="Fleet", index_view=DashboardView(name="Dashboard", url="/admin"),
                  theme=Bootstrap4Theme(base_template="fleet_base.html", fluid=True))
    register_views(admin)
    app.jinja_env.filters.update(moment=formats.moment, seconds=formats.seconds, duration=formats.duration)

    @app.before_request
    def _start_request():
        g.trace_token = trace.set_context(trace_id=trace.new_trace_id(), path=request.path)
        # no connect here: peewee connects on the first query, so /healthz can report a dead database itself

    app.before_request(access.guard)
    audit_trail.init_app(app)

    @app.teardown_request
    def _end_request(exc):
        if not database.is_closed():
            database.close()
        if "trace_token" in g:
            trace.reset_context(g.pop("trace_token"))

    return app
