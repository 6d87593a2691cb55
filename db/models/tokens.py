"""API tokens: a name, a scope and the SHA-256 of the token (the token itself is shown once)."""
from __future__ import annotations

from peewee import CharField, DateTimeField

from db.models import BaseModel, utcnow


class ApiToken(BaseModel):
    """A bearer token for /api, /metrics and the CSV export; `read` or `operate`."""

    SCOPES = ("read", "operate")

    name = CharField(unique=True)
    token_hash = CharField(unique=True)  # sha256 hex of the whole token
    prefix = CharField()  # the token's first characters, to tell tokens apart in a list
    scope = CharField()
    created_by = CharField()
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField(null=True)
    last_used_at = DateTimeField(null=True)
    last_used_from = CharField(null=True)
    revoked_at = DateTimeField(null=True)

    class Meta:
        table_name = "api_token"
