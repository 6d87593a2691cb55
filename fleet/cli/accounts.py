import sys

import click
from peewee import IntegrityError

from db.models import PanelAccount
from fleet import FleetError
from fleet.cli.database import open_database

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


@click.group("accounts")
def accounts_group() -> None:
    """Operator accounts of the panel (not the app's users)."""


@accounts_group.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(PanelAccount.ROLES), default="viewer", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_command(email: str, role: str, password_stdin: bool) -> None:
    """Create a panel account."""
    open_database()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    account = create_account(email, password, role)
    click.echo(f"Created {account.role} account {account.email}")


@accounts_group.command("list")
def list_command() -> None:
    """List panel accounts."""
    open_database()
    for account in PanelAccount.select().order_by(PanelAccount.email):
        click.echo(f"{account.email:<40} {account.role}")


commands = [accounts_group]
