"""The transactional outbox: nothing stranded between a commit and its job's send.

Whatever commits a row with the promise of a job (a plan with pending days, a batch and its
chunks, failed days set back to pending) writes the job's message into `fleet_outbox` in the
same transaction, and sends it once the transaction has committed:

    with outbox() as box:
        plan = Plan.create(...)
        box.add(generate_user_workout_plan, user_id, plan.id)
        box.saved = f"Plan #{plan.id}"
    # committed, then sent; NotSent (one line: what was saved, what will be sent) if Redis refused

A message Redis took is marked sent. One it refused stays in the outbox, and the scheduler's
leader sends it again (`resend_due`, every FLEET_OUTBOX_RESEND seconds, for messages at least
that old). A message keeps its id on every send, and a send again first looks whether that
message was delivered after all (its JobLog rows, or its unique lock held by a queued or
running message), so a message whose "sent" mark alone was lost does not run twice.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import dramatiq
from dramatiq import Message

from actors.middleware.unique import live_holders, unique_key
from actors.runtime import send_messages
from core.errors import FleetError, classify
from core.formats import duration
from core.settings import get_settings
from db.database import database
from db.models import utcnow
from db.models.jobs import JobLog
from db.models.outbox import OutboxMessage

log = logging.getLogger("fleet.outbox")

RESEND_ROWS = 1_000  # messages a pass of `resend_due` reads
KEEP_SENT = timedelta(days=1)  # sent messages are kept this long, for an operator who looks


class NotSent(FleetError):
    """The rows were committed, their jobs are in the outbox, and Redis refused the send: the
    scheduler sends them again. Exit code 1."""


@dataclass
class Outbox:
    """The messages of one transaction; `saved` says what it committed (for NotSent's line)."""

    saved: str = ""
    messages: list[tuple[Message, int | None]] = field(default_factory=list)
    sent: set[str] = field(default_factory=set)  # ids Redis took (not duplicates)

    def add(self, actor: dramatiq.Actor, *args, delay_seconds: float = 0, **options) -> Message:
        """Write a message for `actor(*args)` into the outbox, in the caller's transaction."""
        [message] = self.add_many(actor, [args], [delay_seconds], **options)
        return message

    def add_many(self, actor: dramatiq.Actor, calls: list[tuple], delays_seconds: list[float] | None = None,
                 **options) -> list[Message]:
        """`add` for many argument tuples (each with its delay, if given), an INSERT per
        RESEND_ROWS messages."""
        messages = [actor.message_with_options(args=tuple(args), **options) for args in calls]
        delays = [int(d * 1000) or None for d in delays_seconds] if delays_seconds else [None] * len(messages)
        now = utcnow()
        for i in range(0, len(messages), RESEND_ROWS):
            OutboxMessage.insert_many([
                {"message_id": m.message_id, "actor_name": m.actor_name, "queue_name": m.queue_name,
                 "args": list(m.args), "kwargs": m.kwargs, "options": m.options, "created_at": now, "attempts": 0,
                 "send_after": now + timedelta(milliseconds=d) if d else None}
                for m, d in zip(messages[i:i + RESEND_ROWS], delays[i:i + RESEND_ROWS])]).execute()
        self.messages.extend(zip(messages, delays))
        return messages

    def was_sent(self, message: Message) -> bool:
        """Did Redis take this message (rather than find its job already queued or running)?"""
        return message.message_id in self.sent

    def send(self) -> None:
        """Send the messages (after the commit); mark those Redis took, or found duplicates of.
        NotSent when Redis refused them: they stay in the outbox for the scheduler."""
        if not self.messages:
            return
        broker = dramatiq.get_broker()
        by_actor: dict[str, list[tuple[Message, int | None]]] = defaultdict(list)
        for message, delay in self.messages:
            by_actor[message.actor_name].append((message, delay))
        done: list[str] = []
        try:
            for pairs in by_actor.values():
                messages = [m for m, _ in pairs]
                self.sent.update(m.message_id for m in send_messages(broker, messages, [d for _, d in pairs]))
                done.extend(m.message_id for m in messages)
        except Exception as exc:
            _mark_sent(done)
            left = len(self.messages) - len(done)
            _note_failure([m.message_id for m, _ in self.messages if m.message_id not in set(done)], exc)
            what = f"{self.saved} saved" if self.saved else "Saved"
            raise NotSent(f"{what}, but {left} job(s) could not be sent ({classify(exc).message}); they are kept "
                          f"and sent within {duration(get_settings().outbox_resend)} once it takes them") from None
        _mark_sent(done)


@contextmanager
def outbox(saved: str = ""):
    """A transaction whose jobs are sent once it has committed (see the module's docstring)."""
    box = Outbox(saved)
    with database.atomic():
        yield box
    box.send()


def _mark_sent(ids: list[str]) -> None:
    """Mark these messages sent; a failure here is only logged (a send again finds them delivered)."""
    if not ids:
        return
    try:
        for i in range(0, len(ids), RESEND_ROWS):
            (OutboxMessage.update(sent_at=utcnow(), last_error=None)
             .where(OutboxMessage.message_id.in_(ids[i:i + RESEND_ROWS])).execute())
    except Exception as exc:
        log.warning("sent jobs not marked sent; the outbox will find them delivered",
                    extra={"messages": len(ids), "error": str(exc)[:200]})


def _note_failure(ids: list[str], exc: BaseException) -> None:
    try:
        for i in range(0, len(ids), RESEND_ROWS):
            (OutboxMessage.update(attempts=OutboxMessage.attempts + 1, last_error=classify(exc).message[:500])
             .where(OutboxMessage.message_id.in_(ids[i:i + RESEND_ROWS])).execute())
    except Exception:
        pass  # the database went too: the rows are unsent all the same


def _message(row: OutboxMessage) -> Message:
    options = {k: v for k, v in row.options.items() if k not in ("unique_key", "unique_claimed", "eta")}
    return Message(queue_name=row.queue_name, actor_name=row.actor_name, args=tuple(row.args), kwargs=row.kwargs,
                   options=options, message_id=row.message_id)


def _delivered(broker, rows: list[OutboxMessage]) -> set[str]:
    """Messages delivered after all: a JobLog row of theirs exists, or their unique lock is held by
    a queued or running message (theirs, or a duplicate that does the same work)."""
    ids = [r.message_id for r in rows]
    logged = {m for m, in JobLog.select(JobLog.message_id).where(JobLog.message_id.in_(ids)).distinct().tuples()}
    unique = [r for r in rows if r.message_id not in logged and _is_unique(broker, r.actor_name)]
    keys = [unique_key(r.actor_name, list(r.args), r.kwargs) for r in unique]
    held = {r.message_id for r, holder in zip(unique, live_holders(broker, keys)) if holder}
    return logged | held


def _send_rows(broker, rows: list[OutboxMessage]) -> int:
    """Send these messages (of one actor) again, one round trip, then mark them sent; a delayed
    job keeps what is left of its delay."""
    now = utcnow()
    delays = [int((r.send_after - now).total_seconds() * 1000) if r.send_after and r.send_after > now else None
              for r in rows]
    send_messages(broker, [_message(r) for r in rows], [d or None for d in delays])
    _mark_sent([r.message_id for r in rows])
    return len(rows)


def _is_unique(broker, actor_name: str) -> bool:
    try:
        return bool(broker.get_actor(actor_name).options.get("unique"))
    except dramatiq.errors.ActorNotFound:
        return False


def resend_due(older_than: float | None = None) -> tuple[int, int]:
    """Send again the messages still unsent `older_than` seconds (FLEET_OUTBOX_RESEND) after
    their commit, a page at a time; forget sent ones after a day. Returns (sent, found
    delivered). A Redis error ends the pass (what it sent is marked); the next pass goes on."""
    broker = dramatiq.get_broker()
    age = get_settings().outbox_resend if older_than is None else older_than
    cutoff = utcnow() - timedelta(seconds=age)
    OutboxMessage.delete().where(OutboxMessage.sent_at < utcnow() - KEEP_SENT).execute()
    sent = found = 0
    after = ""
    while True:
        rows = list(OutboxMessage.select().where(OutboxMessage.sent_at.is_null() & (OutboxMessage.created_at <= cutoff)
                                                 & (OutboxMessage.message_id > after))
                    .order_by(OutboxMessage.message_id).limit(RESEND_ROWS))
        if not rows:
            break
        after = rows[-1].message_id
        delivered = _delivered(broker, rows)
        _mark_sent(sorted(delivered))
        found += len(delivered)
        by_actor: dict[str, list[OutboxMessage]] = defaultdict(list)
        for row in rows:
            if row.message_id not in delivered:
                by_actor[row.actor_name].append(row)
        for actor_rows in by_actor.values():
            try:
                sent += _send_rows(broker, actor_rows)
            except dramatiq.errors.ActorNotFound:
                log.error("outbox message of an unknown actor left unsent", extra={"actor": actor_rows[0].actor_name})
            except Exception as exc:
                _note_failure([r.message_id for r in actor_rows], exc)
                log.warning("outbox: jobs not sent yet; trying again later", extra={
                    "error_code": classify(exc).code.code, "error": classify(exc).message[:200], "sent": sent})
                return sent, found
    if sent or found:
        log.info("outbox: unsent jobs sent", extra={"sent": sent, "found_delivered": found})
    return sent, found


def unsent_count() -> int:
    return OutboxMessage.select().where(OutboxMessage.sent_at.is_null()).count()


def unsent() -> tuple[int, float | None, str | None]:
    """(messages not sent, seconds since the oldest one's commit, the last send's error)."""
    where = OutboxMessage.sent_at.is_null()
    count = OutboxMessage.select().where(where).count()
    if not count:
        return 0, None, None
    oldest = OutboxMessage.select().where(where).order_by(OutboxMessage.created_at).first()
    error = (OutboxMessage.select(OutboxMessage.last_error).where(where & OutboxMessage.last_error.is_null(False))
             .order_by(OutboxMessage.created_at.desc()).scalar())
    return count, (utcnow() - oldest.created_at).total_seconds(), error
