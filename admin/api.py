"""JSON under /api (login required, see admin.access)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from actors.workouts import get_record

blueprint = Blueprint("api", __name__, url_prefix="/api")


@blueprint.route("/bulk/<bulk_id>")
def bulk(bulk_id: str):
    record = get_record(bulk_id)
    if record is None:
        return jsonify(error=f"no bulk job {bulk_id}"), 404
    return jsonify(record)
