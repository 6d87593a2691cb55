"""The JSON API's jobs and dead letters (docs/api.md): list the job log with filters, retry
failed jobs by filter, list, requeue and delete dead letters. The same rules as the panel:
reads for any operator or token, writes for admins and `operate` tokens (admin.access), each
write in the audit log."""
from __future__ import annotations

from datetime import datetime

import dramatiq
from flask import Blueprint, jsonify, request

from actors.jobs import retry_job
from admin.audit_trail import filter_text, record
from core import dead_letters as dl
from core import formats
from core.errors import FleetError
from db.models.jobs import JobLog

blueprint = Blueprint("api_jobs", __name__, url_prefix="/api")

LIST_LIMIT, MAX_LIST = 50, 500
RETRY_LIMIT, MAX_RETRY = 100, 1000
FILTERS = {"actor": JobLog.job_class, "queue": JobLog.queue, "status": JobLog.status,
           "error_code": JobLog.error_code, "trace_id": JobLog.trace_id, "message_id": JobLog.message_id}
MAX_ID = 2**63 - 1


class BadRequest(ValueError):
    pass


def _params() -> dict:
    """The query string, and for a POST its JSON object on top."""
    params = dict(request.args.items())
    if request.method == "POST" and request.data:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        params.update(body)
    return params


def _whole(params: dict, name: str, default: int, high: int) -> int:
    value = params.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a whole number") from None
    if not 1 <= number <= high:
        raise BadRequest(f"{name} must be between 1 and {high}")
    return number


def _moment(params: dict, name: str) -> datetime | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(value).removesuffix("Z"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO time such as 2026-01-31T02:00:00 (UTC)") from None
    return moment.replace(tzinfo=None) if moment.tzinfo is None else moment.astimezone().replace(tzinfo=None)


def _filtered(params: dict, *, status: str | None = None):
    """The job-log query of the filters given, and the filters as a dict (for the audit log)."""
    query, spec = JobLog.select(), {}
    for name, column in FILTERS.items():
        value = status if name == "status" and status else params.get(name)
        if value not in (None, ""):
            if not isinstance(value, str) or len(value) > 200:
                raise BadRequest(f"{name} must be a text of at most 200 characters")
            query, spec[name] = query.where(column == value), value
    for name, op in (("since", JobLog.created_at.__ge__), ("until", JobLog.created_at.__lt__)):
        moment = _moment(params, name)
        if moment is not None:
            query, spec[name] = query.where(op(moment)), formats.moment(moment)
    return query, spec


def _job(row: JobLog) -> dict:
    return {"id": row.id, "created_at": formats.moment(row.created_at), "finished_at": formats.moment(row.finished_at),
            "actor": row.job_class, "queue": row.queue, "message_id": row.message_id, "status": row.status,
            "attempt": row.attempt, "error_code": row.error_code, "message": row.message,
            "duration_seconds": row.duration_seconds, "trace_id": row.trace_id, "worker": row.worker}


def _answer_bad(view):
    def run(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except BadRequest as exc:
            return jsonify(error=str(exc)), 400
        except FleetError as exc:
            return jsonify(error=str(exc)), 409
    run.__name__ = view.__name__
    run.__doc__ = view.__doc__
    return run


@blueprint.route("/jobs")
@_answer_bad
def jobs():
    """The job log, newest first: filters `actor`, `queue`, `status`, `error_code`, `trace_id`,
    `message_id`, `since`, `until`; `limit` (≤ 500); `before` (an id: the next page)."""
    params = _params()
    query, _ = _filtered(params)
    limit = _whole(params, "limit", LIST_LIMIT, MAX_LIST)
    if params.get("before") not in (None, ""):
        query = query.where(JobLog.id < _whole(params, "before", 1, MAX_ID))
    rows = list(query.order_by(JobLog.id.desc()).limit(limit + 1))
    return jsonify(jobs=[_job(r) for r in rows[:limit]], next_before=rows[limit - 1].id if len(rows) > limit else None)


@blueprint.route("/jobs/retry", methods=["POST"])
@_answer_bad
def retry_jobs():
    """Run failed jobs again (their dead letter, or the same actor and arguments), newest first,
    one a message: the filters of /api/jobs (at least one), `limit` (≤ 1000, default 100)."""
    params = _params()
    query, spec = _filtered(params, status="failed")
    if len(spec) < 2:
        raise BadRequest("give at least one filter (actor, queue, error_code, trace_id, message_id, since, until)")
    limit = _whole(params, "limit", RETRY_LIMIT, MAX_RETRY)
    seen: set[str] = set()
    retried, errors = [], []
    broker = dramatiq.get_broker()
    for job in query.order_by(JobLog.id.desc()).iterator():
        if job.message_id in seen:
            continue
        if len(seen) >= limit:
            break
        seen.add(job.message_id)
        try:
            retried.append({"message_id": job.message_id, "result": retry_job(broker, job)})
        except FleetError as exc:
            errors.append({"message_id": job.message_id, "error": str(exc)})
    record("jobs.retry", filter_text({**spec, "limit": limit}), len(retried))
    return jsonify(matched=len(seen), retried=len(retried), results=retried, errors=errors)


def _letter(letter: dl.DeadLetter) -> dict:
    return {"message_id": letter.message_id, "queue": letter.queue, "actor": letter.actor,
            "error_code": letter.error_code, "error": letter.error, "failed_at": formats.moment(letter.failed_at)}


@blueprint.route("/dead-letters")
@_answer_bad
def dead_letters():
    """The newest dead letters (`limit` ≤ 500), and how many there are in all."""
    params, broker = _params(), dramatiq.get_broker()
    letters = dl.list_dead_letters(broker, limit=_whole(params, "limit", LIST_LIMIT, MAX_LIST))
    return jsonify(total=dl.count_dead_letters(broker), dead_letters=[_letter(d) for d in letters])


def _message_ids(params: dict) -> list[str] | None:
    """`message_ids` (a list), or None for `"all": true`."""
    ids, everything = params.get("message_ids"), params.get("all") is True
    if everything == (ids is not None):
        raise BadRequest('give message_ids (a list) or "all": true')
    if everything:
        return None
    if not isinstance(ids, list) or not ids or len(ids) > MAX_RETRY or not all(isinstance(i, str) for i in ids):
        raise BadRequest(f"message_ids must be a list of 1 to {MAX_RETRY} message ids")
    return [i[:200] for i in ids]


@blueprint.route("/dead-letters/requeue", methods=["POST"])
@_answer_bad
def requeue_dead_letters():
    """Send dead letters again with a fresh retry budget: `message_ids` or `"all": true`."""
    ids = _message_ids(_params())
    result = dl.requeue(dramatiq.get_broker(), ids)
    record("dead_letters.requeue", "all" if ids is None else "ids=" + ",".join(ids), result.requeued)
    return jsonify(requeued=result.requeued, in_flight=result.in_flight, invalid=result.invalid,
                   missing=result.missing)


@blueprint.route("/dead-letters/delete", methods=["POST"])
@_answer_bad
def delete_dead_letters():
    """Delete dead letters for good: `message_ids` or `"all": true`."""
    ids = _message_ids(_params())
    deleted, missing = dl.delete(dramatiq.get_broker(), ids)
    record("dead_letters.delete", "all" if ids is None else "ids=" + ",".join(ids), deleted)
    return jsonify(deleted=deleted, missing=missing)
