"""Who may see and do what: login for everything under /admin and /api, writes for admins only.

One guard for the whole app, so no view can forget it; the views also hide what a
viewer may not use (actions, buttons).
"""
from __future__ import annotations

from flask import abort, jsonify, redirect, request, url_for
from flask_login import current_user

PUBLIC = ("/admin/login", "/admin/static/")
PROTECTED = ("/admin", "/api")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_admin() -> bool:
    return bool(getattr(current_user, "is_admin", False))


def guard():
    """`before_request`: anonymous → login (401 on /api); a viewer's write → 403."""
    path = request.path
    if not path.startswith(PROTECTED) or path.startswith(PUBLIC):
        return None
    if not current_user.is_authenticated:
        if path.startswith("/api"):
            return jsonify(error="login required"), 401
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if request.method not in SAFE_METHODS and path != "/admin/logout" and not is_admin():
        if path.startswith("/api"):
            return jsonify(error="this needs an admin (or a token of scope operate)"), 403
        abort(403)
    return None


class PanelAccess:
    """Mixin for Flask-Admin views: a logged-in operator sees them (the guard did the rest)."""

    def is_accessible(self) -> bool:
        return current_user.is_authenticated

    def inaccessible_callback(self, name, **kwargs):
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


class AdminAccess(PanelAccess):
    """Mixin for the admins' pages (accounts, tokens, the audit log): hidden from viewers, and
    403 when a viewer opens one anyway."""

    def is_accessible(self) -> bool:
        return super().is_accessible() and is_admin()

    def is_visible(self) -> bool:
        return is_admin()

    def inaccessible_callback(self, name, **kwargs):
        if current_user.is_authenticated:
            abort(403)
        return super().inaccessible_callback(name, **kwargs)
