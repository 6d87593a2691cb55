"""The confirm step before retrying or requeueing rows whose error code is permanent: such a
row fails again at once, so the action shows "will fail again: ERR_NOT_FOUND ×12" and acts
only when the operator posts again with `confirmed=1`."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from flask import g, request

from core.errors import CODES


def permanent(codes: Iterable[tuple[str | None, int]]) -> Counter:
    """(code, how many) pairs → the counts of the codes that are not retried (permanent)."""
    found: Counter = Counter()
    for code, n in codes:
        if code in CODES and not CODES[code].retryable and n:
            found[code] += n
    return found


def warning(counts: Counter) -> str:
    """`will fail again: ERR_NOT_FOUND ×12, ERR_AUTH ×2`, or "" when nothing is permanent."""
    if not counts:
        return ""
    return "will fail again: " + ", ".join(f"{code} ×{n}" for code, n in counts.most_common())


def confirmed() -> bool:
    return request.form.get("confirmed") == "1"


def ask(view, counts: Counter, *, question: str, action: str, back: str, fields: list[tuple[str, str]] = ()):
    """The confirm page (rendered by the Flask-Admin `view` asking): the warning, what the action will do, and a form that posts the same
    fields (the selected ids, the action) to `action` with `confirmed=1`. Nothing was done yet,
    so the audit log notes nothing for this request."""
    g.audited = True  # admin.audit_trail records every other successful POST
    return view.render("confirm.html", warning=warning(counts), codes=counts.most_common(), question=question,
                           action=action, back=back, fields=list(fields))
