"""An operator's controls over running work, shared by the CLI and the panel (each records its
own audit row): pause and resume a queue, cancel a job that has not started, and the job log's
search by message id, trace id or a job's arguments (`plan_id=13`)."""
from __future__ import annotations

import os
import re

from dramatiq.common import q_name
from peewee import Expression

from actors.middleware.joblog import args_text, named_arguments
from actors.middleware.presence import live_workers
from actors.middleware.unique import release_lock
from core import pauses, queued
from core.errors import FleetError
from core.queues import known_queues
from core.settings import get_settings
from core.state import state_redis
from db.models import utcnow
from db.models.jobs import JobArgument, JobLog

MAX_TERMS = 10
_ARGUMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\S.*)$")
_ID_LIKE = re.compile(r"^[0-9A-Za-z_.:-]*[0-9][0-9A-Za-z_.:-]*$")


def queue_names(broker) -> list[str]:
    """The queues this process declared, those live workers consume, and the paused ones."""
    names = set(known_queues(broker)) | set(pauses.paused_since())
    client = state_redis()
    if client is not None:
        for worker in live_workers(client, get_settings().heartbeat_timeout):
            names.update(worker.queues)
    return sorted(names)


def _queue(broker, name: str, *, known: bool = True) -> str:
    name = (name or "").strip()
    queues = queue_names(broker)
    if not name or (known and name not in queues):
        raise FleetError(f"no queue {name!r}; the queues are {', '.join(queues)}", exit_code=2)
    return name


def pause_queue(broker, name: str, who: str) -> bool:
    """Workers stop fetching from the queue (within a second); False when it was paused already."""
    return pauses.pause(_queue(broker, name), who)


def resume_queue(broker, name: str) -> bool:
    """Workers fetch from the queue again; False when it was not paused."""
    name = (name or "").strip()
    if name in pauses.paused_since():
        return pauses.resume(name)
    _queue(broker, name)
    return False


def cancel_job(broker, message_id: str, who: str) -> queued.Cancelled:
    """Cancel a queued or delayed job: it never runs; its JobLog row says `cancelled`."""
    message_id = (message_id or "").strip()
    if not message_id:
        raise FleetError("give the message id of the job to cancel", exit_code=2)
    last = (JobLog.select(JobLog.queue).where(JobLog.message_id == message_id).order_by(JobLog.id.desc()).first())
    queues = queue_names(broker)
    if last and last.queue in queues:
        queues.remove(last.queue)
        queues.insert(0, last.queue)  # looked at first
    result = queued.cancel(broker, message_id, queues)
    message = result.message
    if not result.held:
        release_lock(message)  # a held one releases it when its worker drops it
    now = utcnow()
    JobLog.create(run_id=os.urandom(8).hex(), job_class=message.actor_name, message_id=message.message_id,
                  queue=q_name(message.queue_name), status="cancelled", attempt=message.options.get("retries", 0) + 1,
                  message=f"cancelled by {who}" + (" (a worker held it for its time and drops it then)"
                                                   if result.held else ""),
                  args=args_text(message), trace_id=message.options.get("trace_id"), created_at=now, finished_at=now,
                  duration_seconds=0.0)
    if not JobArgument.select().where(JobArgument.message_id == message.message_id).exists():
        JobArgument.insert_many([{"message_id": message.message_id, "name": n, "value": v, "created_at": now}
                                 for n, v in named_arguments(broker, message)]).execute()
    return result


def with_argument(name: str, value) -> Expression:
    """The JobLog rows of jobs called with argument `name` = `value` (`plan_id` = 13), by index."""
    messages = JobArgument.select(JobArgument.message_id).where(
        (JobArgument.name == name) & (JobArgument.value == str(value).strip()))
    return JobLog.message_id.in_(messages)


def _term(term: str) -> Expression:
    found = _ARGUMENT.match(term)
    if found:
        return with_argument(*found.groups())
    if _ID_LIKE.match(term):
        return (JobLog.message_id == term) | (JobLog.trace_id == term)
    return JobLog.message.contains(term)


def search_condition(text: str) -> Expression | None:
    """What the job log's search box and `fleet jobs list --search` ask for: each term a job's
    argument (`plan_id=13`), a message or trace id (a word with a digit), or else a word of the
    message; all terms must match. Arguments and ids are looked up by index."""
    terms = re.findall(r"[A-Za-z_][A-Za-z0-9_]*\s*=\s*\S+|\S+", text or "")[:MAX_TERMS]
    condition = None
    for term in terms:
        part = _term(term)
        condition = part if condition is None else condition & part
    return condition
