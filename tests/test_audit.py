"""The audit log: the one call every action makes, its retention, and its rows per source."""
from datetime import timedelta

import pytest

from actors import audit
from actors.jobs import cleanup_job_logs
from core.trace import traced
from db.models import utcnow
from db.models.audit import AuditEvent


def test_record_keeps_every_field_and_the_current_trace_id(db):
    with traced() as trace:
        audit.record("jobs.retry", who="ops@example.com", role="admin", target="status=failed queue=series", rows=3,
                     source="panel", address="203.0.113.9")
    event = AuditEvent.get()
    assert (event.action, event.who, event.role, event.target, event.rows, event.source, event.address) == (
        "jobs.retry", "ops@example.com", "admin", "status=failed queue=series", 3, "panel", "203.0.113.9")
    assert event.trace_id == trace
    assert event.created_at <= utcnow()


def test_an_unknown_source_is_refused(db):
    with pytest.raises(ValueError, match="panel, cli, api"):
        audit.record("jobs.retry", who="x", role="admin", source="web")
    assert AuditEvent.select().count() == 0


def test_filters_match_an_action_by_its_domain(db):
    audit.record("jobs.retry", who="a@x.io", role="admin", rows=1)
    audit.record("jobs.requeue", who="b@x.io", role="admin", source="api")
    audit.record("jobsx.other", who="a@x.io", role="admin", source="cli")
    assert [e.action for e in audit.matching(audit.AuditFilter(action="jobs"))] == ["jobs.requeue", "jobs.retry"]
    assert [e.action for e in audit.matching(audit.AuditFilter(who="a@x.io", source="cli"))] == ["jobsx.other"]
    assert audit.actions() == ["jobs.requeue", "jobs.retry", "jobsx.other"]


def test_the_cleanup_job_prunes_events_past_their_retention(db):
    audit.record("old", who="a", role="cli", source="cli")
    audit.record("new", who="a", role="cli", source="cli")
    AuditEvent.update(created_at=utcnow() - timedelta(days=400)).where(AuditEvent.action == "old").execute()
    cleanup_job_logs.fn()
    assert [e.action for e in AuditEvent.select()] == ["new"]
