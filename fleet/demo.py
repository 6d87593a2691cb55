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


DEMO_OPENAI_KEY = "sk-fleet-demo-simulated"
DEMO_SERIES_KEY = "fleet-demo-series-key"


def demo_programs(settings: Settings):
    """The two API simulators on free ports, with a few faults, and the environment pointing at them."""
    from fleet.net import free_port
    from fleet.up import Program

    openai_port, series_port = free_port(), free_port()
    programs = [
        Program("openai-simulator", ["simulate", "openai", "--port", str(openai_port), "--api-key", DEMO_OPENAI_KEY,
                                     "--latency-ms", "400", "--fail", "429=0.05,503=0.05,malformed=0.03"], 20),
        Program("series-simulator", ["simulate", "series-api", "--port", str(series_port), "--api-key", DEMO_SERIES_KEY,
                                     "--latency-ms", "100", "--fail", "429=0.03,503=0.03,timeout=0.01",
                                     "--hang-seconds", "15"], 20),
    ]
    env = {
        "OPENAI_BASE_URL": f"http://127.0.0.1:{openai_port}/v1",
        "OPENAI_API_KEY": DEMO_OPENAI_KEY,
        "SERIES_API_URL": f"http://127.0.0.1:{series_port}",
        "SERIES_API_KEY": DEMO_SERIES_KEY,
    }
    return programs, env
