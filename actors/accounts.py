"""Panel accounts (the operators, not the app's users): the operations the CLI, the demo and
the panel share.

A panel session names its account and the account's `session_version`; bumping the version
(logout, a new password, disabling the account) ends every session of that account at once,
on every web process, since each request checks it against the database.
"""
from __future__ import annotations

import re
import secrets
import string
from functools import cache
from pathlib import Path

from peewee import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from core.errors import FleetError
from core.settings import get_settings
from db.models import utcnow
from db.models.accounts import PanelAccount

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # hashing costs the same whatever the length, but a megabyte is not a password
# The 10,000 most common passwords, lower-cased, most common first (the list zxcvbn 4.5.0 ships,
# MIT licence, from leaked password sets).
COMMON_PASSWORDS = Path(__file__).with_name("common-passwords.txt")
PADDING = string.digits + string.punctuation + string.whitespace
RUNS = ("0123456789" * 10, "qwertyuiopasdfghjklzxcvbnm", "abcdefghijklmnopqrstuvwxyz")  # and backwards

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


@cache
def _common_passwords() -> frozenset[str]:
    return frozenset(COMMON_PASSWORDS.read_text().split())


def _is_common(password: str) -> bool:
    """A common password, also with digits or symbols around it ("password2024!") or repeated
    ("passwordpassword"), or a run of keys ("123456789012", "qwertyuiopasdf")."""
    lowered = password.lower()
    core = lowered.strip(PADDING)
    repeated = re.fullmatch(r"(.+?)\1+", lowered, re.S)
    forms = {lowered, core, repeated.group(1) if repeated else lowered}
    if any(lowered in run or lowered in run[::-1] for run in RUNS):
        return True
    return any(form in _common_passwords() for form in forms)


def password_problem(password: str, email: str) -> str | None:
    """Why this password will not do for the account with this email, in a sentence; None when it will."""
    if not password.strip():
        return "the password is blank"
    if len(password) < MIN_PASSWORD:
        return f"the password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password may have at most {MAX_PASSWORD} characters"
    email = _normal(email)
    if password.strip().lower() in (email, email.partition("@")[0]):
        return "the password may not be the email address or its part before the @"
    if _is_common(password):
        return "the password is one of the most common passwords (or one with digits or symbols added); choose another"
    return None


def _check_password(password: str, email: str) -> None:
    problem = password_problem(password, email)
    if problem:
        raise FleetError(problem, exit_code=2)


def create_account(email: str, password: str, role: str) -> PanelAccount:
    email = _normal(email)
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise FleetError(f"{email!r} is not an email address", exit_code=2)
    _check_password(password, email)
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
    _check_password(password, account.email)
    account.set_password(password, get_settings().password_hash_method)
    PanelAccount.update(password_hash=account.password_hash,
                        session_version=PanelAccount.session_version + 1).where(PanelAccount.id == account.id).execute()
    return account


def generated_password() -> str:
    """A password for a reset, shown once: 20 characters of `secrets.token_urlsafe` (120 bits)."""
    while True:
        password = secrets.token_urlsafe(15)
        if password_problem(password, "") is None:
            return password


def reset_password(email: str) -> tuple[PanelAccount, str]:
    """A generated password (to be shown once); every session of the account ends."""
    password = generated_password()
    return set_password(email, password), password


def refuse_losing_the_last_admin(email: str) -> None:
    """For the panel, before disabling or demoting an account: the last enabled admin stays
    (the CLI may still do it: its operator can make another admin there)."""
    account = get_account(email)
    others = PanelAccount.select().where((PanelAccount.role == "admin") & PanelAccount.disabled_at.is_null()
                                         & (PanelAccount.id != account.id)).count()
    if account.role == "admin" and account.disabled_at is None and not others:
        raise FleetError(f"{account.email} is the last enabled admin; make another admin first")


def set_role(email: str, role: str) -> PanelAccount:
    """A new role; every session of the account ends (it logs in again with the new one)."""
    if role not in PanelAccount.ROLES:
        raise FleetError(f"role must be one of {', '.join(PanelAccount.ROLES)}", exit_code=2)
    account = get_account(email)
    PanelAccount.update(role=role, session_version=PanelAccount.session_version + 1).where(
        PanelAccount.id == account.id).execute()
    return PanelAccount.get_by_id(account.id)


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
