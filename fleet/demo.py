"""`fleet up --demo`: demo data and the API simulators, so a newcomer sees jobs run and fail."""
from __future__ import annotations

import click

from db.models import PanelAccount
from fleet.settings import Settings

DEMO_EMAIL = "admin@fleet.local"
DEMO_PASSWORD = "fleet-demo"


def seed_demo(settings: Settings) -> None:
    from fleet.cli.accounts import create_account

    if not PanelAccount.select().where(PanelAccount.email == DEMO_EMAIL).exists():
        create_account(DEMO_EMAIL, DEMO_PASSWORD, "admin")
    click.echo(f"fleet: demo login {DEMO_EMAIL} / {DEMO_PASSWORD}")


def demo_programs(settings: Settings):
    """Extra programs and environment for the demo (the simulators come with the job runtime)."""
    return [], {}
