"""Panel accounts (the operators, not the app's users): the operations the CLI, the demo and
the panel share."""
from __future__ import annotations

from peewee import IntegrityError

from core.errors import FleetError
from db.models.accounts import PanelAccount

MIN_PASSWORD = 8


def create_account(email: str, password: str, role: str) -> PanelAccount:
    email = email.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise FleetError(f"{email!r} is not an email address", exit_code=2)
    if len(password) < MIN_PASSWORD:
        raise FleetError(f"the password needs at least {MIN_PASSWORD} characters", exit_code=2)
    account = PanelAccount(email=email, role=role)
    account.set_password(password)
    try:
        account.save()
    except IntegrityError:
        raise FleetError(f"an account for {email} already exists") from None
    return account
