import sys

import click

from actors import accounts as ops
from db.models.accounts import PanelAccount
from fleet.cli.database import open_database


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


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
    account = ops.create_account(email, _read_password(password_stdin), role)
    click.echo(f"Created {account.role} account {account.email}")


@accounts_group.command("set-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def set_password_command(email: str, password_stdin: bool) -> None:
    """Give an account a new password; every session of that account ends."""
    open_database()
    ops.get_account(email)  # "no account" before asking for a password
    account = ops.set_password(email, _read_password(password_stdin))
    click.echo(f"New password for {account.email}; its sessions have ended.")


@accounts_group.command("set-role")
@click.argument("email")
@click.argument("role", type=click.Choice(PanelAccount.ROLES))
def set_role_command(email: str, role: str) -> None:
    """Change an account's role; every session of that account ends."""
    open_database()
    account = ops.set_role(email, role)
    click.echo(f"{account.email} is now {account.role}; its sessions have ended.")


@accounts_group.command("disable")
@click.argument("email")
def disable_command(email: str) -> None:
    """Stop an account from logging in; every session of that account ends."""
    open_database()
    account = ops.disable_account(email)
    click.echo(f"Disabled {account.email}; its sessions have ended.")


@accounts_group.command("enable")
@click.argument("email")
def enable_command(email: str) -> None:
    """Let a disabled account log in again."""
    open_database()
    account = ops.enable_account(email)
    click.echo(f"Enabled {account.email}.")


@accounts_group.command("list")
def list_command() -> None:
    """List panel accounts."""
    open_database()
    for account in PanelAccount.select().order_by(PanelAccount.email):
        state = "  disabled" if account.disabled_at else ""
        click.echo(f"{account.email:<40} {account.role}{state}")


commands = [accounts_group]
