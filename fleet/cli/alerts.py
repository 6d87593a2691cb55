"""`fleet alerts …`: check a rules file, list the rules and where they stand, read the
history, send a test to every channel, silence and unsilence a rule."""
from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from actors.alerts import operations as ops
from actors.alerts.channels import load_channels, safe_url
from actors.alerts.rules import Rules, RulesError, duration, load_rules
from actors.schedule import operator_name
from core import formats
from core.errors import FleetError
from core.settings import SettingsError
from fleet.cli.database import open_database


def load(value: str | None = None) -> Rules:
    """The rules file (FLEET_ALERTS unless named); an invalid one prints a line a problem and exits with 2."""
    try:
        return load_rules(value)
    except RulesError as exc:
        for problem in exc.problems:
            click.echo(f"fleet: {problem}", err=True)
        raise SystemExit(2) from None


def _console() -> Console:
    return Console(width=200, markup=False, highlight=False)


def _settings(rule) -> str:
    return " ".join(f"{k}={formats.roughly(v) if k in ('window', 'max_age', 'within') else v}"
                    for k, v in rule.params.items() if v not in ("", []))


@click.group("alerts")
def alerts_group() -> None:
    """Alert rules: check the file, list, history, test the channels, silence."""


@alerts_group.command("check")
@click.argument("file", required=False)
def check_command(file: str | None) -> None:
    """Check a rules file (default: FLEET_ALERTS)."""
    rules = load(file)
    table = Table("rule", "kind", "settings", "severity", "repeat", "on")
    for rule in rules.rules.values():
        table.add_row(rule.name, rule.kind, _settings(rule) or "-", rule.severity,
                      formats.roughly(rule.repeat) if rule.repeat else "once", "yes" if rule.enabled else "no")
    _console().print(table)
    count = len(rules.rules)
    click.echo(f"{rules.path}: {count} {'rule' if count == 1 else 'rules'}, all valid.")
    click.echo(_channels_line())


def _channels_line() -> str:
    try:
        channels = load_channels()
    except SettingsError as exc:
        click.echo(f"fleet: {exc}", err=True)
        raise SystemExit(2) from None
    parts = []
    if channels.webhook_url:
        parts.append(f"webhook {safe_url(channels.webhook_url)}")
    if channels.smtp_url:
        parts.append(f"e-mail to {', '.join(channels.email_to)} via {safe_url(channels.smtp_url)}")
    return ("Channels: " + "; ".join(parts)) if parts else (
        "Channels: none (set FLEET_ALERT_WEBHOOK_URL, or FLEET_SMTP_URL and FLEET_ALERT_EMAIL_TO): "
        "alerts are recorded, no one is told.")


@alerts_group.command("list")
def list_command() -> None:
    """Each rule: where it stands (firing since, resolved), silences."""
    rules = load()
    open_database()
    by_rule: dict[str, list] = {}
    for row in ops.states():
        by_rule.setdefault(row.rule, []).append(row)
    silenced = {s.rule: s for s in ops.silences(include_past=0)}
    table = Table("rule", "kind", "severity", "state", "subject", "since", "summary", "silenced")
    for rule in rules.rules.values():
        silence = silenced.get(rule.name)
        quiet = f"until {silence.until:%Y-%m-%d %H:%M} UTC by {silence.created_by}" if silence else "-"
        rows = [r for r in by_rule.get(rule.name, []) if r.state == "firing"]
        if not rows:
            table.add_row(rule.name, rule.kind, rule.severity, "ok" if rule.enabled else "disabled", "-", "-", "-",
                          quiet)
        for row in rows:
            table.add_row(rule.name, rule.kind, row.severity, "FIRING", row.subject or "-", ops.since_text(row.since),
                          row.summary, quiet)
    _console().print(table)
    firing = sum(1 for rows in by_rule.values() for r in rows if r.state == "firing")
    click.echo(f"{rules.path}: {len(rules.enabled)} rules on, {firing} firing.")


@alerts_group.command("history")
@click.option("--limit", type=click.IntRange(1, 10_000), default=30, show_default=True)
@click.option("--rule", default=None, help="Only this rule's notifications.")
def history_command(limit: int, rule: str | None) -> None:
    """The latest notifications, newest first, with what each channel answered."""
    open_database()
    events = ops.history(limit, rule)
    sent = ops.deliveries([e.id for e in events])
    table = Table("at (UTC)", "rule", "state", "severity", "subject", "summary", "lasted", "told")
    for e in events:
        told = "; ".join(f"{d.channel} {d.status}" + (f" ({d.attempts} tries)" if d.attempts > 1 else "")
                         for d in sent.get(e.id, []))
        if e.silenced:
            told = f"silenced ({e.silenced})"
        table.add_row(f"{e.created_at:%Y-%m-%d %H:%M:%S}", e.rule, e.state, e.severity, e.subject or "-", e.summary,
                      formats.roughly(e.duration_seconds) if e.duration_seconds is not None else "-", told or "no channel")
    _console().print(table)
    if not events:
        click.echo("No alert has fired yet.")


@alerts_group.command("test")
def test_command() -> None:
    """Send a test notification to every channel now; say what each answered."""
    answers = ops.send_test(operator_name())
    if not answers:
        raise FleetError("no channel configured: set FLEET_ALERT_WEBHOOK_URL, or FLEET_SMTP_URL and "
                         "FLEET_ALERT_EMAIL_TO", exit_code=2)
    for answer in answers:
        click.echo(f"{answer.channel}: {'ok' if answer.ok else 'FAILED'}: {answer.answer}")
    if not all(a.ok for a in answers):
        raise SystemExit(1)


@alerts_group.command("silence")
@click.argument("rule")
@click.option("--for", "for_", required=True, metavar="DURATION", help="How long, e.g. 30m, 2h, 1d.")
@click.option("--reason", default=None, help="Why, for the others.")
def silence_command(rule: str, for_: str, reason: str | None) -> None:
    """Tell no one about RULE for a while (it is still evaluated and recorded)."""
    try:
        seconds = duration("--for", for_)
    except ValueError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[1], param_hint="--for") from None
    rules = load()
    open_database()
    silence = ops.silence(rules, rule, seconds, operator_name(), reason)
    click.echo(f"{rule} silenced until {silence.until:%Y-%m-%d %H:%M:%S} UTC by {silence.created_by}.")


@alerts_group.command("unsilence")
@click.argument("rule")
def unsilence_command(rule: str) -> None:
    """Lift RULE's silence."""
    open_database()
    lifted = ops.unsilence(rule, operator_name())
    click.echo(f"{rule}: {'silence lifted' if lifted else 'was not silenced'}.")


commands = [alerts_group]
