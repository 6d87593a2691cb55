"""The panel's pages, one module each, registered on the Flask-Admin instance."""
from __future__ import annotations

from flask_admin import Admin

from admin.views.accounts import AccountsView
from admin.views.alerts import AlertsView, firing_now
from admin.views.audit import AuditView
from admin.views.batches import BatchesView
from admin.views.controls import ControlsView
from admin.views.dead_letters import DeadLettersView
from admin.views.error_codes import ErrorCodesView
from admin.views.health import HealthView
from admin.views.job_stats import JobStatsView
from admin.views.jobs import JobLogView
from admin.views.schedule import ScheduleView
from admin.views.series import EpisodeDataView, SeriesDataView
from admin.views.shown import code_sentence, when
from admin.views.translations import TranslationsView
from admin.views.workouts import FailedPlansView
from core import formats
from db.models.audit import AuditEvent
from db.models.jobs import JobLog
from db.models.workouts import WorkoutPlan


def register_views(admin: Admin) -> None:
    admin.app.context_processor(lambda: {"firing_alerts": firing_now})  # the header of every page
    admin.app.jinja_env.filters.update(when=when, since=formats.since)
    admin.app.jinja_env.globals.update(code_sentence=code_sentence)
    admin.add_view(JobLogView(JobLog, name="Job logs", endpoint="joblogs", url="/admin/jobs"))
    admin.add_view(FailedPlansView(WorkoutPlan, name="Failed plans", endpoint="failed_plans", url="/admin/failed-plans"))
    admin.add_view(SeriesDataView(name="Series", category="Series data", endpoint="series_data", url="/admin/series"))
    admin.add_view(EpisodeDataView(name="Episodes", category="Series data", endpoint="episode_data", url="/admin/episodes"))
    admin.add_view(JobStatsView(name="Job statistics", endpoint="job_stats", url="/admin/job-stats"))
    admin.add_view(BatchesView(name="Batches", endpoint="batches", url="/admin/batches"))
    admin.add_view(TranslationsView(name="New translation", endpoint="translations", url="/admin/translations"))
    admin.add_view(ErrorCodesView(name="Error codes", endpoint="error_codes", url="/admin/error-codes"))
    admin.add_view(DeadLettersView(name="Dead letters", endpoint="dead_letters", url="/admin/dead-letters"))
    admin.add_view(ScheduleView(name="Schedule", endpoint="schedule", url="/admin/schedule"))
    admin.add_view(AlertsView(name="Alerts", endpoint="alerts", url="/admin/alerts"))
    admin.add_view(HealthView(name="Health", endpoint="health_page", url="/admin/health"))
    admin.add_view(AccountsView(name="Accounts", category="Admin", endpoint="accounts", url="/admin/accounts"))
    admin.add_view(AuditView(AuditEvent, name="Audit log", category="Admin", endpoint="audit", url="/admin/audit"))
    admin.add_view(ControlsView(name="Controls", endpoint="controls", url="/admin/controls"))
