"""Flask-Admin views; every one needs a logged-in operator."""
from __future__ import annotations

from flask import redirect, request, url_for
from flask_admin import AdminIndexView, expose
from flask_login import current_user


class LoginRequired:
    def is_accessible(self) -> bool:
        return current_user.is_authenticated

    def inaccessible_callback(self, name, **kwargs):
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


class DashboardView(LoginRequired, AdminIndexView):
    @expose("/")
    def index(self):
        return self.render("dashboard.html")
