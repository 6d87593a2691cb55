"""OpenAI's Files and Batch API in the simulator: `POST /v1/files` (multipart, purpose `batch`),
`GET /v1/files/{id}` and `/content`, `POST /v1/batches`, `GET /v1/batches[/{id}]`,
`POST /v1/batches/{id}/cancel`.

A batch moves validating → in_progress → finalizing → completed over `batch_seconds` (a tenth
validating, a tenth finalizing), judged whenever it is looked at. When it completes, each request
line is answered by the same code as a live `POST /v1/chat/completions` (`answer`), into an output
file, or into an error file. On demand (`/_control`):

- `batch_fail_ids`: custom_ids answered with an error line, once each (then they succeed);
- `batch_next`: `expired` or `failed` for the next batch created (`expired` answers the first
  `batch_expire_after` requests and puts the rest in the error file with `batch_expired`, as the
  provider does when a batch runs out of its window);
- `batch_corrupt`: the next output file gets a line of an unknown custom_id and its last line cut.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from core.simulators.server import json_response

ENDPOINT = "/v1/chat/completions"
MAX_FILE_REQUESTS = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024
FINAL = ("completed", "expired", "failed", "cancelled")
RULES = [
    Rule("/v1/files", endpoint="files_create", methods=["POST"]),
    Rule("/v1/files/<file_id>", endpoint="files_get", methods=["GET"]),
    Rule("/v1/files/<file_id>/content", endpoint="files_content", methods=["GET"]),
    Rule("/v1/batches", endpoint="batches_create", methods=["POST"]),
    Rule("/v1/batches", endpoint="batches_list", methods=["GET"]),
    Rule("/v1/batches/<batch_id>", endpoint="batches_get", methods=["GET"]),
    Rule("/v1/batches/<batch_id>/cancel", endpoint="batches_cancel", methods=["POST"]),
]
CONTROLS = ("batch_seconds", "batch_fail_ids", "batch_next", "batch_expire_after", "batch_corrupt")

# (request body) -> (status code, response body): the live endpoint's answer to one request
Answer = Callable[[dict], tuple[int, dict]]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class BatchAPI:
    """Files and batches of one simulator, behind one lock."""

    def __init__(self, answer: Answer, batch_seconds: float = 6):
        self.answer = answer
        self._lock = threading.Lock()
        self.initial_seconds = batch_seconds
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.files: dict[str, dict] = {}
            self.batches: dict[str, dict] = {}
            self.config = {"batch_seconds": self.initial_seconds, "batch_fail_ids": [], "batch_next": None,
                           "batch_expire_after": 0, "batch_corrupt": False}
            self.submitted: list[list[str]] = []  # the custom_ids of each batch created, in order

    def control(self, changes: dict) -> None:
        found = {k: changes.pop(k) for k in CONTROLS if k in changes}
        if "batch_next" in found and found["batch_next"] not in (None, "expired", "failed"):
            raise ValueError("batch_next must be expired, failed or null")
        if "batch_seconds" in found and (not isinstance(found["batch_seconds"], (int, float)) or found["batch_seconds"] < 0):
            raise ValueError("batch_seconds must be a number >= 0")
        with self._lock:
            self.config.update(found)

    def describe(self) -> dict:
        with self._lock:
            return {**self.config, "created": len(self.batches), "submitted": [list(s) for s in self.submitted],
                    "statuses": {b["id"]: self._advance(b)["status"] for b in self.batches.values()}}

    # -- files ---------------------------------------------------------------------------
    def _file(self, content: bytes, filename: str, purpose: str) -> dict:
        record = {"id": _id("file"), "object": "file", "bytes": len(content), "created_at": int(time.time()),
                  "filename": filename, "purpose": purpose, "status": "processed", "status_details": None}
        self.files[record["id"]] = {**record, "content": content}
        return record

    def on_files_create(self, request: Request) -> Response:
        with request:  # closes the upload's spooled temporary file
            upload = request.files.get("file")
            purpose = request.form.get("purpose")
            if upload is None or not purpose:
                return _error(400, "a file upload needs 'file' and 'purpose'")
            content = upload.read()
        if purpose == "batch":
            problem = _jsonl_problem(content)
            if problem:
                return _error(400, problem)
        with self._lock:
            record = self._file(content, upload.filename or "upload.jsonl", purpose)
        return json_response(record)

    def on_files_get(self, request: Request, file_id: str) -> Response:
        with self._lock:
            found = self.files.get(file_id)
        if found is None:
            return _error(404, f"No such File object: {file_id}")
        return json_response({k: v for k, v in found.items() if k != "content"})

    def on_files_content(self, request: Request, file_id: str) -> Response:
        with self._lock:
            found = self.files.get(file_id)
        if found is None:
            return _error(404, f"No such File object: {file_id}")
        return Response(found["content"], mimetype="application/octet-stream")

    # -- batches ---------------------------------------------------------------------------
    def on_batches_create(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        if body.get("endpoint") != ENDPOINT:
            return _error(400, f"endpoint must be {ENDPOINT} here")
        if body.get("completion_window") != "24h":
            return _error(400, "completion_window must be 24h")
        now = int(time.time())
        with self._lock:
            source = self.files.get(body.get("input_file_id"))
            if source is None or source["purpose"] != "batch":
                return _error(400, f"No batch input file {body.get('input_file_id')!r}")
            lines = [json.loads(line) for line in source["content"].decode().splitlines() if line.strip()]
            batch = {"id": _id("batch"), "object": "batch", "endpoint": ENDPOINT, "errors": None,
                     "input_file_id": source["id"], "completion_window": "24h", "status": "validating",
                     "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                     "expires_at": now + 24 * 3600, "finalizing_at": None, "completed_at": None, "failed_at": None,
                     "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                     "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                     "metadata": body.get("metadata") or None, "model": None, "usage": None}
            self.batches[batch["id"]] = {**batch, "_lines": lines, "_started": time.monotonic(),
                                         "_outcome": self.config["batch_next"],
                                         "_seconds": float(self.config["batch_seconds"])}
            self.config["batch_next"] = None
            self.submitted.append([line.get("custom_id") for line in lines])
        return json_response(batch)

    def on_batches_get(self, request: Request, batch_id: str) -> Response:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return _error(404, f"No such Batch object: {batch_id}")
            return json_response(self._advance(batch))

    def on_batches_list(self, request: Request) -> Response:
        limit = min(100, max(1, int(request.args.get("limit", 20))))
        after = request.args.get("after")
        with self._lock:
            newest = list(reversed(list(self.batches.values())))
            if after:
                ids = [b["id"] for b in newest]
                newest = newest[ids.index(after) + 1:] if after in ids else []
            page = [self._advance(b) for b in newest[:limit]]
            more = len(newest) > limit
        return json_response({"object": "list", "data": page, "has_more": more,
                              "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None})

    def on_batches_cancel(self, request: Request, batch_id: str) -> Response:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return _error(404, f"No such Batch object: {batch_id}")
            self._advance(batch)
            if batch["status"] in FINAL:
                return _error(409, f"Cannot cancel a batch with status '{batch['status']}'.")
            now = int(time.time())
            batch.update(status="cancelled", cancelling_at=now, cancelled_at=now)
            return json_response(_public(batch))

    # -- time passing --------------------------------------------------------------------------
    def _advance(self, batch: dict) -> dict:
        """The batch as it is now: its status from the time passed, finished the first time it is due."""
        if batch["status"] in FINAL:
            return _public(batch)
        seconds = batch["_seconds"]
        passed = time.monotonic() - batch["_started"]
        now = int(time.time())
        if passed >= 0.1 * seconds and batch["in_progress_at"] is None:
            if batch["_outcome"] == "failed":
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": [
                    {"code": "invalid_request", "message": "Simulated failure of the whole batch.", "param": None,
                     "line": None}]})
                return _public(batch)
            batch.update(status="in_progress", in_progress_at=now)
        if batch["status"] == "in_progress":
            share = min(1.0, passed / max(seconds * 0.8, 1e-9))
            batch["request_counts"]["completed"] = int(share * batch["request_counts"]["total"])
        if passed >= 0.9 * seconds and batch["finalizing_at"] is None:
            batch.update(status="finalizing", finalizing_at=now)
        if passed >= seconds:
            self._finish(batch, now)
        return _public(batch)

    def _finish(self, batch: dict, now: int) -> None:
        expired = batch["_outcome"] == "expired"
        answered = self.config["batch_expire_after"] if expired else len(batch["_lines"])
        output, errors = [], []
        fail_ids = self.config["batch_fail_ids"]
        for n, line in enumerate(batch["_lines"]):
            custom_id = line.get("custom_id")
            if n >= answered:
                errors.append(_error_line(custom_id, "batch_expired", "This request could not be executed before the "
                                                                       "completion window expired."))
            elif custom_id in fail_ids:
                fail_ids.remove(custom_id)
                errors.append(_error_line(custom_id, "server_error", "Simulated failure of this request."))
            else:
                status, body = self.answer(line.get("body") or {})
                row = {"id": _id("batch_req"), "custom_id": custom_id, "response": {
                    "status_code": status, "request_id": uuid.uuid4().hex, "body": body}, "error": None}
                (output if status == 200 else errors).append(row)
        text = "".join(json.dumps(row) + "\n" for row in output)
        if self.config["batch_corrupt"] and output:
            self.config["batch_corrupt"] = False
            stray = {**output[0], "custom_id": "no-such-item"}
            text = json.dumps(stray) + "\n" + text.rstrip("\n")[: -20]
        if output:
            batch["output_file_id"] = self._file(text.encode(), f"{batch['id']}_output.jsonl", "batch_output")["id"]
        if errors:
            content = "".join(json.dumps(row) + "\n" for row in errors).encode()
            batch["error_file_id"] = self._file(content, f"{batch['id']}_error.jsonl", "batch_output")["id"]
        batch["request_counts"].update(completed=len(output), failed=len(errors))
        if expired:
            batch.update(status="expired", expired_at=now)
        else:
            batch.update(status="completed", completed_at=now)


def _error_line(custom_id, code: str, message: str) -> dict:
    return {"id": _id("batch_req"), "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}


def _public(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _jsonl_problem(content: bytes) -> str | None:
    """What OpenAI's validation would reject in a batch input file, or None."""
    try:
        lines = [line for line in content.decode().splitlines() if line.strip()]
    except UnicodeDecodeError:
        return "The file is not UTF-8."
    if len(lines) > MAX_FILE_REQUESTS or len(content) > MAX_FILE_BYTES:
        return f"A batch input file holds at most {MAX_FILE_REQUESTS:,} requests and {MAX_FILE_BYTES:,} bytes."
    seen = set()
    for n, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except ValueError:
            return f"Line {n} is not JSON."
        if not isinstance(row, dict) or row.get("method") != "POST" or row.get("url") != ENDPOINT:
            return f"Line {n}: each request needs method POST and url {ENDPOINT}."
        if not isinstance(row.get("custom_id"), str) or row["custom_id"] in seen:
            return f"Line {n}: custom_id must be a string unique in the file."
        seen.add(row["custom_id"])
    return None


def _error(status: int, message: str) -> Response:
    return json_response({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                    "code": None}}, status)
