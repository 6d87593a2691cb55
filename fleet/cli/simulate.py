"""`fleet simulate openai|series-api`: the API simulators in the foreground."""
from __future__ import annotations

import click

from fleet.cli.types import MAX_ID, PORT, Number


class FailSpec(click.ParamType):
    name = "FAULT=P,…"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        from core.simulators.faults import parse_fail_spec

        try:
            return parse_fail_spec(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class IdList(click.ParamType):
    name = "ID,…"

    def convert(self, value, param, ctx):
        if isinstance(value, (set, frozenset)):
            return value
        parts = [p.strip() for p in value.split(",") if p.strip()]
        bad = [p for p in parts if not p.isdigit() or int(p) > MAX_ID]
        if bad:
            self.fail(f"{bad[0]!r} is not an id", param, ctx)
        return {int(p) for p in parts}


def _common(command):
    options = [
        click.option("--host", default="127.0.0.1", show_default=True),
        click.option("--latency-ms", type=Number(0, 600_000), default=0, show_default=True,
                     help="Delay before every API answer."),
        click.option("--fail", "fail", type=FailSpec(), default="",
                     help="Fault probabilities a request: 401, 429, quota, 500, 502, 503, timeout, malformed "
                          "(e.g. 429=0.1,503=0.05)."),
        click.option("--retry-after", type=Number(0, 86_400), default=1, show_default=True,
                     help="Seconds in the Retry-After header of a 429."),
        click.option("--hang-seconds", type=Number(0, 86_400), default=30, show_default=True,
                     help="How long a 'timeout' fault hangs before answering 504."),
        click.option("--api-key", help="The key clients must send (any key when unset)."),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), help="Seed of the fault dice, for repeatable runs."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group("simulate")
def simulate_group() -> None:
    """Local simulators of the external APIs, for tests, demos and development."""


@simulate_group.command("openai")
@click.option("--port", type=PORT, default=8100, show_default=True)
@click.option("--rpm", type=click.IntRange(0, 10_000_000), default=0, show_default=True,
              help="Requests a minute per API key, enforced with 429s as the provider does (0 = no limit).")
@click.option("--tpm", type=click.IntRange(0, 10_000_000_000), default=0, show_default=True,
              help="Tokens a minute per API key (prompt + max_completion_tokens must fit; 0 = no limit).")
@click.option("--window", type=Number(1, 3600), default=60, show_default=True,
              help="Seconds the limits count over (a minute; shorter for quick experiments).")
@click.option("--batch-seconds", type=Number(0, 24 * 3600), default=6, show_default=True,
              help="Seconds a Batch API batch takes from validating to completed (the provider: up to 24 h).")
@_common
def simulate_openai(port: int, host: str, api_key: str | None, rpm: int, tpm: int, window: float, batch_seconds: float,
                    **faults) -> None:
    """An OpenAI-compatible /v1/chat/completions answering Structured Outputs, and the Files and
    Batches endpoints of the Batch API."""
    from core.simulators.openai_sim import openai_app
    from core.simulators.server import serve_forever

    app = openai_app(api_key=api_key, rpm=rpm, tpm=tpm, window=window, batch_seconds=batch_seconds, **faults)
    limits = f" limits {rpm or '∞'} requests, {tpm or '∞'} tokens per {window:g} s per key;" if rpm or tpm else ""
    serve_forever(app, host, port, f"fleet: OpenAI simulator on http://{host}:{port}/v1{limits} {_summary(api_key, faults)}")


@simulate_group.command("series-api")
@click.option("--port", type=PORT, default=8101, show_default=True)
@click.option("--missing", type=IdList(), default="", help="Ids answered with 404 (e.g. 12,13).")
@click.option("--missing-ratio", type=click.FloatRange(0, 1), default=0, show_default=True,
              help="Share of all ids answered with 404, the same ids on every run (e.g. 0.05).")
@_common
def simulate_series(port: int, host: str, api_key: str | None, missing: set[int], missing_ratio: float, **faults) -> None:
    """A series data API in the shape of TheTVDB v4 (/login, /series/ID/extended, /episodes/ID/extended)."""
    from core.simulators.series_sim import series_app
    from core.simulators.server import serve_forever

    app = series_app(api_key=api_key, missing=missing, missing_ratio=missing_ratio, **faults)
    serve_forever(app, host, port, f"fleet: series API simulator on http://{host}:{port} {_summary(api_key, faults)}")


def _summary(api_key: str | None, faults: dict) -> str:
    fail = ",".join(f"{name}={p:g}" for name, p in faults["fail"].items()) or "none"
    return f"(api key {'required' if api_key else 'any'}; faults {fail}; control at /_control)"


commands = [simulate_group]
