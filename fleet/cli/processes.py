"""The long-running processes: redis, worker, scheduler, web, and `up` for all of them."""
from __future__ import annotations

import os
import sys

import click

from actors.runtime import boot
from core.broker import check_broker
from core.lifecycle import WORKER_MAIN_ENV
from core.net import ensure_port_free
from core.settings import get_settings
from core.state import require_shared_state
from db.database import require_file
from fleet.cli.types import PORT, PROCESSES, THREADS


@click.command("redis")
def redis_command() -> None:
    """Run the embedded redis-server (AOF on, data under var/) in the foreground."""
    from core.embedded_redis import exec_redis

    exec_redis(get_settings())


@click.command("worker")
@click.option("-p", "--processes", type=PROCESSES, help="Worker processes (default: one a CPU).")
@click.option("-t", "--threads", type=THREADS, help="Threads a process (default: 8).")
@click.option("-Q", "--queues", multiple=True, help="Only these queues (repeatable, or comma-separated).")
def worker_command(processes: int | None, threads: int | None, queues: tuple[str, ...]) -> None:
    """Run Dramatiq workers for every actor, with all of Fleet's middleware."""
    settings = boot()
    require_shared_state(settings)
    check_broker(settings)
    require_file(settings.database_url)
    argv = [sys.executable, "-m", "dramatiq", "actors.all"]
    if processes:
        argv += ["--processes", str(processes)]
    if threads:
        argv += ["--threads", str(threads)]
    names = [q.strip() for item in queues for q in item.split(",") if q.strip()]
    if names:
        argv += ["--queues", *names]
    os.environ[WORKER_MAIN_ENV] = str(os.getpid())  # Dramatiq's main process will have this pid
    os.execv(sys.executable, argv)


@click.command("scheduler")
def scheduler_command() -> None:
    """Run a scheduler: emits the slots of FLEET_SCHEDULE while it leads (run several; one leads)."""
    from fleet.cli.database import open_database
    from fleet.cli.schedule import load
    from scheduler.daemon import run

    settings = boot()
    require_shared_state(settings)
    schedule = load()
    check_broker(settings)
    open_database()
    run(settings, schedule)


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=PORT, default=5000, show_default=True)
@click.option("--threads", type=THREADS, default=8, show_default=True)
def web_command(host: str, port: int, threads: int) -> None:
    """Serve the panel (/admin), /healthz and the JSON API."""
    import waitress

    from admin.app import LARGEST_BODY, create_app
    from core.ticker import Ticker
    from db.budget import web_process
    from db.database import IDLE_CHECKS, close_idle, size_pool

    require_shared_state(get_settings())
    require_file(get_settings().database_url)
    ensure_port_free(host, port)
    app = create_app()
    app.config["FLEET_WEB_THREADS"] = threads  # CSV exports take at most half of them (admin.exports)
    size_pool(web_process(threads))
    idle = get_settings().db_idle_timeout
    Ticker("fleet-db-idle", lambda: close_idle(idle)).start(idle / IDLE_CHECKS)
    click.echo(f"Fleet panel: http://{host}:{port}/admin")
    # Behind FLEET_TRUSTED_PROXIES proxies the app reads X-Forwarded-* itself (werkzeug's ProxyFix);
    # waitress must pass them on instead of dropping them as it does by default.
    trusts_proxies = get_settings().trusted_proxies > 0
    # A body past what the panel reads is refused with 413 from its Content-Length, unread
    # (waitress would otherwise spool up to 1 GB of it to a temporary file first).
    waitress.serve(app, host=host, port=port, threads=threads, ident="fleet",
                   clear_untrusted_proxy_headers=not trusts_proxies, max_request_body_size=LARGEST_BODY + 1)


@click.command("up")
@click.option("--demo", is_flag=True, help="Also seed demo data and run the API simulators.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=PORT, default=5000, show_default=True)
@click.option("-p", "--processes", type=PROCESSES, default=1, show_default=True)
@click.option("-t", "--threads", type=THREADS, default=8, show_default=True)
def up_command(demo: bool, host: str, port: int, processes: int, threads: int) -> None:
    """Run the whole fleet in the foreground under supervisord; Ctrl-C stops it."""
    from fleet.cli.up import run_fleet

    sys.exit(run_fleet(get_settings(), demo=demo, host=host, port=port, processes=processes, threads=threads))


commands = [redis_command, worker_command, scheduler_command, web_command, up_command]
