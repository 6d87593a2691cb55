"""API tokens: made, listed, revoked (the CLI and the Accounts page), and checked on each
request that carries one (`Authorization: Bearer …` on /api, /metrics and the CSV export).

A token is `fleet_` and 43 characters of `secrets.token_urlsafe` (256 bits): shown once, kept
as its SHA-256 only. A slow hash buys nothing for a secret that cannot be guessed, and a fast
one lets every request be checked by an indexed lookup.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from peewee import IntegrityError

from core.errors import FleetError
from db.models import utcnow
from db.models.tokens import ApiToken

PREFIX = "fleet_"
SHOWN = 10  # characters of a token kept in clear, to tell tokens apart in a list
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_TOKEN = 200  # a header longer than any token is not looked up
LAST_USE_EVERY = 60  # seconds: the last use is written at most this often per token
SCOPES = ApiToken.SCOPES


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(name: str, scope: str, created_by: str, expires_in: float | None = None) -> tuple[ApiToken, str]:
    """A new token and its secret (shown once, never stored)."""
    if not NAME.fullmatch(name):
        raise FleetError(f"{name[:80]!r} is not a token name: 1 to 64 letters, digits, dots, dashes or "
                         "underscores", exit_code=2)
    if scope not in SCOPES:
        raise FleetError(f"scope must be one of {', '.join(SCOPES)}", exit_code=2)
    secret = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    try:
        token = ApiToken.create(name=name, token_hash=digest(secret), prefix=secret[:SHOWN], scope=scope,
                                created_by=created_by, created_at=now,
                                expires_at=now + timedelta(seconds=expires_in) if expires_in else None)
    except IntegrityError:
        raise FleetError(f"a token named {name} exists already (revoked ones keep their name)") from None
    return token, secret


def list_tokens() -> list[ApiToken]:
    return list(ApiToken.select().order_by(ApiToken.revoked_at.is_null(False), ApiToken.name))


def revoke_token(name: str) -> ApiToken:
    token = ApiToken.get_or_none(ApiToken.name == name)
    if token is None:
        raise FleetError(f"no token named {name[:80]}")
    if token.revoked_at is not None:
        raise FleetError(f"the token {name} was revoked already")
    ApiToken.update(revoked_at=utcnow()).where(ApiToken.id == token.id).execute()
    return ApiToken.get_by_id(token.id)


def state(token: ApiToken) -> str:
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= utcnow():
        return "expired"
    return "active"


def authenticate_token(secret: str, address: str = "") -> ApiToken | None:
    """The active token with this secret, its last use noted; None for any other."""
    if not secret.startswith(PREFIX) or len(secret) > MAX_TOKEN:
        return None
    token = ApiToken.get_or_none(ApiToken.token_hash == digest(secret))
    if token is None or state(token) != "active":
        return None
    now = utcnow()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() >= LAST_USE_EVERY \
            or token.last_used_from != address:
        ApiToken.update(last_used_at=now, last_used_from=address[:100]).where(ApiToken.id == token.id).execute()
        token.last_used_at, token.last_used_from = now, address
    return token
