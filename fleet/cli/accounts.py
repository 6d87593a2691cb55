import sys

import click

from actors.accounts import create_account
from db.models.accounts import PanelAccount
from fleet.cli.database import open_database


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
