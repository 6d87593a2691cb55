"""Job statistics: per job class, successes today and the average duration of successful runs."""
from __future__ import annotations

from datetime import timedelta

from flask import request
from flask_admin import BaseView, expose

from actors.jobs import stats_by_class
from admin.access import PanelAccess
from db.job_log_hours import window_start
from db.models import utcnow

WINDOWS = {"1 h": 1, "24 h": 24, "7 d": 24 * 7}
STATUSES = ("success", "failed", "retrying", "deferred", "started", "abandoned")


class JobStatsView(PanelAccess, BaseView):
    @expose("/")
    def index(self):
        window = request.args.get("window", "24 h")
        if window not in WINDOWS:
            window = "24 h"
        rows = stats_by_class(window_start(timedelta(hours=WINDOWS[window]), utcnow()))
        return self.render("job_stats.html", rows=rows, window=window, windows=WINDOWS, statuses=STATUSES)
