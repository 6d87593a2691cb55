"""API tokens on requests: `Authorization: Bearer fleet_…` on /api, /metrics, /healthz and the
panel's CSV exports (actors.tokens keeps them).

A request with the header is the token's alone: its operator (`token:NAME`, role = the
scope) stands in for any session cookie, a `read` token may only read (the guard in
admin.access refuses its writes, as a viewer's), and CSRF is not asked of it, since a browser
never adds the header by itself. Every other request keeps its session and its CSRF check.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app, g, jsonify, request
from flask_login import UserMixin

from actors.tokens import authenticate_token

ACCEPTED = ("/api/", "/api", "/metrics", "/healthz")
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="fleet"'}


@dataclass
class TokenOperator(UserMixin):
    """Who a token's request is, for the guard, the views and the audit log."""

    token_id: int
    name: str
    scope: str

    @property
    def id(self) -> str:  # the key of the export slots (admin.exports)
        return f"token:{self.token_id}"

    @property
    def email(self) -> str:
        return f"token:{self.name}"

    @property
    def role(self) -> str:
        return self.scope

    @property
    def is_admin(self) -> bool:
        return self.scope == "operate"


def accepts_tokens(path: str) -> bool:
    return path.startswith(ACCEPTED) or (path.startswith("/admin/") and path.endswith("/export/csv/"))


def _refused(why: str, status: int = 401):
    return jsonify(error=why), status, WWW_AUTHENTICATE


def authenticate_bearer():
    """`before_request`: a request with a bearer token is its token's, or refused with 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    if not accepts_tokens(request.path):
        return _refused("API tokens are accepted on /api, /metrics, /healthz and CSV exports only")
    token = authenticate_token(secret.strip(), request.remote_addr or "")
    if token is None:
        return _refused("the token is not valid, or was revoked, or has expired")
    g.api_token = token
    g._login_user = TokenOperator(token.id, token.name, token.scope)  # Flask-Login's user of this request
    return None


def check_csrf():
    """`before_request`: Flask-WTF's CSRF check, for every request but a token's."""
    if not g.get("api_token"):
        current_app.extensions["csrf"].protect(apply_exemptions=True)


def metrics_login():
    """`before_request` of /metrics: with FLEET_METRICS_TOKEN_REQUIRED, a token or a session."""
    from flask_login import current_user

    if current_app.config["FLEET_SETTINGS"].metrics_token_required and not current_user.is_authenticated:
        return _refused("/metrics needs an API token (FLEET_METRICS_TOKEN_REQUIRED is on)")
    return None


def init_app(app: Flask) -> None:
    """Before CSRF (which it replaces with `check_csrf`) and before the login guard."""
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.before_request(authenticate_bearer)
    app.before_request(check_csrf)
