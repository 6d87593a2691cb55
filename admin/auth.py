"""Panel login: Flask-Login sessions over `PanelAccount` rows, with failed logins throttled.

A session holds the account id and its session version (`id:version`); the user loader
accepts it only while the account's version is the same, so logout, a password change and
`fleet accounts disable` end every session of the account (see actors.accounts).

A session also ends FLEET_SESSION_IDLE seconds after its operator's last request, and
FLEET_SESSION_MAX seconds after its login whatever happened since: the times are in the signed
cookie, so a copied cookie ends with them. The pages' own polling (the `X-Fleet-Live` header)
is not the operator's activity: a tab left open on a live page still goes idle.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from actors.accounts import MAX_PASSWORD, authenticate, end_sessions, session_account
from admin.throttle import login_throttle

blueprint = Blueprint("auth", __name__, url_prefix="/admin")
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see the panel."

MAX_ID = 2**63 - 1
LOGIN_AT, SEEN_AT = "fleet_login_at", "fleet_seen_at"  # in the session, seconds since the epoch


@dataclass
class Operator(UserMixin):
    id: int
    email: str
    role: str
    session_version: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"


@login_manager.user_loader
def load_operator(session_id: str) -> Operator | None:
    try:
        account_id, version = (int(part) for part in session_id.split(":"))
    except ValueError:
        return None  # a session from before versions, or garbage: log in again
    if not (0 < account_id <= MAX_ID and 0 <= version <= MAX_ID):
        return None
    account = session_account(account_id, version)
    return Operator(account.id, account.email, account.role, account.session_version) if account else None


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD)])


def safe_next(target: str | None) -> str:
    """Where to go after login: a path of this panel, or the dashboard. Anything with a scheme,
    a host, a backslash or a control character (a tab or CR/LF that a browser would strip
    into `//evil.example`) is not followed."""
    home = url_for("admin.index")
    if not target or any(ord(c) < 0x20 or c in "\\\x7f" for c in target):
        return home
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/admin") or target.startswith("//"):
        return home
    return target


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("admin.index"))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        email, address = form.email.data, request.remote_addr or "unknown"
        throttle = login_throttle()
        wait = throttle.reserve(email, address)
        if wait:
            error = f"Too many failed logins; try again in {max(1, round(wait / 60))} minute(s)."
            return render_template("login.html", form=form, error=error), 429, {"Retry-After": str(wait)}
        account = authenticate(email, form.password.data)
        if account is not None:
            throttle.release(email, address)
            login_user(Operator(account.id, account.email, account.role, account.session_version))
            session[LOGIN_AT] = session[SEEN_AT] = int(time.time())
            return redirect(safe_next(request.args.get("next")))
        error = "Wrong email or password."
    elif request.method == "POST":
        error = "Enter an email and a password."
    return render_template("login.html", form=form, error=error), 401 if error else 200


@blueprint.route("/logout", methods=["POST"])
@login_required
def logout():
    end_sessions(current_user.id)  # a copy of the cookie made before now opens nothing
    logout_user()
    return redirect(url_for("auth.login"))


def end_stale_session():
    """`before_request`: log out a session past its idle time or its lifetime; else note the
    operator's activity (whole seconds: the cookie changes at most once a second)."""
    if "_user_id" not in session:
        return
    settings = current_app.config["FLEET_SETTINGS"]
    now = int(time.time())
    login_at, seen_at = session.get(LOGIN_AT), session.get(SEEN_AT)
    if (not isinstance(login_at, int) or not isinstance(seen_at, int)
            or now - login_at >= settings.session_max or now - seen_at >= settings.session_idle):
        logout_user()
        session.pop(LOGIN_AT, None)
        session.pop(SEEN_AT, None)
        flash("Your session has expired; please log in again.")
        return
    if seen_at != now and not request.headers.get("X-Fleet-Live"):
        session[SEEN_AT] = now


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.before_request(end_stale_session)
    app.register_blueprint(blueprint)
