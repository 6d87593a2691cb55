"""`fleet translate`: translate files in the background, as a batch."""
from __future__ import annotations

import getpass
import sys

import click

from actors import translations as ops
from core.broker import check_broker
from core.settings import LANES, get_settings
from fleet.cli.batches import watch
from fleet.cli.database import open_database


@click.command("translate")
@click.option("--from", "source", required=True, metavar="LANG", help="Language of the files (ISO 639-1, e.g. de).")
@click.option("--to", "target", required=True, metavar="LANG", help="Language to translate into (e.g. nl).")
@click.option("--out", "out_dir", metavar="DIR", help="Write DIR/<name> (default: <name>.<to>.<ext> beside each file).")
@click.option("--lane", type=click.Choice(LANES), help="live: a call a request, now; economy: OpenAI's Batch API, "
              "half the price, within 24 h (default FLEET_AI_LANE).")
@click.option("--retry-live", is_flag=True, help="Economy lane: a file the provider fails is retried on the live "
              "lane (else in the next provider batch).")
@click.option("--watch", "follow", is_flag=True, help="Follow the batch until it ends.")
@click.argument("files", nargs=-1, required=True)
def translate_command(source: str, target: str, out_dir: str | None, lane: str | None, retry_live: bool,
                      follow: bool, files: tuple[str, ...]) -> None:
    """Translate text, Markdown and JSON files: one batch, one item a file."""
    plan = ops.plan_translation(list(files), source.strip().lower(), target.strip().lower(), out_dir=out_dir,
                                lane=lane, extra={"economy_retry": "live"} if retry_live else None)
    open_database()
    check_broker(get_settings())
    batch = plan.start(created_by=f"{getpass.getuser()} (cli)")
    lane_note = " on the economy lane (OpenAI's Batch API: half the price, within 24 h)" if batch.lane == "economy" else ""
    click.echo(f"Started translation batch {batch.id}: {batch.total} file(s), {source} → {target}{lane_note}.")
    if follow:
        sys.exit(watch(batch.id))
    click.echo(f"Follow it with: fleet batches monitor {batch.id[:8]} --watch")


commands = [translate_command]
