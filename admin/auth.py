"""Panel login: Flask-Login sessions over `PanelAccount` rows, with failed logins throttled."""
from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Flask, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired

from admin import throttle
from db.models import utcnow
from db.models.accounts import PanelAccount

blueprint = Blueprint("auth", __name__, url_prefix="/admin")
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see the panel."


@dataclass
class Operator(UserMixin):
    id: int
    email: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@login_manager.user_loader
def load_operator(account_id: str) -> Operator | None:
    account = PanelAccount.get_or_none(PanelAccount.id == int(account_id))
    return Operator(account.id, account.email, account.role) if account else None


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("admin.index"))
    form = LoginForm()
    address = request.remote_addr or "unknown"
    if request.method == "POST":
        wait = throttle.retry_after(address)
        if wait:
            error = f"Too many failed logins; try again in {max(1, round(wait / 60))} minute(s)."
            return render_template("login.html", form=form, error=error), 429, {"Retry-After": str(wait)}
    error = None
    if form.validate_on_submit():
        account = PanelAccount.get_or_none(PanelAccount.email == form.email.data.strip().lower())
        if account and account.check_password(form.password.data):
            throttle.clear(address)
            account.last_login_at = utcnow()
            account.save(only=[PanelAccount.last_login_at])
            login_user(Operator(account.id, account.email, account.role))
            target = request.args.get("next", "")
            return redirect(target if target.startswith("/") and not target.startswith("//") else url_for("admin.index"))
        throttle.record_failure(address)
        error = "Wrong email or password."
    status = 401 if error else 200
    return render_template("login.html", form=form, error=error), status


@blueprint.route("/logout", methods=["POST"])
@login_required
def logout():
    logout_user()
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.register_blueprint(blueprint)
