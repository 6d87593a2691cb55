"""The panel's and the API's side of the audit log: who is asking, from where, and a record of
every state-changing request that its view did not record itself.

A view that knows more than the request says (how many rows it touched) calls `record`; every
other successful POST under /admin or /api is recorded by `record_the_rest` after the response,
as `<page>.<action>` with its URL arguments, filter and form fields (never a password or a
token) as the target, and the number of selected rows. A request whose view flashed an
error changed nothing and is not recorded.
"""
from __future__ import annotations

from flask import Flask, g, request, session
from flask_login import current_user

from actors import audit

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
NOT_ACTIONS = ("/admin/login", "/admin/logout", "/admin/static/")
ROUTINE_FIELDS = ("csrf_token", "rowid", "action", "url", "back")
SECRET_WORDS = ("password", "token", "secret", "key")


def record(action: str, target: str = "", rows: int | None = None) -> None:
    """Note an action of the operator (or API token) of this request: its email (`token:NAME`),
    role (a token's scope), the client's proxy-aware address and this request's trace id."""
    g.audited = True
    audit.record(action, who=getattr(current_user, "email", "") or "anonymous",
                 role=getattr(current_user, "role", "") or "", target=target, rows=rows,
                 source="api" if g.get("api_token") else "panel", address=request.remote_addr or "")


def filter_text(spec: dict) -> str:
    """A filter spec (`key: value`) as the audit log's target."""
    return " ".join(f"{key}={value}" for key, value in sorted(spec.items())) or "(no filter)"


def _request_target() -> str:
    parts = [f"{key}={value}" for key, value in (request.view_args or {}).items()]
    parts += [f"{key}={value}" for key, value in request.args.items(multi=True)]
    parts += [f"{key}={value}" for key, value in request.form.items(multi=True)
              if key not in ROUTINE_FIELDS and not any(word in key.lower() for word in SECRET_WORDS)]
    rowids = request.form.getlist("rowid")
    if rowids:
        parts.append("ids=" + ",".join(rowids))
    return " ".join(parts)


def _request_action() -> str:
    page, _, view = (request.endpoint or "unknown").rpartition(".")
    named = request.form.get("action", "") if request.mimetype != "application/json" else ""
    if named and named.replace("-", "_").isidentifier():
        return f"{page or 'app'}.{named}"
    return f"{page or 'app'}.{view}"


def record_the_rest(response):
    """`after_request`: a successful write no view recorded is recorded here."""
    path = request.path
    if (request.method in SAFE_METHODS or g.get("audited") or response.status_code >= 400
            or not path.startswith(("/admin", "/api")) or path.startswith(NOT_ACTIONS)
            or not current_user.is_authenticated):
        return response
    if any(category == "error" for category, _ in session.get("_flashes", ())):
        return response  # the view refused (and said why): nothing changed
    rowids = request.form.getlist("rowid") if request.mimetype != "application/json" else []
    record(_request_action(), _request_target(), len(rowids) if rowids else None)
    return response


def init_app(app: Flask) -> None:
    app.after_request(record_the_rest)
