"""JSON under /api (a session or an API token, see admin.access and admin.bearer): batches
here, jobs and dead letters in admin.api_jobs. docs/api.md documents them all."""
from __future__ import annotations

from flask import Blueprint, jsonify

from actors import batches as ops
from admin.views.batches import BadQuery, for_page, item_query, list_query, summary
from core.errors import FleetError
from db.models.batches import Batch

blueprint = Blueprint("api", __name__, url_prefix="/api")


@blueprint.route("/batches")
def batches():
    """The newest batches (`?status=`, `?offset=`), with their live progress."""
    try:
        query = list_query()
    except BadQuery as exc:
        return jsonify(error=str(exc)), 400
    return jsonify(batches=[summary(b) for b in ops.list_batches(**query)])


@blueprint.route("/batches/<batch_id>")
def batch(batch_id: str):
    """What the batch's page shows: progress, counts, rate, ETA, cost, errors by code, and a
    page of items (`?items=failed`, `?offset=`, `?limit=`)."""
    try:
        snap = ops.snapshot(batch_id, **item_query())
    except BadQuery as exc:
        return jsonify(error=str(exc)), 400
    except FleetError as exc:
        return jsonify(error=str(exc)), 404
    return jsonify(for_page(snap))


@blueprint.route("/batches/<batch_id>/<verb>", methods=["POST"])
def batch_action(batch_id: str, verb: str):
    """`cancel`, `resume` or `retry` a batch, as its page's buttons do."""
    from admin.audit_trail import record

    acts = {"cancel": lambda: ops.cancelled_text(ops.cancel(batch_id)),
            "resume": lambda: ops.resume(batch_id).text(),
            "retry": lambda: ops.retried_text(ops.retry(batch_id))}
    if verb not in acts:
        return jsonify(error=f"unknown action {verb[:40]!r}: cancel, resume or retry"), 404
    try:
        text = acts[verb]()
    except FleetError as exc:
        return jsonify(error=str(exc)), 404 if Batch.get_or_none(Batch.id == batch_id) is None else 409
    record(f"batches.{verb}", f"batch_id={batch_id}")
    return jsonify(result=text)
