"""`fleet ai status [--json]`: the OpenAI budget, 429s and deferrals, today's spend, the backlog."""
from __future__ import annotations

import json

import click

from actors import ai as ops
from core.broker import check_broker
from core.settings import get_settings
from fleet.cli.database import open_database


@click.group("ai")
def ai_group() -> None:
    """AI work at the provider's limit: the fleet-wide OpenAI budget and the daily spend cap."""


@ai_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def status_command(as_json: bool) -> None:
    """Requests and tokens in the last minute against the limits, 429s and deferrals in the last
    hour, spend today against the cap, and how long the AI backlog needs at the budget."""
    open_database()
    check_broker(get_settings())  # the budget's figures live in the state Redis
    status = ops.status()
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    budget = status["budget"]
    per = budget["per"]
    click.echo(f"OpenAI budget{'' if budget['enabled'] else ' (switched off: FLEET_OPENAI_BUDGET=0)'}, last {per}:")
    click.echo(f"  requests: {ops.limit_text(budget['requests'])}")
    click.echo(f"  tokens:   {ops.limit_text(budget['tokens'])}")
    if budget["shrunk_to"] < 1:
        click.echo(f"  shrunk to {budget['shrunk_to']:.0%} after a 429")
    hour = status["last_hour"]
    click.echo(f"Last hour: {hour['rate_limited']} answered 429, {hour['deferred']} deferred over the budget")
    spend = status["spend"]
    click.echo(f"Spend today ({spend['day']}, {spend['timezone']}): {ops.spend_text(spend)}")
    for row in spend["by_job_class"]:
        click.echo(f"  {row['job_class']}: ${row['usd']:,.4f} in {row['requests']:,} call(s)")
    backlog = status["backlog"]
    click.echo(f"Backlog: {backlog['calls']:,} call(s)" + (f", {backlog['estimate']}" if backlog["estimate"] else ""))


commands = [ai_group]
