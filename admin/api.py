"""JSON under /api (login required, see admin.access)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from actors import batches as ops
from admin.views.batches import BadQuery, for_page, item_query, list_query, summary
from core.errors import FleetError

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
