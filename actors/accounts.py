"""Panel accounts (the operators, not the app's users): the operations the CLI, the demo and
the panel share.

A panel session names its account and the account's `session_version`; bumping the version
(logout, a new password, disabling the account) ends every session of that account at once,
on every web process, since each request checks it against the database.
"""
from __future__ import annotations

from peewee import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from core.errors import FleetError
from core.settings import get_settings
from db.models import utcnow
from db.models.accounts import PanelAccount

MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # hashing costs the same whatever the length, but a megabyte is not a password

_dummy_hashes: dict[str | None, str] = {}


def _dummy_hash() -> str:
    """Checked when no account has the email, so an unknown email costs as much time as a wrong
    password (hashed the way the settings hash passwords)."""
    method = get_settings().password_hash_method
    if method not in _dummy_hashes:
        password = "no account has this password"
        _dummy_hashes[method] = generate_password_hash(password, method) if method else generate_password_hash(password)
    return _dummy_hashes[method]


def _normal(email: str) -> str:
    return email.strip().lower()


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise FleetError(f"the password needs at least {MIN_PASSWORD} characters", exit_code=2)
    if len(password) > MAX_PASSWORD:
        raise FleetError(f"the password may have at most {MAX_PASSWORD} characters", exit_code=2)


def create_account(email: str, password: str, role: str) -> PanelAccount:
    email = _normal(email)
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise FleetError(f"{email!r} is not an email address", exit_code=2)
    _check_password(password)
    account = PanelAccount(email=email, role=role)
    account.set_password(password, get_settings().password_hash_method)
    try:
        account.save()
    except IntegrityError:
        raise FleetError(f"an account for {email} already exists") from None
    return account


def get_account(email: str) -> PanelAccount:
    account = PanelAccount.get_or_none(PanelAccount.email == _normal(email))
    if account is None:
        raise FleetError(f"no account for {_normal(email)}")
    return account


def authenticate(email: str, password: str) -> PanelAccount | None:
    """The enabled account with this email and password, else None; the same work either way."""
    account = PanelAccount.get_or_none(PanelAccount.email == _normal(email)) if len(password) <= MAX_PASSWORD else None
    if account is None:
        check_password_hash(_dummy_hash(), password[:MAX_PASSWORD])
        return None
    if not account.check_password(password) or account.disabled_at is not None:
        return None
    PanelAccount.update(last_login_at=utcnow()).where(PanelAccount.id == account.id).execute()
    return account


def session_account(account_id: int, version: int) -> PanelAccount | None:
    """The account a session names, while that session is still valid."""
    return PanelAccount.get_or_none((PanelAccount.id == account_id) & (PanelAccount.session_version == version)
                                    & PanelAccount.disabled_at.is_null())


def end_sessions(account_id: int) -> None:
    """End every session of this account (each web process sees it on the next request)."""
    PanelAccount.update(session_version=PanelAccount.session_version + 1).where(PanelAccount.id == account_id).execute()


def set_password(email: str, password: str) -> PanelAccount:
    """A new password; every session of the account ends."""
    account = get_account(email)
    _check_password(password)
    account.set_password(password, get_settings().password_hash_method)
    PanelAccount.update(password_hash=account.password_hash,
                        session_version=PanelAccount.session_version + 1).where(PanelAccount.id == account.id).execute()
    return account


def disable_account(email: str) -> PanelAccount:
    """No more logins; every session of the account ends."""
    account = get_account(email)
    PanelAccount.update(disabled_at=utcnow(), session_version=PanelAccount.session_version + 1).where(
        PanelAccount.id == account.id).execute()
    return account


def enable_account(email: str) -> PanelAccount:
    account = get_account(email)
    PanelAccount.update(disabled_at=None).where(PanelAccount.id == account.id).execute()
    return account
