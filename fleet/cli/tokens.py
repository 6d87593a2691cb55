"""`fleet tokens`: API tokens for scripts and Prometheus (see docs/api.md)."""
from __future__ import annotations

import click
from rich.table import Table

from actors import tokens as ops
from core import formats
from fleet.cli.audited import os_user, record
from fleet.cli.database import open_database
from fleet.cli.output import print_table

MAX_EXPIRY = 10 * 365 * 86400  # seconds


class Span(click.ParamType):
    """A span as `30d`, `12h`, `90m` (units s, m, h, d), up to ten years."""

    name = "span"

    def convert(self, value, param, ctx):
        seconds = formats.parse_span(str(value).strip())
        if not seconds or seconds > MAX_EXPIRY:
            self.fail(f"{value!r} is not a span like 30d, 12h or 90m (at most 10 years)", param, ctx)
        return seconds


@click.group("tokens")
def tokens_group() -> None:
    """API tokens: `Authorization: Bearer …` on /api, /metrics and the CSV export."""


@tokens_group.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(ops.SCOPES), required=True,
              help="read: GET only; operate: also retry, requeue, cancel (what a panel admin may).")
@click.option("--expires", type=Span(), help="Refused after this span (30d, 12h); never, when not given.")
def create_command(name: str, scope: str, expires: int | None) -> None:
    """Make a token; it is printed once, here, and kept only as its SHA-256."""
    open_database()
    token, secret = ops.create_token(name, scope, f"cli:{os_user()}", expires)
    record("tokens.create", f"name={token.name} scope={token.scope} expires={formats.moment(token.expires_at, empty='never')}")
    click.echo(secret)
    click.echo(f"Created {scope} token {name}"
               + (f", expires {formats.moment(token.expires_at)} UTC" if token.expires_at else ", never expires")
               + ". Keep it now: it is not shown again.", err=True)


@tokens_group.command("list")
def list_command() -> None:
    """Every token: its scope, state, expiry and last use (never the token)."""
    open_database()
    found = ops.list_tokens()
    if not found:
        click.echo("No tokens.")
        return
    table = Table("name", "scope", "state", "starts with", "created (UTC)", "by", "expires (UTC)", "last used (UTC)",
                  "from")
    for t in found:
        table.add_row(t.name, t.scope, ops.state(t), t.prefix + "…", formats.moment(t.created_at), t.created_by,
                      formats.moment(t.expires_at, empty="never"), formats.moment(t.last_used_at, empty="never"),
                      t.last_used_from or "")
    print_table(table)


@tokens_group.command("revoke")
@click.argument("name")
def revoke_command(name: str) -> None:
    """Refuse a token from now on (its row stays, for the record)."""
    open_database()
    token = ops.revoke_token(name)
    click.echo(f"Revoked token {token.name}.")


commands = [tokens_group]
