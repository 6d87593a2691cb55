"""The panel's and the API's side of the audit log: who is asking, from where."""
from __future__ import annotations

from flask import g, request
from flask_login import current_user

from actors import audit


def record(action: str, target: str = "", rows: int | None = None) -> None:
    """Note an action of the operator (or API token) of this request: its email (`token:NAME`),
    role (a token's scope), the client's proxy-aware address and this request's trace id."""
    audit.record(action, who=getattr(current_user, "email", "") or "anonymous",
                 role=getattr(current_user, "role", "") or "", target=target, rows=rows,
                 source="api" if g.get("api_token") else "panel", address=request.remote_addr or "")
