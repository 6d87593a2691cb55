"""Batches: the list with progress bars, and a detail page that follows a batch live
(polling /api/batches/<id> every 1.5 s until it ends), with cancel, resume and retry."""
from __future__ import annotations

from pathlib import PurePath

from flask import abort, flash, redirect, request, url_for
from flask_admin import BaseView, expose

import actors.all  # noqa: F401  (every batch kind: resume and retry need the kind's actor)
from actors import batches as ops
from admin.access import PanelAccess, is_admin
from admin.views import confirm
from admin.views.job_links import jobs_url
from core import formats
from core.errors import FleetError
from db.models.batches import Batch, BatchItem

PAGE = 50
POLL_MS = 1_500
STATUS_COLOURS = {"queued": "secondary", "processing": "primary", "completed": "success",
                  "cancelled": "dark", "failed": "danger"}


class BadQuery(ValueError):
    pass


def _number(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise BadQuery(f"{name} must be between {low} and {high}")
    return value


def item_query() -> dict:
    """`items` (a status, or all), `offset` and `limit` of the item list, from the query string."""
    status = request.args.get("items") or None
    if status not in (None, "all", *BatchItem.STATUSES):
        raise BadQuery(f"items must be all or one of {', '.join(BatchItem.STATUSES)}")
    return {"item_status": None if status == "all" else status, "offset": _number("offset", 0, 0, 10**9),
            "limit": _number("limit", PAGE, 1, 500)}


def list_query() -> dict:
    status = request.args.get("status") or None
    if status not in (None, *Batch.STATUSES):
        raise BadQuery(f"status must be one of {', '.join(Batch.STATUSES)}")
    return {"status": status, "offset": _number("offset", 0, 0, 10**9), "limit": PAGE}


def colour(batch: Batch) -> str:
    if batch.status == "completed" and batch.failed:
        return "warning"
    return STATUS_COLOURS.get(batch.status, "secondary")


def _value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_value(v)}" for k, v in value.items())
    return str(value)


def _pairs(data: dict | None, skip: tuple = ()) -> str:
    return ", ".join(f"{k.replace('_', ' ')}: {_value(v)}" for k, v in (data or {}).items() if v is not None and k not in skip)


def _result(item: dict, skip: tuple = ()) -> str:
    return item["error_message"] or "" if item["error_code"] else _pairs(item["result"], skip)


def _provider(rows: list[dict]) -> str:
    """The economy lane's provider batches as operators read them: the open ones, or the last."""
    shown = [r for r in rows if r["status"] != "settled"] or rows[-1:]
    parts = []
    for r in shown:
        counts = r["request_counts"] or {}
        state = (r["provider_status"] or r["status"]).replace("_", " ")
        done = f": {counts.get('completed', 0):,} of {counts.get('total', 0):,} done, {counts.get('failed', 0):,} failed" if counts else ""
        parts.append(f"{r['provider_id'] or 'not sent yet'} {state}{done}")
    return "; ".join(parts) or "–"


def actions(data: dict) -> dict:
    """Which actions apply to the batch as it is now."""
    return {"cancel": not data["finished"] and data["status"] != "cancelled", "resume": not data["finished"],
            "retry": data["failed"] > 0 and data["status"] != "cancelled"}


def for_page(snap: ops.Snapshot) -> dict:
    """The snapshot with what the page shows already formatted (the page's script only copies
    `shown` into place, so the server and the live updates format alike)."""
    data = snap.as_dict()
    data["colour"] = colour(snap.batch)
    downloads = snap.batch.kind == "translation" and (snap.batch.options or {}).get("uploads")
    # an uploaded file is shown by the name it was uploaded with and fetched by its download link:
    # the panel shows no path on the server
    originals = (snap.batch.options or {}).get("original_names") or {} if downloads else {}
    translation = snap.batch.kind == "translation"

    def name(key: str | None) -> str | None:
        if key and originals:
            return originals.get(PurePath(key).name, key)
        if key and translation and PurePath(key).is_absolute():  # files given to the CLI: no server path shown
            return str(PurePath(PurePath(key).parent.name, PurePath(key).name))
        return key

    data["shown"] = {
        "status_label": data["status_label"], "percent": f"{data['percent']:g} %",
        "progress": f"{data['processed']:,} of {data['total']:,}", "succeeded": f"{data['succeeded']:,}",
        "failed": f"{data['failed']:,}", "cancelled": f"{data['cancelled']:,}",
        "current_item": name(data["current_item"]) or "–",
        "rate": f"{data['rate_per_second']:.2f} items/s" if data["rate_per_second"] else "–",
        "eta": formats.duration(data["eta_seconds"], "–"), "cost": ops.usd(data["cost_usd"]), "tokens": f"{data['tokens']:,}",
        "created_at": formats.moment(data["created_at"], empty="–"), "started_at": formats.moment(data["started_at"], empty="–"),
        "finished_at": formats.moment(data["finished_at"], empty="–"), "options": _pairs(data["options"], skip=("uploads", "original_names", "out") if downloads else ()),
        "lane": ops.lane_label(snap.batch), "provider": _provider(data["provider_batches"]),
        "saved": (f"{ops.usd(data['saved_usd'])} saved (the live lane: {ops.usd(2 * data['cost_usd'])})"
                  if data["lane"] == "economy" else "–"),
    }
    data["actions"] = actions(data)
    if translation:  # the JSON too (viewers and read tokens read it): names, never a path on the server
        data["current_item"] = name(data["current_item"])
        data["options"] = {k: v for k, v in (data["options"] or {}).items() if k not in ("uploads", "out")} or None
    data["shown"]["jobs"] = jobs_url("batch", snap.batch.id)
    data["shown"]["retry_label"] = f"Retry {data['failed']:,} failed"
    data["shown"]["retry_warning"] = confirm.warning(confirm.permanent((e["code"], e["count"]) for e in data["errors"]))
    for item in data["items"]:
        if translation:
            item["key"] = name(item["key"])
            item["result"] = {k: v for k, v in item["result"].items() if k != "output"} if item["result"] else None
        item["shown"] = {"jobs": jobs_url("batch", f"{snap.batch.id}/{item['position'] // snap.batch.chunk_size}"),
                         "code_url": url_for("error_codes.index") + f"#{item['error_code']}" if item["error_code"] else None,
                         "name": name(item["key"]), "result": _result(item, skip=("output",) if translation else ()),
                         "cost": ops.usd(item["cost_usd"]) if item["cost_usd"] else "",
                         "finished_at": formats.moment(item["finished_at"]) if item["finished_at"] else "",
                         "download": url_for("translations.download", batch_id=snap.batch.id, position=item["position"])
                         if downloads and item["status"] == "succeeded" else None}
    return data


def summary(batch: Batch) -> dict:
    """A row of the list (and of /api/batches): the snapshot without items and errors."""
    return for_page(ops.Snapshot(batch, provider=False))


class BatchesView(PanelAccess, BaseView):
    @expose("/")
    def index(self):
        try:
            query = list_query()
        except BadQuery as exc:
            flash(str(exc), "error")
            query = {"status": None, "offset": 0, "limit": PAGE}
        rows = [summary(b) for b in ops.list_batches(**query)]
        return self.render("batches.html", rows=rows, query=query, statuses=Batch.STATUSES, page=PAGE,
                           poll_ms=POLL_MS)

    @expose("/<batch_id>/")
    def details(self, batch_id: str):
        try:
            query = item_query()
        except BadQuery as exc:
            flash(str(exc), "error")
            query = {"item_status": None, "offset": 0, "limit": PAGE}
        try:
            snap = ops.snapshot(batch_id, **query)
        except FleetError:
            abort(404)
        return self.render("batch.html", snap=for_page(snap), query=query,
                           can_act=is_admin(), poll_ms=POLL_MS)

    def _act(self, batch_id: str, act) -> object:
        try:
            flash(act(), "success")
        except FleetError as exc:
            flash(str(exc), "error")
            if Batch.get_or_none(Batch.id == batch_id) is None:
                return redirect(self.get_url(".index"))
        return redirect(self.get_url(".details", batch_id=batch_id))

    @expose("/<batch_id>/cancel/", methods=("POST",))
    def cancel(self, batch_id: str):
        return self._act(batch_id, lambda: ops.cancelled_text(ops.cancel(batch_id)))

    @expose("/<batch_id>/resume/", methods=("POST",))
    def resume(self, batch_id: str):
        return self._act(batch_id, lambda: ops.resume(batch_id).text())

    @expose("/<batch_id>/retry/", methods=("POST",))
    def retry(self, batch_id: str):
        try:
            failed = ops.errors(batch_id)
        except FleetError:
            failed = []
        permanent = confirm.permanent((e["code"], e["count"]) for e in failed)
        if permanent and not confirm.confirmed():
            return confirm.ask(self, permanent, question=f"Run the {sum(e['count'] for e in failed)} failed item(s) "
                               "of this batch again?", action=self.get_url(".retry", batch_id=batch_id),
                               back=self.get_url(".details", batch_id=batch_id))
        return self._act(batch_id, lambda: ops.retried_text(ops.retry(batch_id)))
